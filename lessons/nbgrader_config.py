"""nbgrader configuration of a course built from minimf's lessons.

``python -m minimf.course build DIR`` copies this file to DIR/nbgrader_config.py (docs/course.md).
With it, nbgrader's own commands, run in DIR, find the course, its exchange and the grading settings
that ``python -m minimf.course grade`` uses.
"""
import os

c = get_config()  # noqa: F821 (provided by nbgrader when it reads this file)

c.CourseDirectory.course_id = "minimf"
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))

# nbgrader's exchange (release_assignment, fetch_assignment, submit, collect) inside the course folder;
# on a shared server, give the students' nbgrader the same root (docs/course.md).
c.Exchange.root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "exchange")

# The lessons raise their own stub after each solution region, naming the task
# (raise NotImplementedError("Task 2.1: dense backward")), so the region becomes only a comment.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE"}

# Grading (the same settings as python -m minimf.course grade): a generous limit per cell, and kernels
# that show students their own lines without minimf's or NumPy's frames (minimf/course/feedback.py).
# The lessons skip their training cells while nbgrader autogrades (minimf/course/modes.py).
c.Execute.timeout = 300
c.Execute.extra_arguments = ["--HistoryManager.hist_file=:memory:",
                             "--InteractiveShellApp.extensions=minimf.course.feedback"]
# A cell stopped at the limit shows the kernel's one-line message (minimf.course.feedback.STOPPED), this
# one only if the kernel did not answer; nbgrader adds nothing when the names match.
c.Execute.error_on_timeout = {
    "ename": "KeyboardInterrupt", "evalue": "",
    "traceback": ["KeyboardInterrupt: this cell was stopped: while grading, each cell has a time limit. "
                  "Look for a loop that never ends, or work that needs the whole data set"]}
