"""A graded test grades the student's code, not minimf's: the reference is unreachable while it runs.

    from minimf.course.integrity import without
    from minimf.nn.conv import avg_pool_backward

    with without(avg_pool_backward, task="9.1"):
        errors = check_layer(my_avg_pool_forward, my_avg_pool_backward, inputs)   # the student's code runs here
    ...avg_pool_backward(...)                                                      # the reference, outside

Inside the block every given function (a plain function, a method taken from its class, or a class,
whose ``__init__`` is then blocked) has its code replaced by a stub, so it fails however it is
reached: by the name the notebook imported, through another alias, or from inside another minimf
function. A call raises ``ReferenceUsed``, which says why; a call whose error the answer swallowed
is reported when the block ends. The original code is put back on leaving the block.
"""
import contextlib
import types


class ReferenceUsed(AssertionError):
    """The answer called minimf's own implementation of the task it answers."""

    def _render_traceback_(self):      # in a notebook: the message alone, without minimf's frames
        return [f"{type(self).__name__}: {self}"]


_calls = []                            # the names of blocked functions called inside the current block
_message = {}                          # qualified name -> the message its stub raises


def _called(name):
    """Called by a blocked function's stub (found through ``__import__``, whatever its module's globals)."""
    _calls.append(name)
    raise ReferenceUsed(_message[name])


def _stub_code(function, name):
    """Code with ``function``'s free variables (so that it can replace its ``__code__``) that calls ``_called``."""
    free = function.__code__.co_freevars
    inner = "def stub(*args, **kwargs):\n"
    if free:
        inner += f"        {', '.join(free)}\n"
    inner += f"        __import__('minimf.course.integrity', fromlist=['_called'])._called({name!r})\n"
    source = "def outer():\n"
    if free:
        source += f"    {' = '.join(free)} = None\n"
    source += "    " + inner.replace("\n        ", "\n        ") + "    return stub\n"
    namespace = {}
    exec(compile(source, f"<minimf blocks {name}>", "exec"), namespace)
    return namespace["outer"]().__code__


def _function_of(reference):
    """The plain function whose code is swapped, and the name a student knows it by."""
    if isinstance(reference, type):
        return reference.__init__, f"{reference.__module__}.{reference.__qualname__}"
    function = getattr(reference, "__func__", reference)
    if not isinstance(function, types.FunctionType):
        raise TypeError(f"cannot block {reference!r}: not a Python function, method or class")
    return function, f"{function.__module__}.{function.__qualname__}"


@contextlib.contextmanager
def without(*references, task):
    """Make ``references`` unreachable inside the block; fail with a message naming ``task`` if the code
    in the block calls one of them."""
    saved = []
    for reference in references:
        function, name = _function_of(reference)
        _message[name] = (f"Task {task} must be answered with your own code: your answer called {name}, "
                          f"minimf's own implementation, which this test compares it with")
        saved.append((function, function.__code__))
        function.__code__ = _stub_code(function, name)
    start = len(_calls)
    try:
        yield
    finally:
        for function, code in saved:
            function.__code__ = code
        called = _calls[start:]
        del _calls[start:]
    if called:
        raise ReferenceUsed(_message[called[0]])
