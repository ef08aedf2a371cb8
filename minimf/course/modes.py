"""The two modes a lesson reads from the environment when it starts.

    from minimf.course.modes import GRADING, SMALL

``SMALL``: a few hundred examples instead of thousands (``MINIMF_SMALL=1``; the test suite runs
every lesson this way). ``GRADING``: the notebook is being autograded (``MINIMF_GRADING=1``, which
``python -m minimf.course grade`` sets, or nbgrader's own ``NBGRADER_EXECUTION=autograde``): the
cells that only train and draw skip, so that a student's whole course grades in seconds; the tasks
and their graded tests run as always. Grading implies small mode.
"""
import os


def flag(name, environ=None):
    """True when the environment variable ``name`` is set to anything but "" or "0"."""
    return (os.environ if environ is None else environ).get(name, "") not in ("", "0")


def grading(environ=None):
    environ = os.environ if environ is None else environ
    return flag("MINIMF_GRADING", environ) or environ.get("NBGRADER_EXECUTION") == "autograde"


GRADING = grading()
SMALL = flag("MINIMF_SMALL") or GRADING
