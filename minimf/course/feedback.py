"""Short error messages in a grading kernel: the student's own lines, never minimf's or NumPy's frames.

``python -m minimf.course grade`` (and the course's nbgrader_config.py) start every kernel with this
module as an IPython extension (``--InteractiveShellApp.extensions=minimf.course.feedback``). An
error in a cell is then shown as the frames of the notebook's own cells and the error's last line;
frames inside minimf, NumPy or the standard library are left out, and a note says so. Errors that
render themselves (``GradientCheckError``, ``ReferenceUsed``: their message is the whole story) show
their message alone, and a cell interrupted at the grading time limit says that it was stopped.
"""
import types

NOTE = "(frames inside minimf and the libraries it calls are left out)"
STOPPED = ("KeyboardInterrupt: this cell was stopped: while grading, each cell has a time limit. "
           "Look for a loop that never ends, or work that needs the whole data set")


def _is_cell(shell, filename):
    """A file name of a notebook cell (ipykernel gives each cell a file of its own)."""
    return filename in getattr(shell.compile, "_filename_map", {}) or filename.startswith("<ipython-input")


def cell_frames(shell, tb):
    """The traceback ``tb`` with only the notebook cells' frames (None if it has none)."""
    frames = []
    while tb is not None:
        if _is_cell(shell, tb.tb_frame.f_code.co_filename):
            frames.append(tb)
        tb = tb.tb_next
    kept = None
    for frame in reversed(frames):
        kept = types.TracebackType(kept, frame.tb_frame, frame.tb_lasti, frame.tb_lineno)
    return kept, len(frames)


def short_traceback(shell, etype, value, tb, tb_offset=None):
    """A structured traceback (a list of strings) of the cells' frames only; also shown, as IPython's
    custom exception handlers must do themselves."""
    if issubclass(etype, SyntaxError):            # IPython's own display: the line and a caret
        shell.showsyntaxerror()
        return None
    if hasattr(value, "_render_traceback_"):
        stb = value._render_traceback_()
    elif issubclass(etype, KeyboardInterrupt):
        stb = [STOPPED]
    else:
        kept, count = cell_frames(shell, tb)
        hidden = count < _length(tb) - 1          # the first frame is IPython's own exec
        stb = shell.InteractiveTB.structured_traceback(etype, value, kept, tb_offset=0)
        if hidden:
            stb = stb + [NOTE]
    shell._showtraceback(etype, value, stb)
    return stb


def _length(tb):
    count = 0
    while tb is not None:
        count, tb = count + 1, tb.tb_next
    return count


def load_ipython_extension(shell):
    shell.set_custom_exc((Exception, KeyboardInterrupt), short_traceback)


def unload_ipython_extension(shell):
    shell.set_custom_exc((), None)
