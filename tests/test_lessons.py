"""The lessons (``lessons/NN_*.ipynb``) and the course assignments built from them with nbgrader.

1. Every lesson runs top to bottom under pytest with nbmake, in small mode (``MINIMF_SMALL=1``).
2. Outputs are stripped in git.
3. The student version, built by ``python -m minimf.course build`` (nbgrader's ``generate_assignment``,
   one assignment per lesson) in a temporary course directory exactly as an instructor would
   (docs/course.md), leaks no solution text, runs up to its first task, and each graded test cell
   FAILS on the stubs (a test that passes on a stub tests nothing). It is run up to its last graded
   test; what follows is run by 1., with the solutions in.
4. The lessons are in step with the project: no issue numbers, every graded test keeps minimf's own
   answer out of reach (``minimf.course.integrity.without``), every file a lesson shows exists.

Grading the assignments (nbgrader autograde, grades.csv, the grader's own failure modes) is
tests/test_course.py's.

Kernels are started with this interpreter (``python3`` resolves to ``sys.executable``) and with an
empty user Jupyter data folder, so that a ``python3`` kernel registered elsewhere cannot take over.
nbgrader starts ``alembic`` by name: the interpreter's ``bin`` goes first on PATH.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the lessons need the [test] extra (jupyter, nbmake, nbgrader)")
nbclient = pytest.importorskip("nbclient", reason="the lessons need the [test] extra (jupyter, nbmake, nbgrader)")

from notebook_helpers import is_graded_test, is_solution, nbgrader_of, read_notebook  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LESSONS_DIR = ROOT / "lessons"
LESSONS = sorted(LESSONS_DIR.glob("[0-9][0-9]_*.ipynb"))
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = re.compile(r'raise NotImplementedError\("Task \d+\.\d+: [^"]+"\)')
CELL_TIMEOUT_S = 300


def _has_tasks(path):
    return any(is_solution(cell) for cell in read_notebook(path).cells)


TASK_LESSONS = [path for path in LESSONS if _has_tasks(path)]


def _env(tmp_path):
    """The environment for kernels and command-line tools: small mode, this interpreter first."""
    env = dict(os.environ)
    env["MINIMF_SMALL"] = "1"
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["JUPYTER_DATA_DIR"] = str(tmp_path / "jupyter-data")
    return env


def _solution_lines(source):
    """The non-blank lines between the solution markers of one cell's source."""
    lines, inside = [], False
    for line in source.splitlines():
        if line.strip() == BEGIN:
            inside = True
        elif line.strip() == END:
            inside = False
        elif inside and line.strip():
            lines.append(line.strip())
    return lines


def test_lessons_are_numbered_in_order():
    assert len(LESSONS) >= 4, LESSONS
    numbers = [int(path.name[:2]) for path in LESSONS]
    assert numbers == list(range(1, len(LESSONS) + 1)), [path.name for path in LESSONS]
    assert len(TASK_LESSONS) >= 3, "lessons 2-4 each carry a graded task"


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda path: path.stem)
def test_lesson_is_valid_with_outputs_stripped(lesson):
    nb = read_notebook(lesson)
    nbformat.validate(nb)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{lesson.name} cell {index} has outputs: strip them (jupyter nbconvert --clear-output --inplace)")
    assert nb.cells[-1].cell_type == "markdown" and "## Exercises" in nb.cells[-1].source, (
        f"{lesson.name} must end with a summary and exercises")


@pytest.mark.parametrize("lesson", TASK_LESSONS, ids=lambda path: path.stem)
def test_lesson_tasks_use_nbgrader_markers_and_named_stubs(lesson):
    solutions = [cell for cell in read_notebook(lesson).cells if is_solution(cell)]
    tests = [cell for cell in read_notebook(lesson).cells if is_graded_test(cell)]
    assert solutions and tests
    for cell in solutions:
        assert cell.source.count(BEGIN) == cell.source.count(END) >= 1, cell.source
        assert STUB.search(cell.source.split(END)[-1]), f"no named stub after the solution in:\n{cell.source}"
    for cell in tests:
        assert nbgrader_of(cell).get("points", 0) > 0 and nbgrader_of(cell).get("locked"), nbgrader_of(cell)


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda path: path.stem)
def test_lesson_runs_under_nbmake(lesson, tmp_path):
    """The whole lesson, instructor version (solutions in), top to bottom, in small mode."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbmake", f"--nbmake-timeout={CELL_TIMEOUT_S}", "-q",
         "-p", "no:cacheprovider", str(lesson)],
        cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def student_version(tmp_path_factory):
    """Build the course as an instructor would (python -m minimf.course build DIR): one nbgrader assignment
    per lesson; returns DIR/release, where release/<lesson>/<lesson>.ipynb is the student version."""
    tmp = tmp_path_factory.mktemp("course")
    course = tmp / "course"
    result = subprocess.run([sys.executable, "-m", "minimf.course", "build", str(course)],
                            cwd=ROOT, env=_env(tmp), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    release = course / "release"
    assert sorted(p.name for p in release.glob("*/*.ipynb")) == [p.name for p in LESSONS]
    return release


def _released(release, lesson):
    return release / lesson.stem / lesson.name


@pytest.mark.parametrize("lesson", TASK_LESSONS, ids=lambda path: path.stem)
def test_student_version_leaks_no_solution(lesson, student_version):
    source_cells = read_notebook(lesson).cells
    student = read_notebook(_released(student_version, lesson))
    student_text = "\n".join(cell.source for cell in student.cells)
    assert BEGIN not in student_text and END not in student_text

    solution = {line for cell in source_cells if is_solution(cell) for line in _solution_lines(cell.source)}
    outside = {line.strip() for cell in source_cells
               for line in re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), "", cell.source, flags=re.S).splitlines()}
    secret = solution - outside
    assert secret, f"{lesson.name}: every solution line also appears outside the solution regions"
    student_lines = {line.strip() for line in student_text.splitlines()}
    leaked = sorted(secret & student_lines)
    assert not leaked, f"{lesson.name}: solution text in the student version: {leaked}"
    for cell in student.cells:
        if is_solution(cell):
            assert STUB.search(cell.source), cell.source


@pytest.mark.parametrize("lesson", TASK_LESSONS, ids=lambda path: path.stem)
def test_student_version_runs_to_first_task_and_its_tests_fail(lesson, student_version, tmp_path, monkeypatch):
    for name, value in _env(tmp_path).items():
        monkeypatch.setenv(name, value)
    nb = read_notebook(_released(student_version, lesson))
    last_test = max(i for i, cell in enumerate(nb.cells) if is_graded_test(cell))
    nb.cells = nb.cells[:last_test + 1]      # what follows the last graded test runs under nbmake (solutions in)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", allow_errors=True,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    def errors(cell):
        return [out for out in cell.get("outputs", []) if out.output_type == "error"]

    first_test = next(i for i, cell in enumerate(nb.cells) if is_graded_test(cell))
    for index, cell in enumerate(nb.cells[:first_test]):
        assert not errors(cell), f"{lesson.name} cell {index} fails before the first task: {errors(cell)}"

    graded = [cell for cell in nb.cells if is_graded_test(cell)]
    for cell in graded:
        found = errors(cell)
        assert found, f"{lesson.name}: graded test {nbgrader_of(cell)['grade_id']} PASSES on the stub"
        assert found[0].ename == "NotImplementedError" and found[0].evalue.startswith("Task "), (
            f"{lesson.name}: {nbgrader_of(cell)['grade_id']} failed for another reason: "
            f"{found[0].ename}: {found[0].evalue}")


def test_no_lesson_names_an_issue():
    pattern = re.compile(r"\bissues?\s*#?\d+", re.I)
    for lesson in LESSONS:
        for index, cell in enumerate(read_notebook(lesson).cells):
            found = pattern.findall(cell.source)
            assert not found, f"{lesson.name} cell {index} names {found}: lessons speak of ideas, not of issues"


@pytest.mark.parametrize("lesson", TASK_LESSONS, ids=lambda path: path.stem)
def test_graded_tests_keep_minimf_s_own_answer_out_of_reach(lesson):
    """Every graded test runs the student's function inside ``without(<minimf's own implementation>, task=...)``
    (tests/test_course.py checks that answers calling it score 0)."""
    for cell in read_notebook(lesson).cells:
        if is_graded_test(cell):
            assert "from minimf.course.integrity import without" in cell.source, cell.source
            assert re.search(r"with without\(.+task=\"\d+\.\d+\"\):", cell.source), cell.source


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda path: path.stem)
def test_pictures_a_lesson_shows_exist_and_travel_with_it(lesson):
    """Every ![picture](path) of a lesson is a file beside it, which the course build copies with it."""
    from minimf.course.build import linked_files
    pictures = [match for cell in read_notebook(lesson).cells if cell.cell_type == "markdown"
                for match in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", cell.source)]
    for picture in pictures:
        assert (LESSONS_DIR / picture).is_file(), f"{lesson.name} shows {picture}, which is not in lessons/"
    assert set(pictures) <= {str(path) for path in linked_files(lesson)}
