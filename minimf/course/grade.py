"""Grading a course built by ``build_course``, with nbgrader's own commands and the settings built in.

    grade_course(course)  collect what students submitted through the exchange, autograde every
                          submission in course/submitted/<student>/<lesson>/, write the feedback
                          (course/feedback/<student>/<lesson>/<lesson>.html) and course/grades.csv

The settings: every kernel runs in grading mode and small mode (``MINIMF_GRADING=1``,
``MINIMF_SMALL=1``: the lessons skip their training cells), with a generous time limit per cell
(``CELL_TIMEOUT_S``), and shows errors as the student's own lines (minimf/course/feedback.py). A
submission that nbgrader cannot grade at all (a notebook that is not valid JSON, say) scores 0 on
its tasks and the grading goes on with the others; nbgrader's log is course/nbgrader.log.

grades.csv has one row per student and task: student, assignment, task, points, max_points,
status ("graded", "not submitted", or "not graded" with the reason in nbgrader.log).
"""
import csv
import re
import time
from pathlib import Path

from minimf.course.build import COURSE_ID, CourseError, nbgrader, tool_environment

CELL_TIMEOUT_S = 300
KERNEL_ARGUMENTS = ["--HistoryManager.hist_file=:memory:", "--InteractiveShellApp.extensions=minimf.course.feedback"]
GRADING_ENVIRONMENT = {"MINIMF_GRADING": "1", "MINIMF_SMALL": "1"}
COLUMNS = ["student", "assignment", "task", "points", "max_points", "status"]
TASK_ID = re.compile(r"^test_(\d+)_(\d+)")


def task_name(grade_id):
    """'test_4_1_mf_local_gradients' -> '4.1' (the grade id itself if it does not look like that)."""
    match = TASK_ID.match(grade_id)
    return f"{int(match.group(1))}.{int(match.group(2))}" if match else grade_id


def _list_argument(values):
    return "[" + ", ".join(repr(v) for v in values) + "]"


def grading_arguments(timeout=CELL_TIMEOUT_S):
    return [f"--Execute.timeout={timeout}", f"--Execute.extra_arguments={_list_argument(KERNEL_ARGUMENTS)}"]


def collect_from_exchange(course, log_file):
    """``nbgrader collect --update`` for every assignment that has something in the exchange's inbound."""
    inbound = course / "exchange" / COURSE_ID / "inbound"
    assignments = sorted({entry.name.rsplit("+", 3)[1] for entry in inbound.glob("*+*+*+*")}) if inbound.is_dir() else []
    for assignment in assignments:
        nbgrader(["collect", assignment, "--update"], course, log=log_file)
    return assignments


def grade_course(course, timeout=CELL_TIMEOUT_S, force=False, log=print):
    """Collect, autograde, write feedback and grades.csv. Returns the rows of grades.csv (dicts)."""
    course = Path(course).resolve()
    if not (course / "nbgrader_config.py").is_file() or not (course / "gradebook.db").is_file():
        raise CourseError(f"{course} is not a built course: python -m minimf.course build {course}")
    log_file = course / "nbgrader.log"
    start = time.perf_counter()
    collected = collect_from_exchange(course, log_file)
    if collected:
        log(f"collected from the exchange: {', '.join(collected)}")
    submitted = course / "submitted"
    if not any(submitted.glob("*/*")):
        raise CourseError(f"nothing to grade: no {submitted}/<student>/<assignment>/ folder")
    env = tool_environment(GRADING_ENVIRONMENT)
    args = ["autograde", "*"] + grading_arguments(timeout) + (["--force"] if force else [])
    autograded = nbgrader(args, course, env=env, log=log_file)
    feedback = nbgrader(["generate_feedback", "*"] + (["--force"] if force else []), course, env=env, log=log_file)
    rows = grade_rows(course)
    write_grades(course / "grades.csv", rows)
    students = sorted({row["student"] for row in rows})
    failed = [row for row in rows if row["status"].startswith("not graded")]
    log(f"graded {len(students)} student(s) in {time.perf_counter() - start:.1f} s: {course / 'grades.csv'}, "
        f"feedback in {course / 'feedback'}")
    if failed or autograded.returncode or feedback.returncode:
        pairs = sorted({(row["student"], row["assignment"]) for row in failed})
        log(f"nbgrader could not grade {len(pairs)} submission(s), scored 0: "
            + ", ".join(f"{s}/{a}" for s, a in pairs) + f" (see {log_file})")
    return rows


def grade_rows(course):
    """One row per student and task, from the gradebook and the folders."""
    from nbgrader.api import Gradebook, MissingEntry
    course = Path(course)
    rows = []
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gradebook:
        tasks = [(assignment.name, notebook.name, cell.name, cell.max_score)
                 for assignment in sorted(gradebook.assignments, key=lambda a: a.name)
                 for notebook in assignment.notebooks for cell in notebook.grade_cells if cell.max_score > 0]
        students = sorted({path.name for path in (course / "submitted").glob("*") if path.is_dir()}
                          | {student.id for student in gradebook.students})
        for student in students:
            for assignment, notebook, cell, max_score in tasks:
                submitted = course / "submitted" / student / assignment / f"{notebook}.ipynb"
                autograded = course / "autograded" / student / assignment / f"{notebook}.ipynb"
                points, status = 0.0, "graded"
                if not submitted.is_file():
                    status = "not submitted"
                elif not autograded.is_file():
                    status = "not graded: nbgrader could not run this notebook (nbgrader.log)"
                else:
                    try:
                        grade = gradebook.find_grade(cell, notebook, assignment, student)
                        points = float(grade.score or 0)
                    except MissingEntry:
                        status = "not graded: no grade in the gradebook (nbgrader.log)"
                rows.append({"student": student, "assignment": assignment, "task": task_name(cell),
                             "points": points, "max_points": float(max_score), "status": status})
    return rows


def write_grades(path, rows):
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
