"""Documentation that cannot drift: README.md, docs/*.md and benchmarks/README.md against the code.

    (a) every relative link resolves: the file, and the #anchor of a markdown heading
    (b) every repository path named in `backticks` exists (a glob matches, a ``::test`` is defined),
        and every dotted name ``minimf.x.y`` imports
    (c) every command in a code block parses with the real parser: ``python -m minimf.X`` with the
        ``build_parser()`` of minimf/X.py (a package's __main__.py: train, experiments, datasets, ...)
        and ``python benchmarks/X.py`` with the script's (``parse_args`` only, nothing runs); a
        ``python -m minimf.X`` without a parser must still name a module
    (d) the README's package map names every module under minimf/, and no module that is not there
    (e) the README's set-up gives CI's commands, its Python example runs, and docs/cli.md lists
        every option of the command line with the default the code has

Each check has a case that must fail (a broken link, a missing path, a wrong option, a module left
out of the map). Nothing here trains for more than a few seconds.
"""
import argparse
import ast
import dataclasses
import functools
import importlib
import importlib.util
import re
import shlex
import sys
import unicodedata
from pathlib import Path

import pytest

from minimf.training.config import DEFAULT_CHANNELS, DEFAULT_HIDDEN, DEFAULT_MIXER, RunConfig

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minimf"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
REPO_TOP = ("minimf", "tests", "benchmarks", "docs", "lessons", ".ci")
REPO_FILES = ("README.md", "setup.cfg", "pyproject.toml")


def doc_id(path):
    return str(path.relative_to(ROOT))


# ---------------------------------------------------------------- markdown: code blocks, prose, headings

FENCE = re.compile(r"^\s*(```|~~~)")


def split_markdown(text):
    """(prose, blocks): the text outside fenced code blocks (code lines blanked, so line numbers
    stay), and each fenced block as (first line number, its lines)."""
    prose, blocks, block, start = [], [], None, 0
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            if block is None:
                block, start = [], number + 1
            else:
                blocks.append((start, block))
                block = None
            prose.append("")
        elif block is not None:
            block.append(line)
            prose.append("")
        else:
            prose.append(line)
    return "\n".join(prose), blocks


def slug(heading):
    """GitHub's anchor of a heading: its text lower-cased, punctuation and symbols dropped (but
    '-' and '_'), spaces made hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)        # a link: its text
    text = text.replace("`", "").replace("**", "").replace("*", "").strip().lower()
    kept = "".join(c for c in text if c in "-_ " or not unicodedata.category(c).startswith(("P", "S")))
    return kept.replace(" ", "-")


def anchors(text):
    """Every heading's anchor, with GitHub's -1, -2 ... for repeated headings."""
    found, seen = set(), {}
    prose, _ = split_markdown(text)
    for line in prose.splitlines():
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            found.add(base if n == 0 else f"{base}-{n}")
            seen[base] = n + 1
    return found


def without_inline_code(prose):
    return re.sub(r"`[^`\n]*`", "", prose)


# ---------------------------------------------------------------- (a) links

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def broken_links(path, text):
    """'target: why' for every relative link in ``text`` (the file at ``path``) that does not resolve."""
    prose, _ = split_markdown(text)
    broken = []
    for target in LINK.findall(without_inline_code(prose)):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):          # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        if not file_part:
            if anchor not in anchors(text):
                broken.append(f"{target}: no heading with the anchor #{anchor} in {path.name}")
            continue
        linked = (path.parent / file_part).resolve()
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor:
            if linked.suffix != ".md":
                broken.append(f"{target}: an anchor into a file that is not markdown")
            elif anchor not in anchors(linked.read_text(encoding="utf-8")):
                broken.append(f"{target}: no heading with the anchor #{anchor} in {linked.name}")
    return broken


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_every_relative_link_resolves(path):
    assert broken_links(path, path.read_text(encoding="utf-8")) == []


def test_a_broken_link_is_caught(tmp_path):
    (tmp_path / "other.md").write_text("# A page\n\n## Its section\n", encoding="utf-8")
    page = tmp_path / "page.md"
    text = ("# Title\n\n## The command line, at a glance\n\n"
            "[good](other.md) [good](other.md#its-section) [good](#the-command-line-at-a-glance) "
            "[web](https://example.org/x)\n"
            "[bad](missing.md) [bad](other.md#no-such-section) [bad](#nowhere)\n"
            "`[not a link](missing-in-code.md)`\n\n```\n[not a link](missing-in-a-block.md)\n```\n")
    assert broken_links(page, text) == ["missing.md: no such file",
                                        "other.md#no-such-section: no heading with the anchor #no-such-section in other.md",
                                        "#nowhere: no heading with the anchor #nowhere in page.md"]


def test_anchors_follow_githubs_rules():
    text = "# Figures 1-3: memory\n## The `--resume` option\n## Again\n## Again\n## MF − BP, ±0.25 (×2)\n"
    assert anchors(text) == {"figures-1-3-memory", "the---resume-option", "again", "again-1", "mf--bp-025-2"}


# ---------------------------------------------------------------- (b) paths and dotted names

CODE_SPAN = re.compile(r"`([^`\n]+)`")
PATH_TOKEN = re.compile(r"^(?:%s)/[\w./*\[\]-]*(?:::\w+)?$" % "|".join(re.escape(t) for t in REPO_TOP))
DOTTED = re.compile(r"^minimf(?:\.\w+)+$")


def named_paths(text):
    """Every repository path and dotted minimf name in the inline code of ``text``'s prose."""
    prose, _ = split_markdown(text)
    names = []
    for span in CODE_SPAN.findall(prose):
        for token in span.split():
            token = token.strip(",;:()'\"").removesuffix("()")
            if "..." in token:                        # a placeholder: benchmarks/..., minimf.train ...
                continue
            if PATH_TOKEN.match(token) or token in REPO_FILES or DOTTED.match(token):
                names.append(token)
    return names


def resolves(name):
    """Whether a dotted name imports: the longest importable module, then attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            if importlib.util.find_spec(module_name) is None:
                continue
        except ModuleNotFoundError:
            continue
        value = importlib.import_module(module_name)
        for attr in parts[cut:]:
            if not hasattr(value, attr):
                return False
            value = getattr(value, attr)
        return True
    return False


def missing_paths(text, root=ROOT):
    """'name: why' for every named path that does not exist, glob that matches nothing, test that
    is not defined in its file, and dotted name that does not import."""
    missing = []
    for name in dict.fromkeys(named_paths(text)):
        if DOTTED.match(name):
            if not resolves(name):
                missing.append(f"{name}: does not import")
            continue
        file_part, _, test = name.partition("::")
        if any(c in file_part for c in "*?["):
            if not list(root.glob(file_part)):
                missing.append(f"{name}: matches no file")
            continue
        target = root / file_part
        if not target.exists():
            missing.append(f"{name}: no such file or folder")
        elif test and test not in {n.name for n in ast.walk(ast.parse(target.read_text(encoding="utf-8")))
                                   if isinstance(n, (ast.FunctionDef, ast.ClassDef))}:
            missing.append(f"{name}: {file_part} defines no {test}")
    return missing


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_every_named_path_exists(path):
    assert missing_paths(path.read_text(encoding="utf-8")) == []


def test_a_missing_path_is_caught():
    text = ("`minimf/training/loop.py`, `tests/test_docs.py::test_a_missing_path_is_caught`, "
            "`lessons/01_*.ipynb`, `minimf.training.fit`, `minimf.nn.optim.Adam`, `setup.cfg`, `DIR/config.json`\n"
            "`minimf/no_such_module.py`, `tests/test_docs.py::test_no_such_test`, `lessons/99_*.ipynb`, "
            "`python benchmarks/no_such_script.py --fast`, `minimf.training.no_such_function`\n"
            "```\nminimf/in_a_code_block_is_not_checked_here.py\n```\n")
    assert missing_paths(text) == ["minimf/no_such_module.py: no such file or folder",
                                   "tests/test_docs.py::test_no_such_test: tests/test_docs.py defines no test_no_such_test",
                                   "lessons/99_*.ipynb: matches no file",
                                   "benchmarks/no_such_script.py: no such file or folder",
                                   "minimf.training.no_such_function: does not import"]


# ---------------------------------------------------------------- (c) commands

def minimf_parser(module):
    """The parser of ``python -m module``: its ``build_parser()`` (a package's, in its __main__.py),
    or None for a command line without one. Only a module that runs nothing on import (its main
    behind ``if __name__ == "__main__"``) is imported."""
    spec = importlib.util.find_spec(module)
    if spec.submodule_search_locations:                     # a package: python -m runs its __main__
        module += ".__main__"
        spec = importlib.util.find_spec(module)
        if spec is None:
            return None
    text = Path(spec.origin).read_text(encoding="utf-8")
    if "def build_parser(" not in text or '__name__ == "__main__"' not in text:
        return None
    return importlib.import_module(module).build_parser()


@functools.cache
def script(name):
    """A benchmark script as a module, loaded as the scripts load each other (their folder on the path)."""
    path = ROOT / name
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"docs_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def script_parser(name):
    """A fresh parser of a benchmark script (its ``build_parser``)."""
    return script(name).build_parser()


def commands(lines):
    """The commands of a code block: backslash continuations joined, comments dropped, split at
    && ; || |, and the environment (VAR=value, env -u VAR) in front of each taken off."""
    joined, current = [], ""
    for line in lines:
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        joined.append(current)
        current = ""
    if current:
        joined.append(current)
    found = []
    for line in joined:
        try:
            words = shlex.split(line, comments=True)
        except ValueError:            # prose or a table in a block, not a shell line
            continue
        command = []
        for word in words + ["&&"]:
            if word in ("&&", ";", "||", "|"):
                found.append(strip_environment(command))
                command = []
            else:
                command.append(word)
    return [c for c in found if c]


def strip_environment(words):
    words = list(words)
    while words:
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words.pop(0)
        elif words[0] == "env":
            words.pop(0)
            while words and words[0] == "-u":
                del words[:2]
        else:
            break
    return words


def module_exists(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:                # a parent package that does not exist
        return False


def bad_commands(text):
    """'command: why' for every python -m minimf... or python benchmarks/... command in ``text``'s
    code blocks that its parser refuses (or whose module or script does not exist)."""
    _, blocks = split_markdown(text)
    bad = []
    for _, lines in blocks:
        for words in commands(lines):
            if len(words) < 2 or words[0] not in ("python", "python3"):
                continue
            shown = " ".join(words)
            if words[1] == "-m" and len(words) > 2 and words[2].startswith("minimf"):
                module, args = words[2], words[3:]
                if not module_exists(module):
                    bad.append(f"{shown}: no module {module}")
                    continue
                parser = minimf_parser(module)
            elif words[1].startswith("benchmarks/") and words[1].endswith(".py"):
                if not (ROOT / words[1]).exists():
                    bad.append(f"{shown}: no script {words[1]}")
                    continue
                parser, args = script_parser(words[1]), words[2:]
            else:
                continue
            if parser is None:
                continue
            error = parse_error(parser, args)
            if error:
                bad.append(f"{shown}: {error}")
    return bad


def parse_error(parser, args):
    """The parser's complaint about ``args``, or None when they parse."""
    complaint = []
    parser.error = lambda message: (complaint.append(message), sys.exit(2))
    parser.exit = lambda status=0, message=None: sys.exit(status)
    parser.print_help = lambda file=None: None
    for action in parser._actions:                    # the subcommands' parsers complain the same way
        if isinstance(action, argparse._SubParsersAction):
            for sub_parser in action.choices.values():
                sub_parser.error, sub_parser.exit, sub_parser.print_help = parser.error, parser.exit, parser.print_help
    try:
        parser.parse_args(args)
    except SystemExit as stop:
        if stop.code:
            return complaint[0] if complaint else f"exit status {stop.code}"
    return None


@pytest.mark.parametrize("path", DOCS, ids=doc_id)
def test_every_documented_command_parses(path):
    assert bad_commands(path.read_text(encoding="utf-8")) == []


def test_a_command_that_does_not_parse_is_caught():
    text = """```
python -m minimf.train --algo bp --epochs 2          # a comment
OPENBLAS_NUM_THREADS=1 env -u OPENBLAS_CORETYPE python -m minimf.train --split-units 2
pip install -e ".[test]" && python -m minimf.datasets download cifar10
python -m minimf.experiments tune --quick --trials 4 \\
    --rules mf bp
python benchmarks/epoch_time.py --arch cnn --fraction 0.05
python -m minimf.parallel.timeline runs/t.json
python -m minimf.train --help
python -m minimf.train --no-such-option
OPENBLAS_NUM_THREADS=1 python -m minimf.train --epochs two   # a comment
cd x && python -m minimf.experiments no-such-experiment
python -m minimf.datasets fetch mnist
python benchmarks/epoch_time.py --no-such-option
python benchmarks/no_such_script.py
python -m minimf.no_such_module
python -m minimf.no_such_package.module
```
"""
    bad = bad_commands(text)
    assert [b.split(":")[0] for b in bad] == [
        "python -m minimf.train --no-such-option", "python -m minimf.train --epochs two",
        "python -m minimf.experiments no-such-experiment", "python -m minimf.datasets fetch mnist",
        "python benchmarks/epoch_time.py --no-such-option", "python benchmarks/no_such_script.py",
        "python -m minimf.no_such_module", "python -m minimf.no_such_package.module"]
    assert "unrecognized arguments: --no-such-option" in bad[0] and "--epochs" in bad[1] and "'two'" in bad[1]


# ---------------------------------------------------------------- (d) the package map

def package_map(readme):
    """The modules the README's map names: in the code block under '## The package', a line
    'minimf/pkg/' opens a package, and an indented line's first word 'name.py' is a module of it."""
    section = readme.split("\n## The package", 1)[1].split("\n## ", 1)[0]
    _, blocks = split_markdown(section)
    named, package = [], None
    for line in blocks[0][1]:
        words = line.split()
        if not words:
            continue
        if not line.startswith(" ") and words[0].startswith("minimf/") and words[0].endswith("/"):
            package = words[0]
        elif line.startswith(" ") and words[0].endswith(".py") and package:
            named.append(package + words[0])
    return named


def modules(package_dir=PACKAGE):
    """Every module file under minimf/ but the packages' __init__.py, as 'minimf/...py'."""
    return sorted(str(p.relative_to(package_dir.parent)) for p in package_dir.rglob("*.py")
                  if p.name != "__init__.py")


def map_mismatch(named, present):
    return ([f"not in the README's map: {m}" for m in sorted(set(present) - set(named))]
            + [f"in the map but not in minimf/: {m}" for m in sorted(set(named) - set(present))]
            + [f"named twice: {m}" for m in sorted({m for m in named if named.count(m) > 1})])


def test_the_package_map_names_every_module():
    problems = map_mismatch(package_map((ROOT / "README.md").read_text(encoding="utf-8")), modules())
    assert not problems, "README.md, '## The package':\n" + "\n".join(problems)


def test_a_module_left_out_of_the_map_is_caught(tmp_path):
    for name in ("a.py", "b.py", "sub/__init__.py", "sub/c.py", "sub/d.py"):
        (tmp_path / "minimf" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "minimf" / name).write_text("", encoding="utf-8")
    readme = ("# x\n\n## The package\n\n```\nminimf/        the ground\n  a.py         one\n"
              "  gone.py      removed long ago\nminimf/sub/    a package\n  c.py         three\n"
              "  c.py         again\n```\n\n## Next\n")
    assert map_mismatch(package_map(readme), modules(tmp_path / "minimf")) == [
        "not in the README's map: minimf/b.py", "not in the README's map: minimf/sub/d.py",
        "in the map but not in minimf/: minimf/gone.py", "named twice: minimf/sub/c.py"]


# ---------------------------------------------------------------- (e) set-up, the example, the options

def readme_blocks():
    return split_markdown((ROOT / "README.md").read_text(encoding="utf-8"))[1]


def test_the_readme_set_up_gives_ci_s_commands():
    """.ci/run installs and tests with exactly the README's commands, in a fresh virtual environment."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    setup = "\n".join(line for _, lines in readme_blocks() for line in lines)
    for command in ('pip install -e ".[test]"', "python -m pytest"):
        assert command in ci and command in setup
    assert "python3 -m venv .venv && . .venv/bin/activate" in setup


def test_the_readme_python_example_runs(capsys):
    """The README's training example, on 512 training images instead of 5,000 (seconds, not minutes)."""
    examples = ["\n".join(lines) for _, lines in readme_blocks() if "from minimf.training import" in "\n".join(lines)]
    assert len(examples) == 1
    code = examples[0]
    assert "train_subset=5000" in code
    exec(compile(code.replace("train_subset=5000", "train_subset=512"), "README.md", "exec"), {})
    assert "epoch 2/2" in capsys.readouterr().out


def option_rows(text):
    """{option: default cell} of the table rows of docs/cli.md whose first cell is `--option ...`."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^\|\s*`(--[a-z-]+)[^`]*`\s*\|\s*([^|]*?)\s*\|", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


def documented_default(cell):
    cell = cell.strip("` ")
    if cell in ("–", "-"):
        return None
    if cell == "off":
        return False
    words = cell.split()
    if len(words) > 1:
        return [int(w) for w in words]
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell


def code_default(option):
    field = {f.name: f for f in dataclasses.fields(RunConfig)}[option[2:].replace("-", "_")]
    return {"hidden": DEFAULT_HIDDEN, "channels": DEFAULT_CHANNELS, **DEFAULT_MIXER}.get(field.name, field.default)


def test_the_cli_page_lists_every_option_with_its_default():
    from minimf.train import build_parser
    options = {o for a in build_parser()._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
    rows = option_rows((ROOT / "docs" / "cli.md").read_text(encoding="utf-8"))
    assert sorted(options - set(rows)) == [], "options of python -m minimf.train missing from docs/cli.md"
    assert sorted(set(rows) - options) == [], "docs/cli.md lists options the command line does not have"
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    wrong = {o: (rows[o], code_default(o)) for o in rows if o[2:].replace("-", "_") in fields
             and documented_default(rows[o]) != code_default(o)}
    assert wrong == {}, "docs/cli.md's default (left) is not the code's (right)"


def test_a_wrong_default_in_the_options_table_is_caught():
    rows = option_rows("| `--epochs E` | 20 | passes |\n| `--hidden H ...` | `1000 1000` | widths |\n"
                       "| `--lr LR` | 1.88e-3 | rate |\n| `--no-bias` | off | x |\n| `--device N` | – | x |\n")
    assert {o: documented_default(c) == code_default(o) for o, c in rows.items()} == {
        "--epochs": False, "--hidden": True, "--lr": True, "--no-bias": True, "--device": True}


def test_every_experiment_has_its_command_in_the_docs():
    from minimf.experiments import EXPERIMENTS
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS)
    assert [n for n in EXPERIMENTS if f"python -m minimf.experiments {n}" not in text] == []

