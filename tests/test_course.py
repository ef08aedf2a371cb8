"""The course (minimf/course/, python -m minimf.course): the grader's own failure modes, tested.

1. Every task's graded test grades the student's code, never the reference's (run in-process, all tasks):
   the instructor's solution passes; the same solution with its outputs scaled by 1.5 fails (a test that
   compared the reference with itself would pass it); an answer that calls minimf's own implementation of
   the task fails with ReferenceUsed, which says why.
2. ``grade`` on a small course (nbgrader autograde, for real): the solutions score every point, the stubs
   none; the shortcuts of tasks 9.1 (minimf's avg_pool_backward) and 14.1 (stats.paired_interval) score 0;
   a syntax error, an empty notebook and a notebook that is not JSON score 0 for their tasks while the
   student's other lessons are graded; grades.csv has one row per student and task; the feedback shows
   no library frames and no cell timeout; a cell past the time limit is stopped with one sentence; the
   exchange loop (release, fetch, submit, grade) needs no hand work.
3. A rebuilt release never overwrites a student's work (the course's submissions and grades; the
   student edition's notebooks).
4. The wheel and the sdist a student installs carry no solution text.
5. (slow) One student's whole course, solutions in, autogrades in at most 60 s, with every point; the
   stubs score 0 on every task.
"""
import ast
import csv
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
import tarfile
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the course needs the [test] extra (nbgrader)")
pytest.importorskip("nbgrader", reason="the course needs the [test] extra (nbgrader)")

from notebook_helpers import is_graded_test, is_solution, nbgrader_of, read_notebook  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LESSONS_DIR = ROOT / "lessons"
LESSONS = sorted(LESSONS_DIR.glob("[0-9][0-9]_*.ipynb"))
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
STUB = re.compile(r'raise NotImplementedError\("Task \d+\.\d+: [^"]+"\)')
TASK = re.compile(r'Task (\d+\.\d+)')

# Answers that call minimf's own implementation of the task (each replaces the solution region).
SHORTCUTS = {
    "2.1": """from minimf.nn.layers import dense_backward
return dense_backward(dz, cache)""",
    "3.1": """return softmax_cross_entropy(logits, y)""",
    "4.1": """layer = MonoForwardLayer(W.shape[0], W.shape[1], M.shape[0], make_rng(0), np, dtype="float64")
layer.W[...], layer.b[...], layer.M[...] = W, b, M
_, loss, grads = layer.local_gradients(x, y)
return loss, grads""",
    "5.1": """adam = state.setdefault("adam", Adam(lr=lr, beta1=beta1, beta2=beta2, eps=eps))
adam.step({"p": p}, {"p": g})
state["t"] += 1""",
    "6.1": """net = BackpropNet(sizes=[x.shape[1]] + [layer["W"].shape[1] for layer in layers[:-1]],
                  num_classes=layers[-1]["W"].shape[1], dtype="float64")
for mine, layer in zip(layers, net.layers):
    layer.W[...], layer.b[...] = mine["W"], mine["b"]
return loss, net.gradients(x, y)""",
    "7.1": """from minimf.nn.conv import conv2d_backward_naive
return conv2d_backward_naive(dout, cache)""",
    "8.1": """net = FeedbackAlignmentNet(sizes=[x.shape[1]] + [layer["W"].shape[1] for layer in layers[:-1]],
                           num_classes=layers[-1]["W"].shape[1], dtype="float64")
return loss, net.gradients(x, y)""",
    "9.1": """_, reference_cache = avg_pool_forward(np.zeros(cache), 2, 2)
return avg_pool_backward(dout, reference_cache)""",
    "10.1": """layer = ForwardForwardLayer(W.shape[0], W.shape[1], make_rng(0), np, dtype="float64", threshold=threshold)
layer.W[...], layer.b[...] = W, b
_, _, loss, grads = layer.local_gradients(x_pos, x_neg)
return loss, grads""",
    "11.1": """net = BackpropNet(sizes=sizes, num_classes=num_classes)
return {"activations": 0, "gradients": sum(g.size for g in net.layers[0].params.values()) * itemsize}""",
    "14.1": """result = paired_interval(a, b, confidence)
return float(result.mean), float(result.low), float(result.high)""",
    "15.1": """return layer_norm_backward(dy, cache)""",
}


def _task(cell):
    return TASK.search(cell.source).group(1)


TASK_LESSONS = [lesson for lesson in LESSONS if any(is_solution(cell) for cell in read_notebook(lesson).cells)]


def filled_in(instructor_source):
    """A solution cell completed as a student would: the instructor's source without the solution
    markers and without the stub that follows them."""
    return "\n".join(line for line in instructor_source.splitlines()
                     if line.strip() not in (BEGIN, END) and not STUB.search(line))


def shortcut(source, task):
    """``source`` (an instructor's or a student's solution cell) answered with SHORTCUTS[task]: the solution
    region (or nbgrader's "# YOUR CODE HERE") is replaced, the stub removed."""
    lines, out, skipping = source.splitlines(), [], False
    for line in lines:
        if line.strip() in (BEGIN, "# YOUR CODE HERE"):
            indent = line[:len(line) - len(line.lstrip())]
            out += [indent + body for body in SHORTCUTS[task].splitlines()]
            skipping = line.strip() == BEGIN
        elif line.strip() == END:
            skipping = False
        elif not skipping and not STUB.search(line):
            out.append(line)
    return "\n".join(out)


def answer_function(source):
    """The name of the function whose body holds the solution region (or the stub)."""
    marker = next(i for i, line in enumerate(source.splitlines(), 1) if STUB.search(line))
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef) and node.lineno <= marker <= node.end_lineno:
            return node.name
    raise AssertionError(f"no function holds the stub in:\n{source}")


PERTURB = '''
def _perturbed(function):
    """The answer with its outputs scaled by 1.5 (or, returning nothing, its first argument changed in place)."""
    import numpy as _np

    def scale(value):
        if isinstance(value, dict):
            return {key: scale(v) for key, v in value.items()}
        if isinstance(value, (tuple, list)):
            return type(value)(scale(v) for v in value)
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int):
            return 2 * value + 1
        return value * 1.5

    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        if result is None and args and isinstance(args[0], _np.ndarray):
            args[0] *= 1.5
        return scale(result)
    return wrapper


{name} = _perturbed({name})
'''


def run_to_last_test(lesson, solution_source=None, extra=None, monkeypatch=None):
    """Run the lesson's code cells up to its last graded test in one namespace, in grading mode (its
    training cells skip), with the solution cell replaced by ``solution_source`` and ``extra`` run right
    after it. Raises what the graded test raises."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import minimf.course.modes as modes
    monkeypatch.setattr(modes, "GRADING", True)
    monkeypatch.setattr(modes, "SMALL", True)
    cells = read_notebook(lesson).cells
    last = max(i for i, cell in enumerate(cells) if is_graded_test(cell))
    namespace = {"__name__": "__main__"}
    try:
        for index, cell in enumerate(cells[:last + 1]):
            if cell.cell_type != "code":
                continue
            source = cell.source
            if is_solution(cell):
                source = filled_in(source) if solution_source is None else solution_source
                if extra:
                    source += "\n" + extra
            exec(compile(source, f"<{lesson.stem} cell {index}>", "exec"), namespace)
    finally:
        plt.close("all")
    return namespace


@pytest.mark.parametrize("lesson", TASK_LESSONS, ids=lambda path: path.stem)
def test_graded_tests_grade_the_students_code(lesson, monkeypatch):
    from minimf.course.integrity import ReferenceUsed
    solution = next(cell for cell in read_notebook(lesson).cells if is_solution(cell))
    task, name = _task(solution), answer_function(solution.source)

    run_to_last_test(lesson, monkeypatch=monkeypatch)                            # the solution passes

    with pytest.raises(Exception) as info:                                       # scaled outputs fail
        run_to_last_test(lesson, extra=PERTURB.format(name=name), monkeypatch=monkeypatch)
    assert not isinstance(info.value, ReferenceUsed), info.value

    with pytest.raises(ReferenceUsed) as info:                                   # minimf's own answer fails
        run_to_last_test(lesson, shortcut(solution.source, task), monkeypatch=monkeypatch)
    assert str(info.value).startswith(f"Task {task} must be answered with your own code"), info.value
    assert set(SHORTCUTS) == {_task(next(c for c in read_notebook(path).cells if is_solution(c))) for path in TASK_LESSONS}


# ---------------------------------------------------------------------------------------------------------
# grading a small course with nbgrader, for real

SMALL_COURSE = ["02", "03", "05", "09", "14"]          # lesson numbers: kept few, so that grading takes seconds


def _env(tmp):
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["JUPYTER_DATA_DIR"] = str(tmp / "jupyter-data")
    return env


def copy_lessons(folder, numbers=None):
    """A lessons folder holding some of the lessons, their config and their pictures."""
    folder.mkdir(parents=True)
    for lesson in LESSONS:
        if numbers is None or lesson.name[:2] in numbers:
            shutil.copy(lesson, folder / lesson.name)
    shutil.copy(LESSONS_DIR / "nbgrader_config.py", folder / "nbgrader_config.py")
    shutil.copytree(LESSONS_DIR / "figures", folder / "figures")
    return folder


def submit(course, student, lesson_stem, change=None, text=None):
    """course/submitted/<student>/<lesson>/<lesson>.ipynb: the released notebook, its solution cell
    changed by ``change(student_source, instructor_source)``, or ``text`` written as it is."""
    folder = course / "submitted" / student / lesson_stem
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{lesson_stem}.ipynb"
    if text is not None:
        target.write_text(text)
        return target
    nb = read_notebook(course / "release" / lesson_stem / f"{lesson_stem}.ipynb")
    instructor = {nbgrader_of(c)["grade_id"]: c.source for c in read_notebook(course / "source" / lesson_stem /
                                                                      f"{lesson_stem}.ipynb").cells if is_solution(c)}
    for cell in nb.cells:
        if is_solution(cell) and change is not None:
            cell.source = change(cell.source, instructor[nbgrader_of(cell)["grade_id"]])
    nbformat.write(nb, str(target))
    return target


def stem(number):
    return next(lesson.stem for lesson in LESSONS if lesson.name.startswith(number))


def solved(student_source, instructor_source):
    return filled_in(instructor_source)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """A course of five lessons, built and graded once: gives (course, {(student, task): row})."""
    tmp = tmp_path_factory.mktemp("graded")
    lessons = copy_lessons(tmp / "lessons", SMALL_COURSE)
    course = tmp / "course"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("JUPYTER_DATA_DIR", str(tmp / "jupyter-data"))       # no python3 kernel from elsewhere
        yield from _build_and_grade(course, lessons)


def _build_and_grade(course, lessons):
    from minimf.course.build import build_course
    from minimf.course.grade import grade_course
    build_course(course, lessons, log=lambda *a: None)
    submit(course, "solver", stem("02"), solved)
    submit(course, "stubs", stem("09"))
    submit(course, "shortcut", stem("09"), lambda s, i: shortcut(s, "9.1"))
    submit(course, "shortcut", stem("14"), lambda s, i: shortcut(s, "14.1"))
    submit(course, "broken", stem("02"), lambda s, i: filled_in(i).replace("return dx, dW, db", "return dx, dW, db)"))
    empty = read_notebook(course / "release" / stem("03") / f"{stem('03')}.ipynb")
    empty.cells = []
    nbformat.write(empty, str(submit(course, "broken", stem("03"))))
    submit(course, "broken", stem("05"), text="")                          # not a notebook at all
    submit(course, "broken", stem("09"), solved)
    submit(course, "broken", stem("14"), solved)
    start = time.perf_counter()
    rows = grade_course(course, log=lambda *a: None)
    print(f"graded 4 students, 9 notebooks, in {time.perf_counter() - start:.1f} s")
    yield course, {(row["student"], row["task"]): row for row in rows}


def test_grades_csv_has_one_row_per_student_and_task(graded):
    course, rows = graded
    with open(course / "grades.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["student", "assignment", "task", "points", "max_points", "status"]
    tasks = {"2.1", "3.1", "5.1", "9.1", "14.1"}
    assert {(r["student"], r["task"]) for r in table} == {(s, t) for s in ("broken", "shortcut", "solver", "stubs")
                                                          for t in tasks}
    assert len(table) == 4 * len(tasks)
    assert rows[("solver", "3.1")]["status"] == "not submitted" and rows[("solver", "3.1")]["points"] == 0


def test_solutions_score_every_point_and_stubs_none(graded):
    _, rows = graded
    for student, task in (("solver", "2.1"), ("broken", "9.1"), ("broken", "14.1")):
        row = rows[(student, task)]
        assert row["status"] == "graded" and row["points"] == row["max_points"] > 0, row
    assert rows[("stubs", "9.1")]["status"] == "graded" and rows[("stubs", "9.1")]["points"] == 0


def test_calling_minimf_s_own_answer_scores_zero_and_says_why(graded):
    course, rows = graded
    for number, task in (("09", "9.1"), ("14", "14.1")):
        assert rows[("shortcut", task)]["status"] == "graded" and rows[("shortcut", task)]["points"] == 0
        feedback = (course / "feedback" / "shortcut" / stem(number) / f"{stem(number)}.html").read_text()
        assert f"Task {task} must be answered with your own code" in feedback


def test_a_broken_notebook_scores_zero_and_the_rest_is_graded(graded):
    course, rows = graded
    assert rows[("broken", "2.1")]["points"] == 0 and rows[("broken", "2.1")]["status"] == "graded"   # syntax error
    assert rows[("broken", "3.1")]["points"] == 0 and rows[("broken", "3.1")]["status"] == "graded"   # empty
    assert rows[("broken", "5.1")]["points"] == 0 and rows[("broken", "5.1")]["status"].startswith("not graded")
    for task in ("9.1", "14.1"):                                                        # graded all the same
        assert rows[("broken", task)]["points"] == rows[("broken", task)]["max_points"] > 0
    feedback = (course / "feedback" / "broken" / stem("02") / f"{stem('02')}.html").read_text()
    assert "SyntaxError" in feedback


def test_feedback_shows_the_student_s_lines_not_the_library_s(graded):
    course, _ = graded
    pages = sorted((course / "feedback").glob("*/*/*.html"))
    assert len(pages) == 8                                      # every graded notebook, none for the non-JSON one
    for page in pages:
        text = page.read_text()
        for leak in ("site-packages", str(ROOT / "minimf"), "CellTimeoutError", "Timeout"):
            assert leak not in text, f"{page}: {leak}"
    stubs = (course / "feedback" / "stubs" / stem("09") / f"{stem('09')}.html").read_text()
    assert "Task 9.1: average-pooling backward" in stubs and "frames inside minimf" in stubs


def test_a_rebuilt_release_never_overwrites_a_student_s_work(graded, tmp_path):
    from minimf.course.build import build_course
    from minimf.course.grade import grade_rows
    course, rows = graded
    work = {path: path.read_bytes() for folder in ("submitted", "autograded", "feedback")
            for path in (course / folder).rglob("*") if path.is_file()}
    lessons = copy_lessons(tmp_path / "lessons", SMALL_COURSE)
    lesson = lessons / f"{stem('02')}.ipynb"
    nb = read_notebook(lesson)
    nb.cells[0].source += "\n\n(An instructor's correction.)"
    nbformat.write(nb, str(lesson))
    config = course / "nbgrader_config.py"
    config.write_text(config.read_text() + "# the instructor's own setting\n")
    build_course(course, lessons, log=lambda *a: None)
    assert config.read_text().endswith("# the instructor's own setting\n")
    released = read_notebook(course / "release" / stem("02") / f"{stem('02')}.ipynb")
    assert "(An instructor's correction.)" in released.cells[0].source
    for path, data in work.items():
        assert path.read_bytes() == data, f"{path} changed"
    assert {(r["student"], r["task"]): r for r in grade_rows(course)} == rows


def test_a_cell_past_the_time_limit_is_stopped_with_one_sentence(tmp_path, monkeypatch):
    from minimf.course.build import build_course
    from minimf.course.feedback import STOPPED
    from minimf.course.grade import grade_course
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    course = tmp_path / "course"
    build_course(course, copy_lessons(tmp_path / "lessons", ["02"]), log=lambda *a: None)
    submit(course, "looper", stem("02"), lambda s, i: filled_in(i).replace(
        "x, W, has_bias = cache", "x, W, has_bias = cache\n    while True:\n        pass"))
    (row,) = grade_course(course, timeout=3, log=lambda *a: None)
    assert row["points"] == 0 and row["status"] == "graded"
    graded = read_notebook(course / "autograded" / "looper" / stem("02") / f"{stem('02')}.ipynb")
    errors = [out for cell in graded.cells for out in cell.get("outputs", []) if out.output_type == "error"]
    assert [e.traceback for e in errors] == [[STOPPED]]
    assert "Timeout" not in (course / "feedback" / "looper" / stem("02") / f"{stem('02')}.html").read_text()


def test_the_exchange_loop_needs_no_hand_work(tmp_path, monkeypatch):
    """release_assignment (instructor), fetch_assignment and submit (a student, elsewhere), then grade:
    the exchange is set up by build, and grade collects before it grades."""
    from minimf.course.build import build_course, nbgrader
    from minimf.course.grade import grade_course
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    course, home = tmp_path / "course", tmp_path / "home"
    home.mkdir()
    build_course(course, copy_lessons(tmp_path / "lessons", ["02"]), log=lambda *a: None)
    name = stem("02")
    exchange = [f"--Exchange.root={course / 'exchange'}", "--course", "minimf"]
    for args, where in ((["release_assignment", name], course), (["fetch_assignment", name] + exchange, home),
                        (["submit", name] + exchange, home)):
        result = nbgrader(args, where)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (row,) = grade_course(course, log=lambda *a: None)
    assert row["assignment"] == name and row["status"] == "graded" and row["points"] == 0     # the stub, as fetched
    assert list((course / "submitted").glob(f"*/{name}/{name}.ipynb"))


def test_the_student_edition_keeps_the_learner_s_notebooks(tmp_path):
    from minimf.course.build import student_edition
    lessons = copy_lessons(tmp_path / "lessons", ["02", "04"])
    folder = tmp_path / "mine"
    written, kept = student_edition(folder, lessons, log=lambda *a: None)
    assert sorted(written) == ["02_dense_layer_and_gradient_check.ipynb", "04_mono_forward.ipynb", "mono_forward.svg"]
    assert not kept and (folder / "figures" / "mono_forward.svg").is_file()
    mine = folder / "02_dense_layer_and_gradient_check.ipynb"
    text = mine.read_text()
    assert BEGIN not in text and "dx = dz @ W.T" not in text and "YOUR CODE HERE" in text
    mine.write_text(text.replace("# YOUR CODE HERE", "# my own answer"))
    written, kept = student_edition(folder, lessons, log=lambda *a: None)
    assert written == [] and "02_dense_layer_and_gradient_check.ipynb" in kept
    assert "# my own answer" in mine.read_text()


def test_the_command_line(tmp_path):
    env = _env(tmp_path)
    result = subprocess.run([sys.executable, "-m", "minimf.course", "--help"], capture_output=True, text=True,
                            env=env, cwd=ROOT)
    assert result.returncode == 0 and all(c in result.stdout for c in ("student", "build", "grade"))
    result = subprocess.run([sys.executable, "-m", "minimf.course", "grade", str(tmp_path / "nothing")],
                            capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 2 and "python -m minimf.course build" in result.stderr
    result = subprocess.run([sys.executable, "-m", "minimf.course", "student", str(tmp_path / "s"), "--lessons",
                             str(tmp_path / "none")], capture_output=True, text=True, env=env, cwd=ROOT)
    assert result.returncode == 2 and "no lessons" in result.stderr


def test_the_grading_settings_are_the_same_in_the_config_and_in_grade():
    from minimf.course.grade import CELL_TIMEOUT_S, KERNEL_ARGUMENTS
    config = (LESSONS_DIR / "nbgrader_config.py").read_text()
    assert f"c.Execute.timeout = {CELL_TIMEOUT_S}" in config
    for argument in KERNEL_ARGUMENTS:
        assert repr(argument).replace("'", '"') in config
    from minimf.course.feedback import STOPPED
    namespace = {"get_config": lambda: type("Config", (), {"__getattr__": lambda self, name: self})(),
                 "__file__": str(LESSONS_DIR / "nbgrader_config.py")}
    exec(config.replace("c.Execute.error_on_timeout =", "error_on_timeout ="), namespace)
    assert namespace["error_on_timeout"]["traceback"] == [STOPPED]


# ---------------------------------------------------------------------------------------------------------
# what a student installs

def _secret_lines():
    """Every line of the instructor's solutions that appears nowhere else in the lessons, nor in minimf's own
    code (whose reference implementations, which a student may read, share lines with some solutions)."""
    solution, outside = set(), set()
    for lesson in LESSONS:
        for cell in read_notebook(lesson).cells:
            inside = False
            for line in cell.source.splitlines():
                if line.strip() == BEGIN:
                    inside = True
                elif line.strip() == END:
                    inside = False
                elif line.strip():
                    (solution if inside and is_solution(cell) else outside).add(line.strip())
    library = {line.strip() for path in (ROOT / "minimf").rglob("*.py") for line in path.read_text().splitlines()}
    return {line for line in solution - outside - library if len(line) >= 12}       # not "return", "else:"


def test_the_installed_package_carries_no_solution(tmp_path):
    pytest.importorskip("build", reason="building the wheel and the sdist needs the [test] extra (build)")
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(tmp_path), str(ROOT)],
                            capture_output=True, text=True, timeout=600, env=_env(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,), (sdist,) = tmp_path.glob("*.whl"), tmp_path.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as z:
        files = {name: z.read(name) for name in z.namelist()}
    with tarfile.open(sdist) as t:
        files.update({m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()})
    assert any(name.endswith("minimf/course/grade.py") for name in files)
    assert not [name for name in files if name.endswith(".ipynb")]
    secret = _secret_lines()
    assert len(secret) > 30
    for name, data in files.items():
        text = data.decode("utf-8", "replace")
        lines = {line.strip() for line in text.splitlines()}
        leaked = sorted(secret & lines)
        assert not leaked, f"{name} carries solution lines: {leaked[:5]}"


# ---------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_one_student_s_whole_course_grades_in_a_minute(tmp_path, monkeypatch):
    """The whole course (every lesson) for two students, solutions and stubs; the time per student is printed
    (docs/course.md quotes it)."""
    from minimf.course.build import build_course
    from minimf.course.grade import grade_course
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "jupyter-data"))
    course = tmp_path / "course"
    build_course(course, log=lambda *a: None)
    for lesson in LESSONS:
        submit(course, "solver", lesson.stem, solved)
    start = time.perf_counter()
    rows = grade_course(course, log=print)
    seconds = time.perf_counter() - start
    print(f"one student's whole course: {seconds:.1f} s")
    assert rows and all(r["points"] == r["max_points"] > 0 and r["status"] == "graded" for r in rows), rows
    assert len(rows) == len(TASK_LESSONS)
    for lesson in LESSONS:
        submit(course, "stubs", lesson.stem)
    rows = grade_course(course, log=print)
    assert all(r["points"] == 0 for r in rows if r["student"] == "stubs")
    assert seconds <= 60, f"one student's course took {seconds:.0f} s to grade"
