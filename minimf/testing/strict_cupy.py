"""A strict CuPy stand-in that runs on the CPU: NumPy underneath, strict exactly where CuPy is.

No machine that tests minimf in CI has a GPU, yet ``--backend cupy`` is the command minimf is built
around. This module lets every CuPy code path run on a CPU and fail where real CuPy would fail, or
where a program would silently go wrong on a GPU:

* **No implicit host conversion.** ``np.asarray(x)``, NumPy functions and ufuncs on a device array,
  and an operator with a NumPy array on the other side raise ``TypeError``, as CuPy does. Host and
  device meet only through ``xp.asarray`` (host -> device) and ``.get()`` / ``asnumpy`` (device ->
  host). (CuPy itself forwards some NumPy functions, ``np.sum(x)`` say, to CuPy through NumPy's
  dispatch protocols; the stand-in refuses them all, because minimf's rule is "no bare ``np.`` on
  device arrays", and a refusal is never more lenient than CuPy.)
* **Host synchronisations are counted.** Reductions return 0-d device arrays, as CuPy's do; every
  device-to-host transfer (``float``, ``int``, ``bool``, ``.item()``, ``.get()``, ``.tolist()``,
  printing, a boolean mask index, whose size the host must learn) adds one to ``host_syncs()``.
  ``kernel_launches()`` counts the operations that would each launch a kernel (a function made by
  ``fuse`` counts once), so a test can tell 12 element-wise passes from one fused kernel.
* **Streams are modelled.** Every array remembers the stream that last wrote it; reading or
  writing it from a stream that has not waited for that write (``synchronize()``, an event wait,
  or the legacy default stream's implicit ordering with blocking streams) raises
  ``StreamOrderError`` naming both streams. Each thread has its own current stream and its own
  current device (new threads start on device 0, as in CUDA); an array used from a thread whose
  current device is another raises ``ValueError``, as CuPy does without peer access.
* **Integer array indices out of range wrap around**, as CuPy's do (NumPy raises): a label 12 of
  10 classes reads class 2, so only a label check catches it.
* ``fuse`` runs the Python function as it is (one "kernel launch").

What it cannot show: kernel speed, cuBLAS's rounding (results here are NumPy's, bit for bit), real
concurrency of streams, memory pools. ``MINIMF_STRICT_CUPY=1`` makes ``get_backend("cupy")`` return
this module; the stand-in has ``MINIMF_STRICT_CUPY_DEVICES`` devices (default 2, so that code for a
second device runs in CI), and ``MINIMF_STRICT_CUPY_MAX_BYTES`` (optional) makes any larger single
allocation raise ``cuda.memory.OutOfMemoryError``, to test out-of-memory handling. No training code
imports this module: ``minimf.backend`` does, when asked to.
"""
import builtins
import itertools
import os
import threading
import types
import weakref
from numbers import Number

import numpy as np

_lock = threading.RLock()
_counts = {"host_syncs": 0, "kernel_launches": 0}
_thread = threading.local()       # per thread: the stream stack, the current device, fuse depth


class StreamOrderError(RuntimeError):
    """An array was read or written on one stream before the stream that last wrote it was waited for."""


def host_syncs():
    """Device-to-host transfers so far (each one makes the host wait for the device)."""
    return _counts["host_syncs"]


def kernel_launches():
    """Operations so far that would launch a kernel on a GPU (a fused function counts once)."""
    return _counts["kernel_launches"]


def _count_sync():
    with _lock:
        _counts["host_syncs"] += 1


# --------------------------------------------------------------------------------------------
# Devices and streams
# --------------------------------------------------------------------------------------------

def device_count():
    """The number of devices the stand-in pretends to have (``MINIMF_STRICT_CUPY_DEVICES``, default 2)."""
    return int(os.environ.get("MINIMF_STRICT_CUPY_DEVICES", "2"))


def _current_device_id():
    return getattr(_thread, "device", 0)   # CUDA: every new thread starts on device 0


class Device:
    """A device by number; ``Device()`` is this thread's current one. ``use()`` makes it current for
    this thread only; ``with Device(i):`` does so until the block ends."""

    def __init__(self, device=None):
        self.id = _current_device_id() if device is None else int(device)
        if not 0 <= self.id < device_count():
            raise _runtime.CUDARuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {self.id}")
        self._previous = []

    def use(self):
        _thread.device = self.id

    def __enter__(self):
        self._previous.append(_current_device_id())
        self.use()
        return self

    def __exit__(self, *exc):
        _thread.device = self._previous.pop()
        return False

    def synchronize(self):
        """The host waits for every stream (of every device: one model for all)."""
        _runtime.deviceSynchronize()

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return hash(self.id)

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


_blocking_streams = weakref.WeakSet()   # ordered with the legacy default stream
_all_streams = weakref.WeakSet()
_done = {}                             # stream -> operations the host knows to be finished
_stream_numbers = itertools.count(1)


class Stream:
    """A CUDA stream: operations queued on one stream run in order; two streams are unordered
    unless one waits for the other. ``non_blocking=False`` (CuPy's default) is ordered with the
    legacy default ("null") stream in both directions; ``non_blocking=True`` with nothing.

    Inside ``with stream:`` this thread's operations are queued on ``stream``.
    """

    def __init__(self, null=False, non_blocking=False, ptds=False):
        self.null = null
        self.non_blocking = bool(non_blocking)
        self.name = "the null stream" if null else (
            f"stream {next(_stream_numbers)}{' (non-blocking)' if non_blocking else ''}")
        self.clock = {self: 0}          # what this stream is known to have waited for: stream -> ops
        _all_streams.add(self)
        if not null and not non_blocking:
            _blocking_streams.add(self)

    def __enter__(self):
        _stream_stack().append(self)
        return self

    def __exit__(self, *exc):
        _stream_stack().pop()
        return False

    def use(self):
        stack = _stream_stack()
        stack[-1:] = [self]
        return self

    def synchronize(self):
        """The host waits for everything queued on this stream (and what it waited for)."""
        with _lock:
            _merge(_done, self.clock)

    def record(self, event=None):
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event):
        """Later operations on this stream wait for what ``event`` recorded."""
        with _lock:
            _merge(self.clock, event.clock)

    def __repr__(self):
        return f"<{self.name}>"

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other


Stream.null = Stream(null=True)


class Event:
    """A mark in a stream: ``record(stream)`` places it, ``stream.wait_event(e)`` makes another
    stream wait for it, ``synchronize()`` makes the host wait for it."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.clock = {}

    def record(self, stream=None):
        stream = get_current_stream() if stream is None else stream
        with _lock:
            self.clock = dict(stream.clock)

    def synchronize(self):
        with _lock:
            _merge(_done, self.clock)


def _merge(clock, other):
    for stream, ops in other.items():
        if clock.get(stream, 0) < ops:
            clock[stream] = ops


def _stream_stack():
    if not hasattr(_thread, "streams"):
        _thread.streams = [Stream.null]
    return _thread.streams


def get_current_stream():
    """This thread's current stream (the null stream unless a ``with stream:`` block is open)."""
    return _stream_stack()[-1]


def _implicit_waits(stream):
    """The legacy default stream waits for every blocking stream, and a blocking stream for the
    default stream, before each of their operations (CUDA's legacy default-stream semantics)."""
    if stream.null:
        for other in list(_blocking_streams):
            _merge(stream.clock, other.clock)
    elif not stream.non_blocking:
        _merge(stream.clock, Stream.null.clock)


def _enqueue(stream):
    """Queue one operation on ``stream``; return its sequence number there."""
    stream.clock[stream] += 1
    return stream.clock[stream]


def _visible(stream, writer):
    """Has ``stream`` waited for the write ``writer`` = (stream, number), or has the host?"""
    if writer is None:
        return True
    source, number = writer
    return source is stream or stream.clock.get(source, 0) >= number or _done.get(source, 0) >= number


def _synchronize_all():
    with _lock:
        for stream in list(_all_streams):
            _merge(_done, stream.clock)


class _Runtime:
    """``cuda.runtime``: the few calls minimf makes."""

    class CUDARuntimeError(RuntimeError):
        pass

    @staticmethod
    def getDeviceCount():
        return device_count()

    @staticmethod
    def getDevice():
        return _current_device_id()

    @staticmethod
    def deviceSynchronize():
        _synchronize_all()


_runtime = _Runtime()


class OutOfMemoryError(MemoryError):
    """Raised, as CuPy's ``cuda.memory.OutOfMemoryError``, for an allocation above
    ``MINIMF_STRICT_CUPY_MAX_BYTES``."""

    def __init__(self, size, total=0, limit=0):
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes).")


cuda = types.SimpleNamespace(Device=Device, Stream=Stream, Event=Event, runtime=_runtime,
                             get_current_stream=get_current_stream,
                             memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError))


# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------

class _Buffer:
    """What the views of one allocation share: the device it lives on and its last write."""
    __slots__ = ("device", "writer")

    def __init__(self, device, writer):
        self.device, self.writer = device, writer


def _refuse_numpy(kind, name):
    return TypeError(f"{kind} {name} was given a CuPy array (minimf strict stand-in): CuPy arrays do not "
                     "convert to NumPy implicitly; use xp.{0} on device arrays, or .get() to copy to the "
                     "host first".format(name.split(".")[-1]))


class ndarray:
    """A device array: a NumPy array that only this module's functions may touch."""

    __array_priority__ = 100
    __hash__ = None

    def __init__(self, *args, **kwargs):
        raise TypeError("make device arrays with xp.asarray, xp.zeros and the like")

    @classmethod
    def _wrap(cls, data, buffer):
        array = object.__new__(cls)
        array._data, array._buffer = data, buffer
        return array

    # --- the host boundary ------------------------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
                        "construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # A NumPy scalar on the left of an operator (np.float32(2) * x) reaches here; CuPy takes it,
        # so do we. Any other NumPy ufunc on a device array (np.exp(x)) is refused: see the module's
        # docstring.
        scalar_operand = builtins.any(isinstance(v, np.generic) for v in inputs)
        if (method == "__call__" and scalar_operand and not kwargs
                and builtins.all(isinstance(v, (ndarray, Number, np.generic)) for v in inputs)):
            return _run(ufunc, inputs)
        raise _refuse_numpy("NumPy's ufunc", f"numpy.{ufunc.__name__}")

    def __array_function__(self, func, types_, args, kwargs):
        raise _refuse_numpy("NumPy's function", f"numpy.{func.__name__}")

    def get(self, stream=None, order="C", out=None):
        """Copy to the host (a NumPy array): the host waits for the current stream."""
        _read_on_host(self)
        return self._data.copy()

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        _run(lambda a: a.__setitem__(Ellipsis, arr), (self,), writes=(self,))

    def __reduce__(self):
        """Pickling copies to the host (a sync) and unpickling copies to the current device, as CuPy's."""
        return asarray, (self.get(),)

    def item(self):
        _read_on_host(self)
        return self._data.item()

    def tolist(self):
        _read_on_host(self)
        return self._data.tolist()

    def __float__(self):
        _read_on_host(self)
        return float(self._data)

    def __int__(self):
        _read_on_host(self)
        return int(self._data)

    def __index__(self):
        _read_on_host(self)
        return self._data.__index__()

    def __bool__(self):
        _read_on_host(self)
        return bool(self._data)

    def __complex__(self):
        _read_on_host(self)
        return complex(self._data)

    def __repr__(self):
        _read_on_host(self)
        return repr(self._data).replace("array(", "array(", 1)

    def __str__(self):
        _read_on_host(self)
        return str(self._data)

    def __format__(self, spec):
        _read_on_host(self)
        return format(self._data, spec)

    # --- metadata (no device work) ------------------------------------------------------------
    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: self._data.size)
    itemsize = property(lambda self: self._data.itemsize)
    nbytes = property(lambda self: self._data.nbytes)
    strides = property(lambda self: self._data.strides)
    flags = property(lambda self: self._data.flags)
    device = property(lambda self: Device(self._buffer.device))

    def __len__(self):
        return len(self._data)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    @property
    def T(self):
        return _run(lambda a: a.T, (self,))

    # --- indexing -----------------------------------------------------------------------------
    def __getitem__(self, key):
        return _run(lambda a, k: a[k], (self, _wrapped_key(key, self.shape)))

    def __setitem__(self, key, value):
        _refuse_host_array(value)
        _run(lambda a, k, v: a.__setitem__(k, v), (self, _wrapped_key(key, self.shape), value), writes=(self,))


def _read_on_host(array):
    """A device-to-host transfer on the current stream: counted, and ordered like any read."""
    _run(lambda a: None, (array,), launch=False)
    _count_sync()
    get_current_stream().synchronize()


def _refuse_host_array(value):
    if isinstance(value, np.ndarray):
        raise TypeError(f"Unsupported type {type(value)} (minimf strict stand-in): move host arrays to "
                        "the device with xp.asarray first")
    if isinstance(value, (list, tuple)):
        for item in value:
            _refuse_host_array(item)


def _wrapped_key(key, shape):
    """The index ``key`` with every integer array index taken modulo its axis length, as CuPy's
    indexing wraps out-of-range indices (NumPy would raise). A boolean mask needs its count of
    True values on the host to size the result: one host sync, as on CuPy."""
    parts = key if isinstance(key, tuple) else (key,)
    consumed = builtins.sum(_axes_indexed(part) for part in parts)
    axis, out = 0, []
    for part in parts:
        if part is Ellipsis:
            axis += len(shape) - consumed
            out.append(part)
        elif part is None:
            out.append(part)
        elif _is_bool_array(part):
            _count_sync()
            axis += _unwrap(part).ndim
            out.append(part)
        elif isinstance(part, (ndarray, np.ndarray, list)):
            index = part if isinstance(part, ndarray) else np.asarray(part)
            if isinstance(index, np.ndarray):
                index = asarray(index)
            out.append(index % shape[axis] if index.dtype.kind in "iu" else index)
            axis += 1
        else:
            out.append(part)
            axis += 1
    return tuple(out) if isinstance(key, tuple) else out[0]


def _axes_indexed(part):
    """How many axes of the indexed array one part of an index uses."""
    if part is None or part is Ellipsis:
        return 0
    return part.ndim if _is_bool_array(part) else 1


def _is_bool_array(part):
    return isinstance(part, (ndarray, np.ndarray)) and part.dtype == bool


# --------------------------------------------------------------------------------------------
# Running an operation: device and stream checks, then NumPy, then the results wrapped
# --------------------------------------------------------------------------------------------

def _unwrap(value):
    if isinstance(value, ndarray):
        return value._data
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v) for v in value)
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    return value


def _device_arrays(value):
    if isinstance(value, ndarray):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _device_arrays(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _device_arrays(v)


def _check_access(array, stream, device, action):
    if array._buffer.device != device:
        raise ValueError(f"The device where the array resides ({array._buffer.device}) is different from the "
                         f"current device ({device}). Peer access is unavailable between these devices.")
    if not _visible(stream, array._buffer.writer):
        raise StreamOrderError(
            f"an array written on {array._buffer.writer[0].name} was {action} on {stream.name} before "
            f"{stream.name} waited for it (synchronize that stream, or record an event there and wait for "
            "it): on a GPU this reads a half-written array")


def _run(func, args, kwargs=None, writes=(), launch=True):
    """Apply ``func`` (NumPy) to ``args`` with device arrays unwrapped; wrap what comes back.

    Every device array among the arguments is checked (right device, its last write visible to
    this thread's current stream); ``writes`` are the arrays the operation writes in place.
    """
    kwargs = kwargs or {}
    stream, device = get_current_stream(), _current_device_id()
    inputs = list(_device_arrays(args)) + list(_device_arrays(kwargs))
    with _lock:
        _implicit_waits(stream)
        for array in inputs:
            _check_access(array, stream, device, "written" if builtins.any(array is w for w in writes) else "read")
    result = func(*_unwrap(args), **_unwrap(kwargs))
    launch = launch and (writes or not _is_view(result, inputs))   # a view (reshape, a slice) runs no kernel
    with _lock:
        number = _enqueue(stream)
        if launch and not getattr(_thread, "fusing", 0):
            _counts["kernel_launches"] += 1
    for array in writes:
        array._buffer.writer = (stream, number)
    return _wrap_result(result, inputs, writes, stream, number, device)


def _is_view(result, inputs):
    return isinstance(result, np.ndarray) and builtins.any(
        result is a._data or np.may_share_memory(result, a._data) for a in inputs)


def _wrap_result(result, inputs, writes, stream, number, device):
    if isinstance(result, tuple):
        return tuple(_wrap_result(r, inputs, writes, stream, number, device) for r in result)
    if isinstance(result, np.generic):
        result = np.asarray(result)           # reductions give 0-d device arrays, as on CuPy
    if not isinstance(result, np.ndarray):
        return result
    for array in writes + tuple(inputs):
        if result is array._data:
            return array
    for array in inputs:                      # a view shares its base's buffer (and its writes)
        if np.may_share_memory(result, array._data):
            return ndarray._wrap(result, array._buffer)
    _check_allocation(result.nbytes)
    return ndarray._wrap(result, _Buffer(device, (stream, number)))


def _check_allocation(nbytes):
    limit = os.environ.get("MINIMF_STRICT_CUPY_MAX_BYTES")
    if limit is not None and nbytes > int(limit):
        raise OutOfMemoryError(nbytes, 0)


def _operator(name, writes_self=False):
    numpy_method = getattr(np.ndarray, name)

    def method(self, other):
        if isinstance(other, np.ndarray):
            raise TypeError(f"Unsupported type {type(other)} (minimf strict stand-in): an operator between a "
                            "CuPy array and a NumPy array; move it with xp.asarray first")
        if not isinstance(other, (ndarray, Number, np.generic)):
            return NotImplemented          # lists, None, ...: Python then tries the other side
        result = _run(numpy_method, (self, other), writes=(self,) if writes_self else ())
        return self if writes_self else result
    method.__name__ = name
    return method


_BINARY = ["add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
           "lshift", "rshift"]
for _name in _BINARY:
    setattr(ndarray, f"__{_name}__", _operator(f"__{_name}__"))
    setattr(ndarray, f"__r{_name}__", _operator(f"__r{_name}__"))
    setattr(ndarray, f"__i{_name}__", _operator(f"__i{_name}__", writes_self=True))
for _name in ["eq", "ne", "lt", "le", "gt", "ge"]:
    setattr(ndarray, f"__{_name}__", _operator(f"__{_name}__"))
for _name in ["neg", "pos", "abs", "invert"]:
    setattr(ndarray, f"__{_name}__", (lambda n: lambda self: _run(getattr(np.ndarray, n), (self,)))(f"__{_name}__"))


def _method(name, writes_self=False):
    def method(self, *args, **kwargs):
        _refuse_host_array(args)
        out = kwargs.get("out")
        writes = (self,) if writes_self else ((out,) if isinstance(out, ndarray) else ())
        return _run(lambda a, *r, **k: getattr(a, name)(*r, **k), (self, *args), kwargs, writes=writes)
    method.__name__ = name
    return method


# The methods and functions minimf, its tests, lessons and benchmarks call on device arrays; anything
# else is missing on purpose (an AttributeError says the stand-in was never checked against it).
_METHODS = ["sum", "mean", "max", "min", "argmax", "reshape", "transpose", "astype", "copy", "ravel", "std",
            "var", "all", "any", "repeat", "flatten", "prod"]
for _name in _METHODS:
    setattr(ndarray, _name, _method(_name))


# --------------------------------------------------------------------------------------------
# The module's functions
# --------------------------------------------------------------------------------------------

def asarray(a, dtype=None, order=None):
    """Host data -> device (queued on the current stream); a device array as it is (or cast)."""
    if isinstance(a, ndarray):
        return a if dtype is None or np.dtype(dtype) == a.dtype else a.astype(dtype)
    if builtins.any(True for _ in _device_arrays(a)):
        raise TypeError("xp.asarray of a list holding device arrays: use xp.stack")
    data = np.array(a, dtype=dtype, order=order or "K", copy=True)
    return _run(lambda: data, ())


def array(a, dtype=None, copy=True, order="K", ndmin=0):
    result = asarray(a, dtype=dtype)
    return result.copy() if copy and isinstance(a, ndarray) else result


def asnumpy(a, stream=None):
    """Device -> host (a sync); a NumPy array is returned as it is."""
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


def get_array_module(*args):
    """This module if any argument is one of its arrays, else NumPy (as ``cupy.get_array_module``)."""
    return _module if builtins.any(isinstance(a, ndarray) for a in args) else np


def fuse(*args, **kwargs):
    """``cupy.fuse``: the function runs as it is, counted as one kernel launch."""
    def decorate(function):
        def fused(*call_args):
            _refuse_host_array(call_args)
            _thread.fusing = getattr(_thread, "fusing", 0) + 1
            try:
                return function(*call_args)
            finally:
                _thread.fusing -= 1
                with _lock:
                    if not _thread.fusing:
                        _counts["kernel_launches"] += 1
        fused.__name__ = getattr(function, "__name__", "fused")
        fused.__doc__ = function.__doc__
        return fused
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return decorate(args[0])
    return decorate


def _function(numpy_function, creates=False):
    """A module function: NumPy's, on device arrays only (host arrays are refused, as by CuPy)."""
    def function(*args, **kwargs):
        _refuse_host_array(args)
        _refuse_host_array(list(kwargs.values()))
        out = kwargs.get("out")
        return _run(numpy_function, args, kwargs, writes=(out,) if isinstance(out, ndarray) else ())
    function.__name__ = numpy_function.__name__
    return function


_FUNCTIONS = ["zeros", "ones", "empty", "full", "zeros_like", "ones_like", "empty_like", "arange", "exp", "log",
              "log1p", "sqrt", "maximum", "multiply", "divide", "abs", "isfinite", "where", "concatenate", "stack",
              "pad", "broadcast_to", "matmul", "ascontiguousarray"]   # what minimf uses, and nothing more
for _name in _FUNCTIONS:   # abs shadows a builtin: the module's own code says builtins.* where it matters
    globals()[_name] = _function(getattr(np, _name))


def result_type(*arrays_and_dtypes):
    """The dtype NumPy's rules give (metadata only: no device work)."""
    return np.result_type(*(a.dtype if isinstance(a, ndarray) else a for a in arrays_and_dtypes))


def _as_strided(x, shape=None, strides=None, subok=False, writeable=True):
    return _run(lambda a: np.lib.stride_tricks.as_strided(a, shape=shape, strides=strides), (x,), launch=False)


lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(as_strided=_as_strided))

for _name in ["float32", "float64", "int32", "int64", "uint8", "bool_", "dtype", "newaxis", "inf", "nan", "pi"]:
    globals()[_name] = getattr(np, _name)

import sys as _sys  # noqa: E402

_module = _sys.modules[__name__]
