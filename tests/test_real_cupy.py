"""The strict CuPy stand-in and minimf held against the real CuPy package, on a machine without a GPU.

The real CuPy imports without a CUDA driver (the test extra installs it on Linux x86-64): its names,
signatures and ``cupy.fuse`` tracer are all there, and only what needs a CUDA context fails
(``cudaErrorInsufficientDriver``). So these tests check, with no GPU:

* every name minimf calls on the array module exists in CuPy and every call binds to CuPy's
  signature (found by scanning minimf's source: ``xp.NAME``, ``self.xp.NAME``,
  ``get_array_module(...).NAME``, the names minimf gives the array module by convention);
* every name the stand-in exposes (module functions, ``cuda``, ``lib``, ndarray methods, properties
  and dunders, the classes under ``cuda``) exists in CuPy, and no signature of the stand-in takes
  a call CuPy's refuses; the stand-in exposes nothing CuPy lacks but its instruments;
* every fused kernel of minimf (minimf/nn/optim.py) traces under the real ``cupy.fuse`` into one
  ``ElementwiseKernel``, without CuPy's fallback to its second tracer (which Python control flow on
  a fused value, or indexing, would cause), and writes the arguments the stand-in writes;
* ``get_backend("cupy")`` without a driver is a ``BackendError`` with a message.

Method calls on arrays cannot be found in the source with certainty (``x.get()`` may be a dict's),
so those are held through the stand-in instead: it has only CuPy's methods, with CuPy's signatures,
so a call minimf makes on a device array in any test on the "cupy" backend would fail there first.
"""
import ast
import functools
import inspect
import math
import re
import types
from pathlib import Path

import numpy as np
import pytest

import minimf
from minimf.backend import BackendError, gpu_available, get_backend
from minimf.testing import strict_cupy as sc

cupy = pytest.importorskip(
    "cupy", reason="the real CuPy is not installed (pip install -e '.[test]' installs it on Linux x86-64)")

ROOT = Path(minimf.__file__).parent.parent
P = inspect.Parameter
POSITIONAL = (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)
CLASS_MACHINERY = {"__dict__", "__weakref__", "__module__", "__doc__", "__qualname__", "__firstlineno__",
                   "__static_attributes__", "__slots__", "__annotations__"}
# What minimf calls on the array module that the stand-in lacks, and why.
NOT_IN_THE_STAND_IN = {
    "cuda.MemoryHook": "GPU memory is measured on CuPy's memory pool, which the stand-in has not "
                       "(minimf/experiments/measure.py refuses the stand-in before it asks)",
}


# -- signatures -----------------------------------------------------------------------------------

def signature_of(obj):
    """The signature of a CuPy (or stand-in) callable: inspect's, else the one Cython writes on the
    first line of the docstring (``_ndarray_base.sum(self, axis=None, ...) -> _ndarray_base``,
    ``exp(x, /, out=None, \\*, casting='same_kind', dtype=None)``); None where neither says."""
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        pass
    doc = (getattr(obj, "__doc__", None) or "").strip()
    match = re.match(r"^[\w.]*\((.*)\)(\s*->.*)?$", doc.splitlines()[0] if doc else "")
    if not match:
        return None
    params = []
    for param in split_params(match.group(1).replace("\\*", "*")):
        param = re.sub(r"^(?:[A-Za-z_][\w.]*\s+)+(?=\*{0,2}[A-Za-z_])", "", param.strip())   # C types
        params.append(param)
    namespace = {}
    try:
        exec(f"def f({', '.join(params)}): pass", {}, namespace)
    except (SyntaxError, NameError):
        return None
    return inspect.signature(namespace["f"])


def split_params(text):
    depth, current, out = 0, "", []
    for char in text:
        depth += char in "([{" and 1 or char in ")]}" and -1 or 0
        if char == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += char
    return out + ([current] if current.strip() else [])


def leniencies(mine, theirs, operator=False):
    """The calls the stand-in's signature ``mine`` accepts that CuPy's ``theirs`` refuses, in words.
    ``operator``: a dunder, only ever called positionally (names do not matter)."""
    problems = []
    m_params, t_params = list(mine.parameters.values()), list(theirs.parameters.values())
    m_pos = [p for p in m_params if p.kind in POSITIONAL]
    t_pos = [p for p in t_params if p.kind in POSITIONAL]
    t_varargs = any(p.kind == P.VAR_POSITIONAL for p in t_params)
    t_varkw = any(p.kind == P.VAR_KEYWORD for p in t_params)
    t_keywords = {p.name: p for p in t_params if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)}
    for i, p in enumerate(m_pos):
        if i >= len(t_pos) and not t_varargs:
            problems.append(f"takes {p.name!r} as positional argument {i + 1}; CuPy takes {len(t_pos)}")
        elif (not operator and i > 0 and p.kind == P.POSITIONAL_OR_KEYWORD and i < len(t_pos)
              and (t_pos[i].kind != P.POSITIONAL_OR_KEYWORD or t_pos[i].name != p.name)):
            problems.append(f"argument {i + 1} is {p.name!r}, by keyword too; CuPy's is {t_pos[i].name!r} "
                            f"({t_pos[i].kind.description})")
    for p in m_params:
        if p.kind == P.VAR_POSITIONAL and not t_varargs:
            problems.append(f"takes *{p.name}; CuPy takes no more positional arguments")
        elif p.kind == P.VAR_KEYWORD and not t_varkw:
            problems.append(f"takes **{p.name}; CuPy takes only its named keywords")
        elif (not operator and p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY) and p.name not in t_keywords
              and not t_varkw and not (p.kind == P.POSITIONAL_OR_KEYWORD and m_params.index(p) == 0)):
            problems.append(f"takes the keyword {p.name!r}, which CuPy does not")
    for i, t in enumerate(t_params):
        if t.default is not P.empty or t.kind in (P.VAR_POSITIONAL, P.VAR_KEYWORD):
            continue
        m = mine.parameters.get(t.name) if not operator else None
        if m is None and t.kind in POSITIONAL and t_pos.index(t) < len(m_pos):
            m = m_pos[t_pos.index(t)]
        if m is None or m.default is not P.empty:
            problems.append(f"lets a call leave out {t.name!r}, which CuPy requires")
    return problems


def callable_problems(name, mine, theirs):
    """Problems of the stand-in's callable ``mine`` against CuPy's ``theirs``: [] when its signature
    takes no call CuPy's refuses (or when CuPy's cannot be read, which ``unreadable`` collects)."""
    if not callable(theirs):
        return [f"{name}: CuPy's is not callable ({type(theirs).__name__})"]
    s_mine, s_theirs = signature_of(mine), signature_of(theirs)
    if s_theirs is None:
        UNREADABLE.add(name)
        return []
    if s_mine is None:
        return [f"{name}: the stand-in's signature cannot be read"]
    operator = name.rsplit(".", 1)[-1].startswith("__")
    return [f"{name}{s_mine}: {p} (CuPy: {s_theirs})" for p in leniencies(s_mine, s_theirs, operator)]


UNREADABLE = set()


# -- what the stand-in exposes, against CuPy --------------------------------------------------------

def class_members(cls):
    names = set()
    for klass in cls.__mro__[:-1]:
        names.update(vars(klass))
    return names


def class_problems(path, mine, theirs, instance=None):
    problems = []
    theirs_names = set(dir(theirs))
    for name in sorted(class_members(mine) - CLASS_MACHINERY):
        if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
            continue                                   # the stand-in's own private helpers
        if name not in theirs_names:
            problems.append(f"{path}.{name}: CuPy's {theirs.__name__} has no {name}")
            continue
        mine_attr, theirs_attr = inspect.getattr_static(mine, name), getattr(theirs, name)
        if callable(mine_attr) and not isinstance(mine_attr, (type, property)) and mine_attr is not None:
            problems += callable_problems(f"{path}.{name}", getattr(mine, name), theirs_attr)
    if instance is not None:
        for name in sorted(n for n in getattr(instance, "__dict__", {}) if not n.startswith("_")):
            if name not in theirs_names:
                problems.append(f"{path}().{name}: CuPy's {theirs.__name__} has no {name}")
    return problems


def stand_in_problems(module=sc):
    """Every way the stand-in exposes something CuPy lacks, or takes a call CuPy refuses."""
    problems = []

    def walk(path, mine, theirs):
        if mine is theirs:                             # NumPy's dtypes, which CuPy re-exports
            return
        if isinstance(mine, (types.SimpleNamespace, type(sc.cuda.runtime))) and not isinstance(mine, type):
            for name in sorted(n for n in dir(mine) if not n.startswith("_")):
                if not hasattr(theirs, name):
                    problems.append(f"{path}.{name}: CuPy has no {path}.{name}")
                else:
                    walk(f"{path}.{name}", getattr(mine, name), getattr(theirs, name))
        elif isinstance(mine, type):
            if not isinstance(theirs, type):
                problems.append(f"{path}: a class here, a {type(theirs).__name__} in CuPy")
                return
            if issubclass(mine, BaseException):
                for base in (RuntimeError, MemoryError):
                    if issubclass(theirs, base) and not issubclass(mine, base):
                        problems.append(f"{path}: CuPy's is a {base.__name__}, the stand-in's is not")
                return
            problems.extend(callable_problems(path, mine, theirs))
            problems.extend(class_problems(path, mine, theirs, INSTANCES.get(path, lambda: None)()))
        elif callable(mine):
            problems.extend(callable_problems(path, mine, theirs))
        elif not values_equal(mine, theirs):
            problems.append(f"{path}: {mine!r} here, {theirs!r} in CuPy")

    for name in sorted(n for n in dir(module) if not n.startswith("_") and n not in sc.STAND_IN_ONLY):
        if not hasattr(cupy, name):
            problems.append(f"{name}: CuPy has no cupy.{name}")
        else:
            walk(name, getattr(module, name), getattr(cupy, name))
    return problems


def values_equal(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a is b or a == b


INSTANCES = {
    "cuda.Device": lambda: sc.cuda.Device(0),
    "cuda.Stream": lambda: sc.cuda.Stream(non_blocking=True),
    "cuda.Event": lambda: sc.cuda.Event(),
}


def test_the_stand_in_exposes_only_what_cupy_has_with_compatible_signatures():
    problems = stand_in_problems()
    assert problems == [], "\n".join(problems)
    print(f"{len(UNREADABLE)} CuPy signatures unreadable (existence checked only): {sorted(UNREADABLE)}")


def test_the_stand_in_has_only_cupys_flags_and_fusion_attributes():
    x = sc.zeros(3)
    assert {n for n in dir(x.flags) if not n.startswith("_")} <= set(dir(cupy._core.flags.Flags))
    fused_here, fused_there = sc.fuse(lambda a: a), cupy.fuse(lambda a: a)
    names_here = set(vars(fused_here)) | set(dir(type(fused_here)))
    assert {n for n in names_here if not n.startswith("_")} <= set(dir(fused_there))


def test_the_four_leniencies_are_gone():
    """Issue 28: ``__index__`` and ``__imatmul__`` (CuPy's ndarray has neither: ``@=`` rebinds),
    ``as_strided``'s subok/writeable, Device/Stream/Event at the top level."""
    for name in ("__index__", "__imatmul__"):
        assert not hasattr(cupy.ndarray, name) and not hasattr(sc.ndarray, name)
    assert list(signature_of(sc.lib.stride_tricks.as_strided).parameters) == \
        list(signature_of(cupy.lib.stride_tricks.as_strided).parameters) == ["x", "shape", "strides"]
    for name in ("Device", "Stream", "Event"):
        assert not hasattr(cupy, name) and not hasattr(sc, name)
        assert hasattr(cupy.cuda, name) and hasattr(sc.cuda, name)


# -- must-fail: each check catches the leniency it is for ----------------------------------------------

def test_a_name_cupy_lacks_is_caught(monkeypatch):
    monkeypatch.setattr(sc, "nditer", lambda *a: None, raising=False)          # NumPy has it, CuPy has not
    monkeypatch.setattr(sc.ndarray, "__index__", lambda self: 0, raising=False)
    monkeypatch.setattr(sc.cuda, "GraphOfStreams", object, raising=False)
    problems = "\n".join(stand_in_problems())
    for name in ("nditer: CuPy has no cupy.nditer", "ndarray.__index__", "cuda.GraphOfStreams"):
        assert name in problems


def test_a_more_lenient_signature_is_caught(monkeypatch):
    @sc._declare("(shape, dtype=float, order='C', *, like=None)")       # NumPy's like=, which CuPy lacks
    def zeros(shape, dtype, order, like):
        return None

    monkeypatch.setattr(sc, "zeros", zeros)
    monkeypatch.setattr(sc.lib.stride_tricks, "as_strided", lambda x, shape=None, strides=None, subok=False: x)
    problems = "\n".join(stand_in_problems())
    assert "zeros" in problems and "'like'" in problems
    assert "lib.stride_tricks.as_strided" in problems and "'subok'" in problems


def test_the_signature_comparison():
    def sig(text):
        namespace = {}
        exec(f"def f{text}: pass", {}, namespace)
        return inspect.signature(namespace["f"])
    assert leniencies(sig("(a, b=1)"), sig("(a, b=1, c=2)")) == []              # stricter is fine
    assert leniencies(sig("(a, b=1)"), sig("(a, b)"))                           # lets a call leave out b
    assert leniencies(sig("(a, *, c=1)"), sig("(a, b=1)"))                      # a keyword CuPy lacks
    assert leniencies(sig("(a, b=1)"), sig("(a, /, b=1)")) == []
    assert leniencies(sig("(a, b=1)"), sig("(a, c=1, b=1)"))                    # b is argument 2 by keyword
    assert leniencies(sig("(*args)"), sig("(a, b)"))
    assert leniencies(sig("(a, **kw)"), sig("(a, **kw)")) == []
    assert str(signature_of(cupy.exp)) == "(x, /, out=None, *, casting='same_kind', dtype=None)"
    assert str(signature_of(cupy.ndarray.sum)) == "(self, axis=None, dtype=None, out=None, keepdims=False)"


# -- what minimf calls on the array module ------------------------------------------------------------

def is_array_module(node):
    """``xp``, ``<anything>.xp`` and ``get_array_module(...)``: how minimf names its array module."""
    return (isinstance(node, ast.Name) and node.id == "xp"
            or isinstance(node, ast.Attribute) and node.attr == "xp"
            or isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None))
            == "get_array_module")


def array_module_uses(source, filename="<source>"):
    """[(dotted name after the array module, line, the ast.Call when it is called)] in ``source``."""
    tree = ast.parse(source, filename)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    uses = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or isinstance(parents.get(node), ast.Attribute):
            continue
        names, cur = [], node
        while isinstance(cur, ast.Attribute):
            names.insert(0, cur.attr)
            if is_array_module(cur.value):
                parent = parents.get(node)
                call = parent if isinstance(parent, ast.Call) and parent.func is node else None
                uses.append((".".join(names), node.lineno, call))
                break
            cur = cur.value
    return uses


@functools.lru_cache(maxsize=1)
def minimf_uses():
    files = sorted(ROOT.joinpath("minimf").rglob("*.py")) + sorted(ROOT.joinpath("benchmarks").glob("*.py"))
    uses = []
    for path in files:
        if "testing" in path.relative_to(ROOT).parts:
            continue
        for name, line, call in array_module_uses(path.read_text(), str(path)):
            uses.append((name, f"{path.relative_to(ROOT)}:{line}", call))
    return tuple(uses)


def resolve(module, dotted):
    obj = module
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def call_problems(name, where, call, target):
    """Does the call's pattern (how many positional arguments, which keywords) bind to CuPy's
    ``target``? Calls with ``*args`` or ``**kwargs`` are not checked."""
    if call is None or any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return []
    signature = signature_of(target)
    if signature is None:
        UNREADABLE.add(name)
        return []
    try:
        signature.bind(*range(len(call.args)), **{k.arg: None for k in call.keywords})
    except TypeError as err:
        return [f"{where}: xp.{name}({', '.join(['_'] * len(call.args) + [k.arg + '=' for k in call.keywords])}) "
                f"does not bind to CuPy's {name}{signature}: {err}"]
    return []


def test_every_name_minimf_calls_on_the_array_module_is_cupys():
    uses = minimf_uses()
    assert len({name for name, _, _ in uses}) > 20          # the scan sees minimf's calls
    problems = []
    for name, where, call in uses:
        try:
            target = resolve(cupy, name)
        except AttributeError:
            problems.append(f"{where}: xp.{name}: CuPy has no cupy.{name}")
            continue
        problems += call_problems(name, where, call, target)
    assert problems == [], "\n".join(problems)


def test_the_stand_in_has_every_name_minimf_calls_but_the_known_ones():
    missing = {}
    for name, where, _ in minimf_uses():
        try:
            resolve(sc, name)
        except AttributeError:
            missing.setdefault(name, where)
    assert set(missing) == set(NOT_IN_THE_STAND_IN), missing


def test_the_scan_finds_a_name_cupy_lacks():
    """Must-fail: a call of a NumPy-only function, through each way minimf names its array module."""
    source = ("def f(x):\n    xp = get_array_module(x)\n    xp.nditer(x)\n    self.xp.cuda.Device(1, 2)\n"
              "    get_array_module(x).zeros(3, like=x)\n")
    uses = array_module_uses(source)
    assert [name for name, _, _ in uses] == ["nditer", "cuda.Device", "zeros"]
    assert not hasattr(cupy, "nditer")
    problems = [p for name, line, call in uses[1:] for p in call_problems(name, line, call, resolve(cupy, name))]
    assert len(problems) == 2 and "like" in problems[1]


# -- the fused kernels under the real cupy.fuse ----------------------------------------------------

def device_free_array(shape, dtype):
    """A cupy.ndarray of this shape and dtype whose memory is a made-up address on device 0: enough
    for cupy.fuse to trace (it reads dtypes and ndim), never read (no GPU here)."""
    dtype = np.dtype(dtype)
    nbytes = max(1, math.prod(shape) * dtype.itemsize)
    memory = cupy.cuda.UnownedMemory(1 << 20, nbytes, None, device_id=0)
    return cupy.ndarray(shape, dtype, memptr=cupy.cuda.MemoryPointer(memory, 0))


FUSED_ARGUMENTS = {        # kernel: (number of arrays, number of scalars), as minimf/nn/optim.py calls them
    "sgd": (2, 1),
    "momentum": (3, 2),
    "adam": (4, 6),
}


def trace(fused, arrays, scalars):
    """Call the real fused function: CuPy traces it (and caches the kernel) before it launches it,
    which fails here for want of a driver. Returns the kernel traced for these arguments."""
    try:
        fused(*arrays, *scalars)
    except Exception as err:  # noqa: BLE001 -- no driver: cudaErrorInsufficientDriver here, others elsewhere
        failure = err
    else:
        pytest.fail("the fused kernel ran: is there a GPU after all?")
    assert fused.new_fusion is None, f"{fused.name}: CuPy fell back to its second tracer"
    assert fused._memo, f"{fused.name} failed before CuPy traced it: {failure!r}"
    return fused._memo


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("name", list(FUSED_ARGUMENTS))
def test_every_fused_kernel_traces_under_the_real_cupy_fuse(name, ndim, dtype):
    """One ElementwiseKernel, no fallback (so no Python control flow on fused values), and it writes
    the arguments the stand-in's fuse writes."""
    if gpu_available():
        pytest.skip("a GPU is present: tests/test_gpu.py runs the fused kernels there")
    from minimf.nn.optim import _make_kernels
    n_arrays, n_scalars = FUSED_ARGUMENTS[name]
    shape = (3, 4)[:ndim]
    t = np.dtype(dtype).type
    scalars = [t(0.9), t(0.1), t(0.999), t(0.001), t(1e-3), t(1e-8)][:n_scalars]
    fused = getattr(_make_kernels(cupy), name)
    memo = trace(fused, [device_free_array(shape, dtype) for _ in range(n_arrays)], scalars)
    (kernel, kwargs), = memo.values()
    assert isinstance(kernel, cupy._core._kernel.ElementwiseKernel) and kwargs == {}
    written_by_cupy = [i for i, p in enumerate(kernel.in_params[:n_arrays]) if not p.is_const]
    assert kernel.out_params == ()

    rng = np.random.default_rng(0)
    arrays = [sc.asarray(rng.uniform(0.1, 1.0, shape).astype(dtype)) for _ in range(n_arrays)]
    before = [a.get() for a in arrays]
    launches = sc.kernel_launches()
    getattr(_make_kernels(sc), name)(*arrays, *scalars)
    assert sc.kernel_launches() - launches == 1
    written_by_stand_in = [i for i, (a, b) in enumerate(zip(arrays, before)) if not np.array_equal(a.get(), b)]
    assert written_by_stand_in == written_by_cupy


def test_control_flow_in_a_fused_function_is_refused_by_both():
    """Must-fail: CuPy's first tracer refuses ``if`` on a fused value ("Can't cast to bool") and falls
    back; the stand-in refuses it outright."""
    def clipped(p, g):
        if g > 0:
            p -= g
    if not gpu_available():
        fused = cupy.fuse()(clipped)
        with pytest.raises(Exception):            # the second tracer needs the device this machine lacks
            fused(device_free_array((3,), "float32"), device_free_array((3,), "float32"))
        assert fused.new_fusion is not None            # the first tracer gave up
    with pytest.raises(TypeError, match="Cannot convert to Python scalar in cupy.fuse"):
        sc.fuse()(clipped)(sc.zeros(3), sc.ones(3))


# -- the backend without a GPU ------------------------------------------------------------------------

def test_the_cupy_backend_without_a_gpu_is_a_clear_error(real_cupy_only):
    if gpu_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendError, match="CuPy .*is installed but cannot reach a CUDA device") as caught:
        get_backend("cupy")
    assert "--backend numpy" in str(caught.value)


def written_arguments(kernel, n_arrays):
    """The array arguments (by position) the traced kernel writes: its non-const parameters."""
    assert isinstance(kernel, cupy._core._kernel.ElementwiseKernel) and kernel.out_params == ()
    return [i for i, p in enumerate(kernel.in_params[:n_arrays]) if not p.is_const]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_step_s_fused_kernels_trace_under_the_real_cupy_fuse(dtype):
    """The loss's row kernel (minimf/nn/losses.py) over C column views, bias + ReLU and the ReLU mask
    (minimf/nn/layers.py): each one ElementwiseKernel, no fallback, writing what the stand-in writes
    (tests/test_fused.py holds their numbers to the references)."""
    if gpu_available():
        pytest.skip("a GPU is present: tests/test_fused.py runs the fused kernels there")
    from minimf.nn import layers, losses
    n, C, H = 6, 10, 5
    logits, grads = device_free_array((n, C), dtype), device_free_array((n, C), dtype)
    y, row_loss = device_free_array((n,), "int64"), device_free_array((n,), dtype)
    columns = [logits[:, c] for c in range(C)] + [grads[:, c] for c in range(C)] + [row_loss]
    fused = losses._make_kernels(cupy).softmax_cross_entropy_rows
    (kernel, _), = trace(fused, [y], [np.dtype(dtype).type(n), *columns]).values()
    # parameters: y, n, then the columns; the written ones are the C gradient columns and the row loss
    assert [p.name for p in kernel.in_params if not p.is_const] == [kernel.in_params[i].name
                                                                   for i in range(2 + C, 2 + 2 * C + 1)]
    z, b, a = device_free_array((n, H), dtype), device_free_array((H,), dtype), device_free_array((n, H), dtype)
    kernels = layers._make_kernels(cupy)
    (kernel, _), = trace(kernels.bias_relu, [z, b], []).values()
    assert written_arguments(kernel, 2) == [0]
    (kernel, _), = trace(kernels.relu_mask, [z, a, device_free_array((n, H), dtype)], []).values()
    assert written_arguments(kernel, 3) == [2]
