"""The data command line: see what is cached, download ahead of time.

    python -m minimf.datasets list                          # each file: size, verified / missing / partial
    python -m minimf.datasets download fashion-mnist cifar10
    python -m minimf.datasets download all --data-dir /srv/minimf-data
    python -m minimf.datasets download pathmnist     # placed by hand: says where to get it and put it

The cache root is ``--data-dir``, else ``$MINIMF_DATA``, else a per-user cache (``~/.cache/minimf``).
``download`` exits with status 1 if any data set could not be fetched, after trying all of them.
PathMNIST is never downloaded (no verified SHA-256 of it is known): ``download pathmnist`` checks a
copy placed by hand, or says where to get one and where to put it; ``download all`` passes over it
unless it is there.
"""
import argparse
import sys

from minimf.datasets import DATASETS, DatasetError, PACKAGED_MNIST_DIR, data_home, fetch
from minimf.datasets.download import check_file
from minimf.datasets.mnist import mnist_pairs, read_mnist_pair
from minimf.datasets.tabular import sklearn_version


def build_parser():
    p = argparse.ArgumentParser(prog="python -m minimf.datasets",
                                description="List and download minimf's data sets.")
    sub = p.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="what is cached, with sizes, verified or not")
    fetching = sub.add_parser("download", help="download data sets now (each file is verified)")
    fetching.add_argument("names", nargs="+", metavar="NAME", choices=[*DATASETS, "all"],
                          help=f"{', '.join(DATASETS)}, or all")
    fetching.add_argument("--no-progress", action="store_true", help="no progress bar")
    for command in (listing, fetching):
        command.add_argument("--data-dir", default=None, metavar="DIR",
                             help="cache root (default: $MINIMF_DATA, else ~/.cache/minimf)")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    root = data_home(args.data_dir)
    if args.command == "list":
        print_listing(root)
        return 0
    if "all" in args.names:   # everything minimf downloads itself; files placed by hand only where they are
        names = [name for name in DATASETS if not _by_hand(name) or _present(name, root)]
        for name in sorted(set(DATASETS) - set(names)):
            print(f"{name}: placed by hand, not downloaded (python -m minimf.datasets download {name} says how)")
    else:
        names = list(dict.fromkeys(args.names))
    failed = [name for name in names if not download(name, root, progress=not args.no_progress)]
    if failed:
        print(f"not downloaded: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def download(name, root, progress=True) -> bool:
    """Fetch and verify every file of ``name``; print one line of result. False on failure."""
    info = DATASETS[name]
    if info.kind == "tabular":
        version = sklearn_version()
        if version is None:
            print(f'{name}: needs scikit-learn: pip install "minimf[tabular]"', file=sys.stderr)
            return False
        print(f"{name}: bundled with scikit-learn {version}; nothing to download")
        return True
    if not info.files:
        print(f"{name}: packaged with minimf in {PACKAGED_MNIST_DIR}; nothing to download")
        return True
    ok = True
    for remote in info.files:  # all of them, so one run reports every missing file
        try:
            fetch(remote, root / name, label=name, progress=progress)
        except DatasetError as err:
            print(f"error: {err}", file=sys.stderr)
            ok = False
    if ok:
        print(f"{name}: {len(info.files)} file(s) verified in {root / name}")
    return ok


def _by_hand(name):
    """True for a data set whose files minimf never downloads (no verified SHA-256: PathMNIST)."""
    files = DATASETS[name].files
    return bool(files) and all(remote.by_hand for remote in files)


def _present(name, root):
    return all((root / name / remote.name).exists() for remote in DATASETS[name].files)


def print_listing(root):
    """One block per data set: each file with its size and state."""
    print(f"cache: {root}  (set MINIMF_DATA to use another folder)")
    width = max(map(len, DATASETS)) + 2
    for name, info in DATASETS.items():
        if info.kind == "tabular":
            version = sklearn_version()
            state = (f"bundled with scikit-learn {version}" if version
                     else 'needs scikit-learn: pip install "minimf[tabular]"')
            print(f"{name:<{width}}{state}")
            continue
        if not info.files:
            print(f"{name:<{width}}packaged with minimf: {_packaged_mnist_state()}")
            continue
        for i, remote in enumerate(info.files):
            size, state = file_state(root / name, remote)
            print(f"{name if i == 0 else '':<{width}}{remote.name:<28}{size:>10}  {state}")


def file_state(folder, remote):
    """(size text, state text) of ``remote``'s copy in ``folder``: verified, wrong, partial or missing."""
    path = folder / remote.name
    part = folder / f"{remote.name}.part"
    if path.exists():
        fault = check_file(path, remote)
        return _mb(path.stat().st_size), "verified" if fault is None else f"NOT verified: {fault}"
    if part.exists():
        return "", (f"missing; {_mb(part.stat().st_size)} of {_mb(remote.size)} in {part.name} "
                    f"(a download resumes there)")
    if remote.by_hand:
        return "", f"missing ({_mb(remote.size)}; placed by hand, from {remote.page})"
    return "", f"missing ({_mb(remote.size)} to download)"


def _packaged_mnist_state():
    try:
        for images_path, labels_path in mnist_pairs(PACKAGED_MNIST_DIR).values():
            read_mnist_pair(images_path, labels_path)
    except DatasetError as err:
        return f"NOT verified: {err}"
    return "4 files, verified"


def _mb(size):
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


if __name__ == "__main__":
    sys.exit(main())
