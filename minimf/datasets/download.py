"""Downloads that are correct, resumable and never leave a broken file behind.

``fetch(remote, folder)`` returns the path of a verified copy of ``remote`` (a ``RemoteFile``) in
``folder``, downloading it if needed. The steps, and the files they use next to the target ``NAME``::

    NAME.lock   taken first (an OS lock: released by the OS if the process dies), so two processes never
                write the same NAME.part; the second one waits, then finds NAME verified and done
    NAME.part   the bytes so far. A new attempt asks the server for the rest (HTTP Range: bytes=K-);
                a server that ignores the range sends everything and the file starts over
    NAME        appears only by renaming a complete NAME.part whose size and SHA-256 match the
                values in catalog.py: a rename is atomic, so NAME is either absent or verified

A failed transfer (the connection drops, stalls for ``TIMEOUT`` seconds, or ends early) is retried
from where it stopped, up to ``ATTEMPTS`` times per address, with a growing, jittered pause (so a class
of laptops that failed together does not retry in lockstep). A missing file (HTTP 404), a refused
connection or a checksum mismatch moves on to the next address. A file that fails its checksum is
deleted, with a message that says so. When every address fails, ``DownloadError`` says why for each,
where to put the file by hand and the size and SHA-256 it must have.

Files placed by hand (``RemoteFile.by_hand``: no verified SHA-256 is known; PathMNIST): minimf
never downloads them, because a download it cannot verify could be any file. A missing one raises
``DownloadError`` saying where to get it (``page``) and where to put it; a present one is checked
against its size and SHA-256, or its authors' MD5 where no SHA-256 is known, and a wrong one is
reported and left alone (it is the user's file, not a download of minimf's to delete).
"""
import http.client
import os
import random
import socket
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from minimf import __version__
from minimf.datasets.common import DatasetError, md5_file, sha256_file
from minimf.progress import progress_bar

CHUNK = 1 << 16       # bytes per read
TIMEOUT = 30.0        # seconds without a byte before a transfer counts as stalled
ATTEMPTS = 3          # tries per address for transfers that stop part way
RETRY_WAIT = 2.0      # seconds before the second try; doubled for each further try, plus up to 50% jitter
LOCK_POLL = 0.2       # seconds between checks while another process holds the lock


class DownloadError(DatasetError):
    """No address gave a verified copy of a file (or downloading was not allowed)."""


class _NextMirror(Exception):
    """This address will not give the file: try the next one."""


class _Interrupted(Exception):
    """The transfer stopped part way: try the same address again, resuming."""


def say(message):
    """Progress and warnings go to stderr, so stdout stays clean for results."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# Where files live
# ---------------------------------------------------------------------------------------------------

def data_home(data_dir=None) -> Path:
    """The cache root: ``data_dir`` if given, else ``$MINIMF_DATA``, else a per-user cache folder.

    The per-user folder is ``$XDG_CACHE_HOME/minimf`` or ``~/.cache/minimf`` (on Windows
    ``%LOCALAPPDATA%/minimf``). Each data set has a subfolder named after it: ``<root>/cifar10/...``.
    """
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get("MINIMF_DATA"):
        return Path(os.environ["MINIMF_DATA"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "minimf"
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return Path(os.environ["LOCALAPPDATA"]) / "minimf"
    return Path.home() / ".cache" / "minimf"


def check_file(path, remote) -> str | None:
    """None if the file at ``path`` has ``remote``'s size and SHA-256 (where no SHA-256 is known: the
    MD5 its authors publish); else what is wrong, in words."""
    size = Path(path).stat().st_size
    if size != remote.size:
        return f"size {size:,} bytes, expected {remote.size:,}"
    if not remote.sha256:
        if not remote.md5:
            return "no checksum is known for this file, so it cannot be verified"
        actual = md5_file(path)
        if actual != remote.md5:
            return f"checksum mismatch: expected md5 {remote.md5} (as its authors publish it), actual md5 {actual}"
        return None
    actual = sha256_file(path)
    if actual != remote.sha256:
        return f"checksum mismatch: expected sha256 {remote.sha256}, actual sha256 {actual}"
    return None


# (resolved path, mtime_ns, size) of files verified by this process: a 170 MB archive is hashed once
_VERIFIED = set()


def _verified_key(path):
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _fault_of(path, remote):
    """None if the existing file ``path`` holds ``remote`` (checked once per path, modification time
    and size: ``_VERIFIED``), else what is wrong with it, in words (``check_file``)."""
    key = _verified_key(path)
    if key in _VERIFIED:
        return None
    fault = check_file(path, remote)
    if fault is None:
        _VERIFIED.add(key)
    return fault


def _is_verified(path, remote, delete_bad=True):
    """True if ``path`` holds ``remote``. With ``delete_bad`` a file with the wrong bytes is deleted,
    saying so; only a holder of the lock may do that (another process may be renaming a good copy)."""
    if not path.exists():
        return False
    fault = _fault_of(path, remote)
    if fault is None:
        return True
    if delete_bad:
        path.unlink(missing_ok=True)
        say(f"{path}: {fault}; deleted the bad file")
    return False


# ---------------------------------------------------------------------------------------------------
# The lock
# ---------------------------------------------------------------------------------------------------

@contextmanager
def file_lock(path, on_wait=None):
    """Hold an exclusive OS lock on the file at ``path`` (created if needed) inside the ``with`` block.

    ``fcntl.flock`` on Linux and macOS, ``msvcrt.locking`` on Windows. The OS releases the lock when
    the process ends, however it ends, so there are no stale locks to clean up. The lock file itself
    stays (deleting it would let a waiting process lock a file that no longer has a name). While
    another process holds the lock, ``on_wait()`` is called once and the lock is polled.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # read-write for all, minus the umask
    try:
        waited = False
        while not _try_lock(fd):
            if not waited and on_wait is not None:
                on_wait()
            waited = True
            time.sleep(LOCK_POLL)
        try:
            yield
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


if os.name == "nt":  # pragma: no cover - not tested here (Linux)
    import msvcrt

    def _try_lock(fd):
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd):
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(fd):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd):
        fcntl.flock(fd, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------------
# Fetching one file
# ---------------------------------------------------------------------------------------------------

def fetch(remote, folder, *, label=None, download=True, progress=True) -> Path:
    """Return the path of a verified copy of ``remote`` in ``folder``, downloading it if needed.

    ``label`` names the data set in messages (e.g. "cifar10"). With ``download=False`` a missing file
    raises ``DownloadError`` at once, with the instructions to fetch it by hand.
    """
    folder = Path(folder)
    path = folder / remote.name
    label = label or remote.name
    if remote.by_hand:
        return _placed_by_hand(remote, path, label)
    if _is_verified(path, remote, delete_bad=False):
        return path
    if not download and not path.exists():
        raise _missing(remote, path, label)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / f"{remote.name}.lock"
    with file_lock(lock, on_wait=lambda: say(f"{label}: waiting for another process that is downloading "
                                              f"{remote.name} (lock {lock})")):
        if _is_verified(path, remote):  # another process finished it; or a bad file, now deleted
            return path
        if not download:
            raise _missing(remote, path, label)
        return _download(remote, path, label, progress)


def _placed_by_hand(remote, path, label):
    """``path`` if it holds ``remote`` (placed there by hand); else ``DownloadError`` with what to do.
    Nothing is downloaded and nothing is deleted."""
    if not path.exists():
        raise _missing(remote, path, label)
    fault = _fault_of(path, remote)
    if fault is None:
        return path
    raise DownloadError(f"{path}: {fault}; the file was left as it is.\n" + manual_help(remote, path))


def _download(remote, path, label, progress):
    """Try each address in turn (see the module docstring); return ``path`` once verified."""
    part = path.with_name(path.name + ".part")
    failures = []
    for url in remote.urls:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                _transfer(url, part, remote, label, progress)
            except _Interrupted as err:
                failures.append(f"{url}: {err}")
                if attempt < ATTEMPTS:
                    pause = RETRY_WAIT * 2 ** (attempt - 1) * (1 + random.random() / 2)
                    say(f"{label}: {err}; trying again in {pause:.1f} s (attempt {attempt + 1} of {ATTEMPTS})")
                    time.sleep(pause)
                continue
            except _NextMirror as err:
                failures.append(f"{url}: {err}")
                break
            fault = check_file(part, remote)
            if fault is None:
                os.replace(part, path)  # atomic: path is absent or complete and verified
                _VERIFIED.add(_verified_key(path))
                return path
            part.unlink(missing_ok=True)
            say(f"{label}: {remote.name} from {url}: {fault}; deleted the bad file")
            failures.append(f"{url}: {fault} (deleted)")
            break
        if url != remote.urls[-1]:
            say(f"{label}: trying the next address for {remote.name}")
    raise DownloadError(f"{label}: could not download {remote.name}:\n"
                        + "".join(f"  {line}\n" for line in failures) + manual_help(remote, path))


def _missing(remote, path, label):
    if remote.by_hand:
        return DownloadError(f"{path}: missing file ({label} is placed by hand: minimf does not download it, "
                             f"since no verified SHA-256 of it is known).\n" + manual_help(remote, path))
    return DownloadError(f"{path}: missing file ({label} is not downloaded).\n" + manual_help(remote, path))


def manual_help(remote, path) -> str:
    """How to put ``remote`` at ``path`` by hand, and how minimf will check it."""
    addresses = "".join(f"  {url}\n" for url in (remote.urls or (remote.page,)) if url)
    checksum = (f"sha256 {remote.sha256}" if remote.sha256 else
                f"md5 {remote.md5} (its authors' checksum; no SHA-256 is published)")
    return (f"To install it by hand, download it (on any machine with a network) from\n{addresses}"
            f"and put it at\n  {path}\n"
            f"It must be {remote.size:,} bytes with {checksum}; minimf checks both before using it.")


def _transfer(url, part, remote, label, progress):
    """Download ``url`` into ``part``, resuming from the bytes already there. Returns when ``part``
    holds ``remote.size`` bytes; raises ``_Interrupted`` or ``_NextMirror`` otherwise."""
    start = part.stat().st_size if part.exists() else 0
    if start > remote.size:  # too long to be a prefix of the file: start over
        part.unlink()
        start = 0
    if start == remote.size:  # complete already (e.g. a crash between download and rename)
        return
    response = _open(url, start, part)
    with response:
        if start and response.status != 206:  # the server ignored the range: it sends everything
            say(f"{label}: {url} does not resume downloads; starting {remote.name} over")
            start = 0
        elif start and not _range_matches(response, start):
            part.unlink()
            raise _Interrupted(f"the server resumed at the wrong offset "
                               f"({response.headers.get('Content-Range')!r}); starting over")
        if start:
            say(f"{label}: resuming {remote.name} at byte {start:,} of {remote.size:,}")
        else:
            say(f"{label}: downloading {remote.name} ({remote.size / 1e6:.1f} MB) from {url}")
        _copy(response, part, start, remote, progress)
    size = part.stat().st_size
    if size < remote.size:
        raise _Interrupted(f"the transfer ended early, at {size:,} of {remote.size:,} bytes")


def _open(url, start, part):
    """Open ``url`` asking for bytes ``start``.. (all of it for 0); map errors to what to do next."""
    headers = {"User-Agent": f"minimf/{__version__} (+python urllib)"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=TIMEOUT)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416:  # "range not satisfiable": what we hold is not a prefix of this file
            part.unlink(missing_ok=True)
            raise _Interrupted("the server refused to resume (HTTP 416); starting over") from None
        if err.code in (408, 429) or err.code >= 500:  # busy or temporarily broken: worth another try
            raise _Interrupted(f"HTTP {err.code} {err.reason}") from None
        raise _NextMirror(f"HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        if isinstance(err.reason, (TimeoutError, socket.timeout)):
            raise _Interrupted(f"no answer within {TIMEOUT:g} s") from None
        raise _NextMirror(f"cannot connect ({err.reason})") from None
    except (TimeoutError, socket.timeout, ConnectionError, http.client.HTTPException) as err:
        raise _Interrupted(f"connection failed ({err!r})") from None


def _range_matches(response, start):
    """True if a 206 answer's Content-Range ("bytes START-END/TOTAL") starts at ``start``."""
    value = response.headers.get("Content-Range", "")
    return value.startswith(f"bytes {start}-")


def _copy(response, part, start, remote, progress):
    """Stream ``response`` into ``part`` (appending after ``start`` bytes, or from scratch), flushed to
    disk, with a progress bar. A server that sends more than ``remote.size`` bytes is a wrong file.
    Network faults become ``_Interrupted``; disk faults (a full disk) stay the ``OSError`` they are."""
    written = start
    with open(part, "ab" if start else "wb") as f, progress_bar(
            total=remote.size, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
            desc=remote.name, enabled=progress, leave=False) as bar:
        try:
            while True:
                chunk = _read_chunk(response, written, remote.size)
                if not chunk:
                    break
                if written + len(chunk) > remote.size:
                    raise _NextMirror(f"sends more than the expected {remote.size:,} bytes (deleted)")
                f.write(chunk)
                written += len(chunk)
                bar.update(len(chunk))
        except _NextMirror:
            f.close()
            part.unlink(missing_ok=True)
            raise
        finally:
            if not f.closed:
                f.flush()
                os.fsync(f.fileno())  # what is in .part is on disk: a crash loses at most the last chunk


def _read_chunk(response, written, size):
    """The next chunk of ``response`` (b"" at the end); a stall or a broken connection is ``_Interrupted``."""
    try:
        return response.read1(CHUNK)  # what has arrived, up to CHUNK: a stall keeps every byte before it
    except (TimeoutError, socket.timeout) as err:
        raise _Interrupted(f"the transfer stalled for {TIMEOUT:g} s at byte {written:,} of {size:,}") from err
    except (ConnectionError, http.client.HTTPException, OSError) as err:
        raise _Interrupted(f"the connection broke at byte {written:,} of {size:,} ({err!r})") from err
