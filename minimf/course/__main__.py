"""python -m minimf.course: the course built from the lessons, for instructors and for self-learners.

    python -m minimf.course student DIR    the lessons without their solutions, to work through alone
    python -m minimf.course build DIR      an nbgrader course: one assignment per lesson, release ready
    python -m minimf.course grade DIR      autograde every submission: DIR/grades.csv and feedback

docs/course.md walks through the whole loop, from an empty folder to the grades.
"""
import argparse
import sys

from minimf.course.build import CourseError, build_course, student_edition
from minimf.course.grade import CELL_TIMEOUT_S, grade_course


def build_parser():
    top = argparse.ArgumentParser(prog="python -m minimf.course", description=__doc__.split("\n\n")[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter,
                                  epilog="The whole loop, step by step: docs/course.md.")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    student = commands.add_parser("student", help="write the lessons without their solutions into DIR "
                                  "(a notebook already there is kept: it may hold your answers)")
    build = commands.add_parser("build", help="make DIR an nbgrader course, one assignment per lesson "
                                "(safe to run again: submissions and grades are never touched)")
    grade = commands.add_parser("grade", help="collect, autograde DIR/submitted/<student>/<lesson>/, write "
                                "DIR/grades.csv and DIR/feedback/")
    for command in (student, build, grade):
        command.add_argument("dir", metavar="DIR", help="the folder (created if needed)")
    for command in (student, build):
        command.add_argument("--lessons", metavar="FOLDER", default=None,
                             help="the lesson notebooks (default: lessons/ of this checkout)")
    grade.add_argument("--timeout", type=int, default=CELL_TIMEOUT_S, metavar="S",
                       help=f"time limit per cell in seconds (default {CELL_TIMEOUT_S})")
    grade.add_argument("--force", action="store_true",
                       help="grade again what was graded before (default: only new or newer submissions)")
    return top


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command == "student":
            student_edition(args.dir, args.lessons)
        elif args.command == "build":
            build_course(args.dir, args.lessons)
        else:
            grade_course(args.dir, timeout=args.timeout, force=args.force)
    except CourseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
