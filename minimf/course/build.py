"""Assignments from the lessons, with nbgrader: one assignment per lesson, and the student edition.

    build_course(course)      course/nbgrader_config.py, course/source/<lesson>/, course/release/<lesson>/,
                              course/exchange/ and course/gradebook.db: nbgrader's standard layout
    student_edition(folder)   folder/<lesson>.ipynb without the solutions (never over a learner's own file)

Both run nbgrader's own ``generate_assignment``; the solutions between ``### BEGIN SOLUTION`` and
``### END SOLUTION`` are cut by nbgrader, not here. An assignment is named after its lesson's file
(``04_mono_forward``) and holds that one notebook, plus the files its text shows (lesson 4's diagram).
"""
import filecmp
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import minimf

COURSE_ID = "minimf"
LESSON_NAME = re.compile(r"^\d\d_\w+\.ipynb$")
LINKED_FILE = re.compile(r"""\]\(([^)\s:#]+)\)|src=["']([^"':#]+)["']""")     # markdown image/link, <img src=...>


class CourseError(RuntimeError):
    """The lessons, the course folder or nbgrader are not as needed; the message says what to do."""


def default_lessons():
    """lessons/ beside the minimf package: a clone of the repository has it; a wheel does not."""
    return Path(minimf.__file__).resolve().parents[1] / "lessons"


def find_lessons(lessons=None):
    """The lesson notebooks (NN_name.ipynb) of ``lessons``, in order."""
    folder = Path(lessons) if lessons is not None else default_lessons()
    found = sorted(path for path in folder.glob("*.ipynb") if LESSON_NAME.match(path.name)) if folder.is_dir() else []
    if not found:
        raise CourseError(f"no lessons in {folder}: the lessons come with a clone of the repository, not with "
                          f"an installed wheel (git clone the repository, pip install -e \".[lessons]\", "
                          f"and run this from there), or name the folder with --lessons")
    return found


def linked_files(notebook):
    """The files beside ``notebook`` that its markdown cells show or link to (relative paths that exist)."""
    import nbformat
    found = set()
    for cell in nbformat.read(str(notebook), as_version=4).cells:
        if cell.cell_type != "markdown":
            continue
        for match in LINKED_FILE.finditer(cell.source):
            name = match.group(1) or match.group(2)
            path = (notebook.parent / name).resolve()
            if path.is_file() and notebook.parent.resolve() in path.parents:
                found.add(Path(name))
    return sorted(found)


def tool_environment(extra=None):
    """The environment for nbgrader and its kernels: this interpreter's bin first on PATH (nbgrader
    starts ``alembic`` by name, and the kernels must import this minimf)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(extra or {})
    return env


def nbgrader(args, course, env=None, log=None):
    """Run ``python -m nbgrader ARGS`` in ``course``; returns the completed process (output captured,
    and appended to ``log`` when given)."""
    if importlib.util.find_spec("nbgrader") is None:
        raise CourseError('nbgrader is not installed: pip install -e ".[lessons]"')
    result = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env or tool_environment(),
                            capture_output=True, text=True)
    if log is not None:
        with open(log, "a") as out:
            out.write(f"$ nbgrader {' '.join(args)}  (exit {result.returncode})\n{result.stdout}{result.stderr}\n")
    return result


def _copy_if_changed(source, target):
    """Copy unless the target already holds the same bytes (its timestamp then stays, and nbgrader
    does not rebuild an assignment whose lesson did not change). Returns whether it copied."""
    if target.exists() and filecmp.cmp(source, target, shallow=False):
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)
    return True


def write_sources(course, lessons):
    """course/source/<lesson>/<lesson>.ipynb and the files it shows. Returns the assignment names and
    the set of those whose source changed."""
    names, changed = [], set()
    for lesson in lessons:
        name = lesson.stem
        folder = course / "source" / name
        copied = [_copy_if_changed(lesson, folder / lesson.name)]
        for relative in linked_files(lesson):
            copied.append(_copy_if_changed(lesson.parent / relative, folder / relative))
        names.append(name)
        if any(copied):
            changed.add(name)
    return names, changed


def config_template(lessons_folder):
    template = Path(lessons_folder) / "nbgrader_config.py"
    if not template.is_file():
        raise CourseError(f"no nbgrader_config.py in {lessons_folder}")
    return template


def build_course(course, lessons=None, log=print):
    """Make ``course`` an nbgrader course of the lessons, release ready; safe to run again (changed
    lessons are rebuilt; submitted/, autograded/, feedback/ and the grades are never touched)."""
    course = Path(course).resolve()
    found = find_lessons(lessons)
    course.mkdir(parents=True, exist_ok=True)
    template, config = config_template(found[0].parent), course / "nbgrader_config.py"
    if not config.exists():
        shutil.copy(template, config)
    elif not filecmp.cmp(template, config, shallow=False):
        log(f"kept your {config} ({template} differs from it: compare the two)")
    exchange = course / "exchange"
    if not exchange.exists():
        exchange.mkdir()
        os.chmod(exchange, 0o777)          # nbgrader's exchange: every student account writes its inbound there
    released = {path.name for path in (course / "release").glob("*")}
    names, changed = write_sources(course, found)
    runs = [["generate_assignment", "*"]]                      # the new ones (nbgrader skips those it has)
    # a lesson that changed is released anew: nbgrader rewrites release/<lesson>/ only, never the
    # students' submitted/, autograded/ or feedback/ folders, nor their grades
    runs += [["generate_assignment", name, "--force"] for name in sorted(changed & released)]
    for args in runs:
        result = nbgrader(args, course, log=course / "nbgrader.log")
        if result.returncode != 0:
            raise CourseError(f"nbgrader {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
    missing = [name for name in names if not (course / "release" / name / f"{name}.ipynb").is_file()]
    if missing:
        raise CourseError(f"nbgrader made no release of {', '.join(missing)}: see {course / 'nbgrader.log'}")
    log(f"{len(names)} assignments, one per lesson, in {course}:")
    log("  source/<lesson>/   the lessons with their solutions (the instructor's copy)")
    log("  release/<lesson>/  what students get: hand these out, or nbgrader release_assignment <lesson>")
    log("  exchange/          nbgrader's exchange (release_assignment, fetch_assignment, submit, collect)")
    log(f"then: python -m minimf.course grade {course}")
    return names


def student_edition(folder, lessons=None, log=print):
    """The lessons without their solutions in ``folder``, for learning on one's own. A notebook that is
    already there is kept as it is (it may hold the learner's answers); the others are written."""
    folder = Path(folder).resolve()
    found = find_lessons(lessons)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        course = Path(tmp)
        shutil.copy(config_template(found[0].parent), course / "nbgrader_config.py")
        names, _ = write_sources(course, found)
        result = nbgrader(["generate_assignment", "*", "--no-db"], course)
        if result.returncode != 0:
            raise CourseError(f"nbgrader generate_assignment failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
        written, kept = [], []
        for name in names:
            release = course / "release" / name
            for path in sorted(p for p in release.rglob("*") if p.is_file()):
                target = folder / path.relative_to(release)
                if target.exists():
                    kept.append(target.name)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
                written.append(target.name)
    log(f"{folder}: wrote {len(written)} file(s)" + (f", kept your own {', '.join(kept)}" if kept else ""))
    log(f"start with: jupyter lab {folder}")
    return written, kept
