"""The course built from the lessons (lessons/NN_*.ipynb), on nbgrader.

One file, one idea:

    build.py      one nbgrader assignment per lesson (build_course), the student edition (student_edition)
    grade.py      autograde every submission with the grading settings built in; grades.csv, feedback
    modes.py      SMALL and GRADING, the two modes a lesson reads from the environment
    integrity.py  without(reference, task=...): a graded test grades the student's code, not minimf's
    feedback.py   the grading kernel's short error messages (an IPython extension)
    __main__.py   python -m minimf.course student | build | grade DIR

The instructor's page is docs/course.md. Nothing here holds a solution: those are only in the
lessons, between nbgrader's markers, and nbgrader cuts them.
"""
