"""The package's tiers hold (issue 16): each tier imports only the tiers below it.

    ground    backend, checks, files, progress, checkpoint (and testing/, the CPU stand-in for CuPy)
    nn        building blocks: may import the ground
    rules     one learning rule a module: may import nn and the ground (and other rules)
    parallel  trainers that share a rule's work out: may import rules, nn and the ground
    training  the loop, its configuration and data: may import the tiers above, the data sets and the run folder
Nothing below train, experiments or the data sets' downloads imports them; the training package
imports neither the command line nor the experiments. The check reads every
module's import statements (``ast``), so it needs no import to run and catches a lazy import too.
"""
import ast
from pathlib import Path

import pytest

import minimf

PACKAGE = Path(minimf.__file__).parent
GROUND = {"backend", "checks", "files", "progress", "checkpoint", "testing", "__version__"}   # (and the version number)
ALLOWED = {"ground": {"ground"}, "nn": {"ground", "nn"}, "rules": {"ground", "nn", "rules"},
           "parallel": {"ground", "nn", "rules", "parallel"},
           "training": {"ground", "nn", "rules", "parallel", "datasets", "run_folder", "training"}}
BELOW_TRAINING = ("ground", "nn", "rules", "parallel")


def tier_of(module):
    """'ground', 'nn', 'rules', 'parallel', or the top-level name (datasets, experiments, train, ...)."""
    top = module.split(".")[1] if module.count(".") else "minimf"
    return "ground" if top in GROUND else top


def module_name(path, root=PACKAGE.parent):
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def minimf_imports(path):
    """Every minimf module that the file at ``path`` imports, anywhere in it."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return [name for name in names if name.startswith("minimf.")]


def violations(files, root=PACKAGE.parent):
    """'module (tier) imports name (tier)' for every import from a tier above or beside the allowed
    ones (modules above the four tiers, such as train and experiments, may import anything)."""
    found = []
    for path in files:
        module = module_name(path, root)
        tier = tier_of(module)
        if tier not in ALLOWED:
            continue
        for name in minimf_imports(path):
            if tier_of(name) not in ALLOWED[tier]:
                found.append(f"{module} ({tier}) imports {name} ({tier_of(name)})")
    return found


def test_each_tier_imports_only_the_tiers_below_it():
    assert violations(sorted(PACKAGE.rglob("*.py"))) == []


def test_nothing_below_imports_the_command_line_experiments_or_downloads():
    low = [p for p in PACKAGE.rglob("*.py") if tier_of(module_name(p)) in BELOW_TRAINING]
    bad = [f"{module_name(p)} imports {name}" for p in low for name in minimf_imports(p)
           if name.startswith(("minimf.train", "minimf.experiments", "minimf.datasets"))]
    assert bad == []


def test_the_training_package_imports_neither_the_command_line_nor_the_experiments():
    files = [p for p in PACKAGE.rglob("*.py") if tier_of(module_name(p)) == "training"]
    assert files, "no training package found"
    bad = [f"{module_name(p)} imports {name}" for p in files for name in minimf_imports(p)
           if name.startswith(("minimf.train.", "minimf.experiments")) or name == "minimf.train"]
    assert bad == []


def test_the_check_catches_an_import_from_above(tmp_path):
    """Must fail: a building block that imported a rule, or a rule that imported a trainer, is caught."""
    for tier, line in (("nn", "from minimf.rules.mono_forward import MonoForwardNet"),
                       ("rules", "import minimf.parallel.pipeline")):
        bad = tmp_path / "minimf" / tier / "bad.py"
        bad.parent.mkdir(parents=True, exist_ok=True)
        bad.write_text(f"def lazy():\n    {line}\n")            # even inside a function
        assert violations([bad], root=tmp_path) != [], line


@pytest.mark.parametrize("tier", ["nn", "rules", "parallel"])
def test_every_tier_says_what_it_holds_and_may_import(tier):
    doc = ast.get_docstring(ast.parse((PACKAGE / tier / "__init__.py").read_text()))
    assert doc and "may import" in doc
