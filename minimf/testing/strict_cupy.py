"""A strict CuPy stand-in that runs on the CPU: NumPy underneath, strict exactly where CuPy is.

No machine that tests minimf in CI has a GPU, yet ``--backend cupy`` is the command minimf is built
around. This module lets every CuPy code path run on a CPU and fail where real CuPy would fail, or
where a program would silently go wrong on a GPU:

* **Only what CuPy has.** Every public name here, every method and property of ``ndarray``, and
  every name in ``cuda`` exists in CuPy 14, with a signature that accepts no call CuPy refuses
  (tests/test_real_cupy.py holds it against the real package). The only extras are the
  instruments in ``STAND_IN_ONLY``. Functions and methods bind their arguments against CuPy's
  signature first, so ``xp.zeros(3, like=x)`` (a NumPy keyword CuPy lacks) is a ``TypeError`` here
  too. Anything minimf has never needed is missing on purpose: an ``AttributeError`` says the
  stand-in was never checked against it.
* **No implicit host conversion.** ``np.asarray(x)``, NumPy functions and ufuncs on a device array,
  and an operator with a NumPy array on the other side raise ``TypeError``, as CuPy does. Host and
  device meet only through ``xp.asarray`` (host -> device) and ``.get()`` / ``asnumpy`` (device ->
  host). (CuPy itself forwards some NumPy functions, ``np.sum(x)`` say, to CuPy through NumPy's
  dispatch protocols; the stand-in refuses them all, because minimf's rule is "no bare ``np.`` on
  device arrays", and a refusal is never more lenient than CuPy.) There is no ``__index__``: a
  device array is not a Python integer (``range(x)`` fails on CuPy too).
* **Host synchronisations are counted.** Reductions return 0-d device arrays, as CuPy's do; every
  device-to-host transfer (``float``, ``int``, ``bool``, ``.item()``, ``.get()``, ``.tolist()``,
  printing, a boolean mask index, whose size the host must learn) adds one to ``host_syncs()``.
* **Kernel launches are counted as CuPy launches them.** ``kernel_launches()`` counts, for every
  operation, the kernels CuPy 14 launches for it (with its default ``CUPY_ACCELERATORS=cub``),
  read from CuPy's source: element-wise operations one each, a gather ``a[rows, y]`` four, a
  reduction one or two, a matrix product one cuBLAS call, a fused function one. Each model is
  documented beside it (``_index_launches``, ``_reduction_launches``, ``_matmul_launches``,
  ``_concatenate_launches``, ``_pad_launches``, ``fuse``); memsets and host-to-device copies
  count too (each costs the host a launch). ``launch_record()`` lists them per operation.
* **``fuse`` traces, as CuPy's does.** The function gets stand-ins for CuPy's fusion proxies:
  arithmetic, comparisons, ufuncs, ``where``, in-place operators and ``x[...] = v`` work;
  Python control flow on a fused value (``if x > 0:``), ``float(x)``, ``x.shape`` and indexing are
  refused, as CuPy's tracer refuses them. One fused call is one launch. (A reduction inside a
  fused function, which CuPy allows once at the end, is not in the stand-in; nor are
  ``ElementwiseKernel``, ``ReductionKernel`` and ``RawKernel``, whose CUDA C a CPU cannot run.)
* **Streams are modelled.** Every array remembers the stream that last wrote it; reading or
  writing it from a stream that has not waited for that write (``synchronize()``, an event wait,
  or the legacy default stream's implicit ordering with blocking streams) raises
  ``StreamOrderError`` naming both streams. Each thread has its own current stream and its own
  current device (new threads start on device 0, as in CUDA); an array used from a thread whose
  current device is another raises ``ValueError``, as CuPy does without peer access.
* **Integer array indices out of range wrap around**, as CuPy's do (NumPy raises): a label 12 of
  10 classes reads class 2, so only a label check catches it.

What it cannot show: kernel speed, what cuBLAS and CUB launch inside one call (counted as CuPy
calls them), cuBLAS's rounding (results here are NumPy's, bit for bit), real concurrency of
streams, memory pools. ``MINIMF_STRICT_CUPY=1`` makes ``get_backend("cupy")`` return this module;
the stand-in has ``MINIMF_STRICT_CUPY_DEVICES`` devices (default 2, so that code for a second
device runs in CI), and ``MINIMF_STRICT_CUPY_MAX_BYTES`` (optional) makes any larger single
allocation raise ``cuda.memory.OutOfMemoryError``, to test out-of-memory handling. No training code
imports this module: ``minimf.backend`` does, when asked to.
"""
import builtins as _builtins
import contextlib as _contextlib
import functools as _functools
import itertools as _itertools
import math as _math
import operator as _operator
import os as _os
import sys as _sys
import threading as _threading
import types as _types
import weakref as _weakref
from numbers import Number as _Number

import numpy as _np

# The names this module has that CuPy has not: its instruments. Everything else public is CuPy's.
STAND_IN_ONLY = frozenset({"STAND_IN_ONLY", "host_syncs", "kernel_launches", "launch_record", "StreamOrderError"})

_lock = _threading.RLock()
_counts = {"host_syncs": 0, "kernel_launches": 0}
_records = []                      # the lists of the open launch_record() blocks
_thread = _threading.local()       # per thread: the stream stack, the current device


class StreamOrderError(RuntimeError):
    """An array was read or written on one stream before the stream that last wrote it was waited for."""


def host_syncs():
    """Device-to-host transfers so far (each one makes the host wait for the device)."""
    return _counts["host_syncs"]


def kernel_launches():
    """Kernels (and memsets and host-to-device copies) CuPy would have launched so far: see the
    module's docstring and each operation's model."""
    return _counts["kernel_launches"]


@_contextlib.contextmanager
def launch_record():
    """``with launch_record() as record:`` appends ``(operation, launches)`` to ``record`` for every
    operation that launches at least one kernel inside the block (in any thread)."""
    record = []
    with _lock:
        _records.append(record)
    try:
        yield record
    finally:
        with _lock:
            _records.remove(record)


def _count_sync():
    with _lock:
        _counts["host_syncs"] += 1


def _count_launches(launches, what):
    """Add ``launches`` for the operation ``what`` (call with the lock held)."""
    if launches:
        _counts["kernel_launches"] += launches
        for record in _records:
            record.append((what, launches))


def _signature(spec, name):
    """A function with the parameters ``spec`` (CuPy's signature, as text) that returns its bound
    arguments as a dict: calling it refuses, as CuPy would, any call that CuPy's signature refuses."""
    namespace = {}
    exec(f"def {name}{spec}:\n    return locals()\n", {}, namespace)
    return namespace[name]


def _declare(spec):
    """Decorator: the function binds its arguments against ``spec`` (CuPy's signature) and gets them
    as keyword arguments; ``inspect.signature`` shows ``spec``."""
    def decorate(implementation):
        bind = _signature(spec, implementation.__name__)

        @_functools.wraps(implementation)
        def function(*args, **kwargs):
            return implementation(**bind(*args, **kwargs))
        function.__wrapped__ = bind            # inspect.signature follows it to CuPy's parameters
        return function
    return decorate


# --------------------------------------------------------------------------------------------
# Devices and streams (cuda.Device, cuda.Stream, cuda.Event: CuPy has them under cupy.cuda only)
# --------------------------------------------------------------------------------------------

def _device_count():
    """The number of devices the stand-in pretends to have (``MINIMF_STRICT_CUPY_DEVICES``, default 2)."""
    return int(_os.environ.get("MINIMF_STRICT_CUPY_DEVICES", "2"))


def _current_device_id():
    return getattr(_thread, "device", 0)   # CUDA: every new thread starts on device 0


class _Device:
    """A device by number; ``Device()`` is this thread's current one. ``use()`` makes it current for
    this thread only; ``with Device(i):`` does so until the block ends."""

    def __init__(self, device=None):
        self.id = _current_device_id() if device is None else int(device)
        if not 0 <= self.id < _device_count():
            raise _Runtime.CUDARuntimeError(f"cudaErrorInvalidDevice: invalid device ordinal {self.id}")
        self._previous = []

    def use(self):
        _thread.device = self.id

    def __enter__(self):
        self._previous.append(_current_device_id())
        self.use()
        return self

    def __exit__(self, *args):
        _thread.device = self._previous.pop()
        return False

    def synchronize(self):
        """The host waits for every stream (of every device: one model for all)."""
        _Runtime.deviceSynchronize()

    def __eq__(self, other):                # and no __hash__: CuPy's Device is not hashable
        return isinstance(other, _Device) and other.id == self.id

    def __repr__(self):
        return f"<CUDA Device {self.id}>"


_blocking_streams = _weakref.WeakSet()   # ordered with the legacy default stream
_all_streams = _weakref.WeakSet()
_done = {}                               # stream -> operations the host knows to be finished
_stream_numbers = _itertools.count(1)


class _Stream:
    """A CUDA stream: operations queued on one stream run in order; two streams are unordered
    unless one waits for the other. ``non_blocking=False`` (CuPy's default) is ordered with the
    legacy default ("null") stream in both directions; ``non_blocking=True`` with nothing.

    Inside ``with stream:`` this thread's operations are queued on ``stream``.
    """

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self._null = null
        self._non_blocking = bool(non_blocking)
        self._name = "the null stream" if null else (
            f"stream {next(_stream_numbers)}{' (non-blocking)' if non_blocking else ''}")
        self._clock = {self: 0}          # what this stream is known to have waited for: stream -> ops
        _all_streams.add(self)
        if not null and not non_blocking:
            _blocking_streams.add(self)

    def __enter__(self):
        _stream_stack().append(self)
        return self

    def __exit__(self, *args):
        _stream_stack().pop()
        return False

    def use(self):
        stack = _stream_stack()
        stack[-1:] = [self]
        return self

    def synchronize(self):
        """The host waits for everything queued on this stream (and what it waited for)."""
        with _lock:
            _merge(_done, self._clock)

    def record(self, event=None):
        event = _Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event):
        """Later operations on this stream wait for what ``event`` recorded."""
        with _lock:
            _merge(self._clock, event._clock)

    def __repr__(self):
        return f"<{self._name}>"

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self is other


_Stream.null = _Stream(null=True)


class _Event:
    """A mark in a stream: ``record(stream)`` places it, ``stream.wait_event(e)`` makes another
    stream wait for it, ``synchronize()`` makes the host wait for it."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self._clock = {}

    def record(self, stream=None):
        stream = _get_current_stream() if stream is None else stream
        with _lock:
            self._clock = dict(stream._clock)

    def synchronize(self):
        with _lock:
            _merge(_done, self._clock)


for _class, _name in ((_Device, "Device"), (_Stream, "Stream"), (_Event, "Event")):
    _class.__name__ = _class.__qualname__ = _name


def _merge(clock, other):
    for stream, ops in other.items():
        if clock.get(stream, 0) < ops:
            clock[stream] = ops


def _stream_stack():
    if not hasattr(_thread, "streams"):
        _thread.streams = [_Stream.null]
    return _thread.streams


def _get_current_stream():
    """This thread's current stream (the null stream unless a ``with stream:`` block is open)."""
    return _stream_stack()[-1]


def _implicit_waits(stream):
    """The legacy default stream waits for every blocking stream, and a blocking stream for the
    default stream, before each of their operations (CUDA's legacy default-stream semantics)."""
    if stream._null:
        for other in list(_blocking_streams):
            _merge(stream._clock, other._clock)
    elif not stream._non_blocking:
        _merge(stream._clock, _Stream.null._clock)


def _enqueue(stream):
    """Queue one operation on ``stream``; return its sequence number there."""
    stream._clock[stream] += 1
    return stream._clock[stream]


def _visible(stream, writer):
    """Has ``stream`` waited for the write ``writer`` = (stream, number), or has the host?"""
    if writer is None:
        return True
    source, number = writer
    return source is stream or stream._clock.get(source, 0) >= number or _done.get(source, 0) >= number


def _synchronize_all():
    with _lock:
        for stream in list(_all_streams):
            _merge(_done, stream._clock)


class _Runtime:
    """``cuda.runtime``: the few calls minimf makes."""

    class CUDARuntimeError(RuntimeError):
        pass

    @staticmethod
    def getDeviceCount():
        return _device_count()

    @staticmethod
    def getDevice():
        return _current_device_id()

    @staticmethod
    def deviceSynchronize():
        _synchronize_all()


class _OutOfMemoryError(MemoryError):
    """Raised, as CuPy's ``cuda.memory.OutOfMemoryError``, for an allocation above
    ``MINIMF_STRICT_CUPY_MAX_BYTES``."""

    def __init__(self, size, total, limit=0):
        super().__init__(f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes).")


_OutOfMemoryError.__name__ = _OutOfMemoryError.__qualname__ = "OutOfMemoryError"

cuda = _types.SimpleNamespace(Device=_Device, Stream=_Stream, Event=_Event, runtime=_Runtime(),
                              get_current_stream=_get_current_stream,
                              memory=_types.SimpleNamespace(OutOfMemoryError=_OutOfMemoryError))


# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------

class _Buffer:
    """What the views of one allocation share: the device it lives on and its last write."""
    __slots__ = ("device", "writer")

    def __init__(self, device, writer):
        self.device, self.writer = device, writer


class _Flags:
    """``ndarray.flags``: CuPy's three flags (NumPy's others, ``writeable`` say, CuPy has not)."""
    __slots__ = ("c_contiguous", "f_contiguous", "owndata")

    def __init__(self, flags):
        self.c_contiguous, self.f_contiguous, self.owndata = flags.c_contiguous, flags.f_contiguous, flags.owndata

    fnc = property(lambda self: self.f_contiguous and not self.c_contiguous)
    forc = property(lambda self: self.f_contiguous or self.c_contiguous)

    def __getitem__(self, name):
        return {"C_CONTIGUOUS": self.c_contiguous, "F_CONTIGUOUS": self.f_contiguous,
                "OWNDATA": self.owndata}[name]

    def __repr__(self):
        return "\n".join(f"  {k} : {self[k]}" for k in ("C_CONTIGUOUS", "F_CONTIGUOUS", "OWNDATA"))


def _refuse_numpy(kind, name):
    return TypeError(f"{kind} {name} was given a CuPy array (minimf strict stand-in): CuPy arrays do not "
                     "convert to NumPy implicitly; use xp.{0} on device arrays, or .get() to copy to the "
                     "host first".format(name.split(".")[-1]))


def _contiguous(data):
    return data.flags.c_contiguous or data.flags.f_contiguous


class ndarray:
    """A device array: a NumPy array that only this module's functions may touch."""

    __slots__ = ("_data", "_buffer")
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
    def __array__(self, dtype=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. Please use `.get()` to "
                        "construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # A NumPy scalar on the left of an operator (np.float32(2) * x) reaches here; CuPy takes it,
        # so do we. Any other NumPy ufunc on a device array (np.exp(x)) is refused: see the module's
        # docstring.
        scalar_operand = _builtins.any(isinstance(v, _np.generic) for v in inputs)
        if (method == "__call__" and scalar_operand and not kwargs
                and _builtins.all(isinstance(v, (ndarray, _Number, _np.generic)) for v in inputs)):
            return _run(ufunc, inputs, what=ufunc.__name__)
        raise _refuse_numpy("NumPy's ufunc", f"numpy.{ufunc.__name__}")

    def __array_function__(self, func, types, args, kwargs):
        raise _refuse_numpy("NumPy's function", f"numpy.{func.__name__}")

    @_declare("(self, stream=None, order='C', out=None, blocking=True)")
    def get(self, stream, order, out, blocking):
        """Copy to the host (a NumPy array): the host waits for the stream. An array that is not
        contiguous in ``order`` is first copied on the device (one launch), as CuPy does."""
        if out is not None:
            if not isinstance(out, _np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            if out.dtype != self.dtype or out.shape != self.shape:
                raise ValueError(f"Shape mismatch. Expected shape: {self.shape}, actual shape: {out.shape}")
            relayout = not (out.flags.c_contiguous and self._data.flags.c_contiguous
                            or out.flags.f_contiguous and self._data.flags.f_contiguous)
        else:
            order = {"A": "F" if self._data.flags.f_contiguous else "C"}.get(order.upper(), order.upper())
            relayout = self.size > 0 and not (order == "C" and self._data.flags.c_contiguous
                                              or order == "F" and self._data.flags.f_contiguous)
        _read_on_host(self, stream, launches=int(relayout))
        if out is not None:
            out[...] = self._data
            return out
        return _np.array(self._data, order=order, copy=True)

    @_declare("(self, arr, stream=None)")
    def set(self, arr, stream):
        """Host -> this array, in place (one host-to-device copy)."""
        if not isinstance(arr, _np.ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if arr.dtype != self.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if arr.shape != self.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        if not _contiguous(self._data):
            raise RuntimeError("Cannot set to non-contiguous array")
        _run(lambda a: a.__setitem__(Ellipsis, arr), (self,), writes=(self,), launches=int(arr.size > 0),
             what="set (host-to-device copy)", stream=stream)

    def __reduce__(self):
        """Pickling copies to the host (a sync) and unpickling copies to the current device, as CuPy's."""
        return asarray, (self.get(),)

    @_declare("(self)")
    def item(self):
        _read_on_host(self)
        return self._data.item()

    @_declare("(self)")
    def tolist(self):
        _read_on_host(self, launches=int(self.size > 0 and not self._data.flags.c_contiguous))
        return self._data.tolist()

    def __float__(self):
        _read_on_host(self)
        return float(self._data)

    def __int__(self):
        _read_on_host(self)
        return int(self._data)

    def __bool__(self):
        _read_on_host(self)
        return bool(self._data)

    def __complex__(self):
        _read_on_host(self)
        return complex(self._data)

    def __repr__(self):
        _read_on_host(self)
        return repr(self._data)

    def __str__(self):
        _read_on_host(self)
        return str(self._data)

    def __format__(self, format_spec):
        _read_on_host(self)
        return format(self._data, format_spec)

    # --- metadata (no device work) ------------------------------------------------------------
    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: self._data.size)
    itemsize = property(lambda self: self._data.itemsize)
    nbytes = property(lambda self: self._data.nbytes)
    strides = property(lambda self: self._data.strides)
    flags = property(lambda self: _Flags(self._data.flags))
    device = property(lambda self: _Device(self._buffer.device))

    def __len__(self):
        return len(self._data)

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self)))

    @property
    def T(self):
        return _run(lambda a: a.T, (self,), launches=0)

    # --- indexing -----------------------------------------------------------------------------
    def __getitem__(self, slices):
        launches, what, masks = _index_launches(self, slices, setting=False)
        _read_mask_counts(masks)            # the size of a[mask] is a count the host must read first
        return _run(lambda a, k: a[_numpy_index(k, a.shape)], (self, slices), launches=launches, what=what)

    def __setitem__(self, slices, value):
        _refuse_host_array(value)
        launches, what, masks = _index_launches(self, slices, setting=True, value=value)
        _read_mask_counts(masks)
        _run(lambda a, k, v: a.__setitem__(_numpy_index(k, a.shape), v), (self, slices, value),
             writes=(self,), launches=launches, what=what)


def _read_on_host(array, stream=None, launches=0):
    """A device-to-host transfer on the current stream (or ``stream``): counted, and ordered like any
    read; ``launches``: the device copies it needs first (a non-contiguous array)."""
    _run(lambda a: None, (array,), launches=launches, what="copy before a transfer to the host", stream=stream)
    _count_sync()
    (stream or _get_current_stream()).synchronize()


def _read_mask_counts(masks):
    """CuPy reads the count of True values of each boolean mask index back to the host (a host mask
    is copied to the device first): one sync each."""
    for mask in masks:
        if isinstance(mask, ndarray):
            _read_on_host(mask)
        else:
            _count_sync()


def _refuse_host_array(value):
    if isinstance(value, _np.ndarray):
        raise TypeError(f"Unsupported type {type(value)} (minimf strict stand-in): move host arrays to "
                        "the device with xp.asarray first")
    if isinstance(value, (list, tuple)):
        for item in value:
            _refuse_host_array(item)


# --------------------------------------------------------------------------------------------
# Indexing: integer indices wrap, as on CuPy; how many kernels a gather or a scatter launches
# --------------------------------------------------------------------------------------------

def _index_parts(slices):
    return list(slices) if isinstance(slices, tuple) else [slices]


def _is_bool_array(part):
    return isinstance(part, (ndarray, _np.ndarray)) and part.dtype == bool


def _is_int_array(part):
    return isinstance(part, (ndarray, _np.ndarray, list)) and not _is_bool_array(part)


def _numpy_index(key, shape):
    """The NumPy index for ``key`` (device arrays already unwrapped), every integer array index taken
    modulo its axis length, as CuPy's indexing wraps out-of-range indices (NumPy would raise)."""
    parts = [_np.asarray(p) if isinstance(p, list) else p for p in _index_parts(key)]
    consumed = _builtins.sum(0 if p is None or p is Ellipsis else (p.ndim if _is_bool_array(p) else 1)
                             for p in parts)
    axis, out = 0, []
    for part in parts:
        if part is Ellipsis:
            axis += len(shape) - consumed
        elif part is None:
            pass
        elif _is_bool_array(part):
            axis += part.ndim
        else:
            if isinstance(part, _np.ndarray) and part.dtype.kind in "iu" and axis < len(shape) and shape[axis]:
                part = part % shape[axis]
            axis += 1
        out.append(part)
    return tuple(out) if isinstance(key, tuple) else out[0]


def _scan_launches(n):
    """CuPy's prefix sum of n values (``_routines_math.scan``, chunks of 512): one kernel for a chunk,
    else a block-sum kernel, the scan of the block sums, and the scan kernel."""
    return 1 if n <= 512 else 2 + _scan_launches(-(-n // 512))


def _index_launches(a, slices, setting, value=None):
    """(launches, label, boolean masks) of ``a[slices]`` (a gather) or ``a[slices] = value``
    (a scatter) on CuPy (``cupy/_core/_routines_indexing.pyx``):

    * basic indexing (integers, slices, ``None``, ``...``): a view, 0 launches; setting it is one
      copy or fill kernel, or none when the value is that very view (``a[s] += v`` writes back the
      view it changed in place);
    * a host index (list, NumPy array) is first copied to the device: +1 each;
    * one integer array: one kernel (``take``, or the scatter kernel);
    * k >= 2 integer arrays (``a[rows, y]``): the flat index is built first, a memset
      (``reduced_idx.fill(0)``) and one ``cupy_prepare_array_indexing`` kernel per array, then one
      ``take`` or scatter: k + 2 (4 for a two-array gather, and ``a[rows, y] -= 1`` is 4 + 1 + 4);
    * one boolean mask: a prefix sum of the mask (``_scan_launches``), whose last value the host
      reads (a sync), then one kernel; a mask not covering ``a`` from axis 0 is scanned twice. Masks
      mixed with integer arrays become index arrays (``argwhere``: a scan, a sync and a kernel each);
    * a scatter of a value that is not a device array of ``a``'s dtype converts it first: +1
      (a Python scalar is copied to the device, another dtype cast);
    * kernels over no element are not launched.
    """
    parts = _index_parts(slices)
    host = _builtins.sum(1 for p in parts if isinstance(p, (list, _np.ndarray)))
    ints = [p for p in parts if _is_int_array(p)]
    masks = [p for p in parts if _is_bool_array(p)]
    if not ints and not masks:
        if not setting:
            return 0, "getitem (a view)", []
        target = a._data[_numpy_index(_unwrap(slices), a.shape)]
        same = (isinstance(value, ndarray) and value._data.shape == target.shape
                and value._data.strides == target.strides
                and value._data.__array_interface__["data"][0] == target.__array_interface__["data"][0])
        return (0 if same or target.size == 0 else 1), "setitem (a copy or fill)", []
    index_size = _np.broadcast_shapes(*(p.shape if isinstance(p, ndarray) else _np.shape(p) for p in ints))
    convert = int(setting and not (isinstance(value, ndarray) and value.dtype == a.dtype))
    if masks and not ints and len(masks) == 1:
        mask = masks[0]
        covers = len(parts) == 1 and mask.ndim == a.ndim
        scans = _scan_launches(mask.size) * (1 if covers else 2)
        what = "boolean mask " + ("scatter" if setting else "gather")
        return host + scans + int(mask.size > 0) + convert, what, masks
    k = len(ints) + _builtins.sum(m.ndim for m in masks)
    argwheres = _builtins.sum(_scan_launches(m.size) + 1 for m in masks)
    if masks:
        index_size = None          # the count of True values decides it: assume some
    empty = index_size is not None and _math.prod(index_size) == 0
    kernels = 0 if empty else (1 if k == 1 else k + 2)
    what = f"{'scatter' if setting else 'gather'} with {k} integer array{'s' if k > 1 else ''}"
    return host + argwheres + kernels + convert, what, masks


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
            f"an array written on {array._buffer.writer[0]._name} was {action} on {stream._name} before "
            f"{stream._name} waited for it (synchronize that stream, or record an event there and wait for "
            "it): on a GPU this reads a half-written array")


def _begin(inputs, writes, stream=None):
    """Check every device array an operation reads or writes (right device, its last write visible to
    the stream); return (stream, device)."""
    stream, device = stream or _get_current_stream(), _current_device_id()
    with _lock:
        _implicit_waits(stream)
        for array in inputs:
            _check_access(array, stream, device, "written" if _builtins.any(array is w for w in writes) else "read")
    return stream, device


def _finish(result, inputs, writes, launches, what, stream, device):
    """Count the operation's launches, queue it on ``stream``, mark what it wrote; wrap its result."""
    with _lock:
        number = _enqueue(stream)
        _count_launches(launches, what)
    for array in writes:
        array._buffer.writer = (stream, number)
    return _wrap_result(result, inputs, writes, stream, number, device)


def _run(func, args, kwargs=None, writes=(), launches=None, what=None, stream=None):
    """Apply ``func`` (NumPy) to ``args`` with device arrays unwrapped; wrap what comes back.

    Every device array among the arguments is checked (right device, its last write visible to
    this thread's current stream); ``writes`` are the arrays the operation writes in place.
    ``launches``: the kernels CuPy launches for it; None for an element-wise operation: one kernel,
    none when it returns a view of an input or has no element to compute.
    """
    kwargs = kwargs or {}
    inputs = list(_device_arrays(args)) + list(_device_arrays(kwargs))
    writes = tuple(w for w in writes if w is not None)
    stream, device = _begin(inputs, writes, stream)
    result = func(*_unwrap(args), **_unwrap(kwargs))
    if launches is None:
        launches = _elementwise_launches(result, inputs, writes)
    return _finish(result, inputs, writes, launches, what or getattr(func, "__name__", "operation"), stream, device)


def _elementwise_launches(result, inputs, writes):
    """One kernel (CuPy's ``ElementwiseKernel`` or ``ufunc``), none for a view or an empty output."""
    if writes:
        return int(_builtins.any(w.size for w in writes))
    if isinstance(result, tuple):
        return int(_builtins.any(_elementwise_launches(r, inputs, writes) for r in result))
    if isinstance(result, _np.ndarray) and (result.size == 0 or _is_view(result, inputs)):
        return 0
    return 1


def _is_view(result, inputs):
    return isinstance(result, _np.ndarray) and _builtins.any(
        result is a._data or _np.may_share_memory(result, a._data) for a in inputs)


def _wrap_result(result, inputs, writes, stream, number, device):
    if isinstance(result, tuple):
        return tuple(_wrap_result(r, inputs, writes, stream, number, device) for r in result)
    if isinstance(result, _np.generic):
        result = _np.asarray(result)          # reductions give 0-d device arrays, as on CuPy
    if not isinstance(result, _np.ndarray):
        return result
    for array in writes + tuple(inputs):
        if result is array._data:
            return array
    for array in inputs:                      # a view shares its base's buffer (and its writes)
        if _np.may_share_memory(result, array._data):
            return ndarray._wrap(result, array._buffer)
    _check_allocation(result.nbytes)
    return ndarray._wrap(result, _Buffer(device, (stream, number)))


def _check_allocation(nbytes):
    limit = _os.environ.get("MINIMF_STRICT_CUPY_MAX_BYTES")
    if limit is not None and nbytes > int(limit):
        raise _OutOfMemoryError(nbytes, 0)


# --------------------------------------------------------------------------------------------
# Operators: one element-wise kernel each (matrix products: _matmul_launches)
# --------------------------------------------------------------------------------------------

def _array_operator(name, writes_self=False):
    numpy_method = getattr(_np.ndarray, name)

    def method(self, other):
        if isinstance(other, _np.ndarray):
            raise TypeError(f"Unsupported type {type(other)} (minimf strict stand-in): an operator between a "
                            "CuPy array and a NumPy array; move it with xp.asarray first")
        if not isinstance(other, (ndarray, _Number, _np.generic)):
            return NotImplemented          # lists, None, ...: Python then tries the other side
        if name in ("__matmul__", "__rmatmul__"):
            a, b = (self, other) if name == "__matmul__" else (other, self)
            if not isinstance(a, ndarray) or not isinstance(b, ndarray):
                raise ValueError("Scalar operands are not allowed, use '*' instead")
            return matmul(a, b)
        result = _run(numpy_method, (self, other), writes=(self,) if writes_self else (), what=name)
        return self if writes_self else result
    method.__name__ = name
    return method


_BINARY = ["add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
           "lshift", "rshift"]
for _name in _BINARY:
    setattr(ndarray, f"__{_name}__", _array_operator(f"__{_name}__"))
    setattr(ndarray, f"__r{_name}__", _array_operator(f"__r{_name}__"))
    if _name != "matmul":      # CuPy has no __imatmul__: `a @= b` makes a new array and rebinds a
        setattr(ndarray, f"__i{_name}__", _array_operator(f"__i{_name}__", writes_self=True))
for _name in ["eq", "ne", "lt", "le", "gt", "ge"]:
    setattr(ndarray, f"__{_name}__", _array_operator(f"__{_name}__"))
for _name in ["neg", "pos", "abs", "invert"]:
    setattr(ndarray, f"__{_name}__",
            (lambda n: lambda self: _run(getattr(_np.ndarray, n), (self,), what=n))(f"__{_name}__"))


# --------------------------------------------------------------------------------------------
# Reductions: how many kernels CuPy launches for one
# --------------------------------------------------------------------------------------------

_CUB_DTYPES = {_np.dtype(t) for t in ("int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                                      "float16", "float32", "float64", "complex64", "complex128")}
_CUB_SUM_DTYPES = {_np.dtype(t) for t in ("int64", "uint64", "float16", "float32", "float64", "complex64",
                                          "complex128")}
_INT_MAX = 0x7fffffff


def _reduce_axes(axis, ndim):
    if axis is None:
        reduce_axis = tuple(range(ndim))
    else:
        axes = axis if isinstance(axis, (tuple, list)) else (axis,)
        reduce_axis = tuple(sorted(_builtins.int(x) % _builtins.max(ndim, 1) for x in axes))
    return reduce_axis, tuple(i for i in range(ndim) if i not in reduce_axis)


def _axes_contiguous(reduce_axis, ndim, order):
    """CUB's condition: the reduced axes are consecutive, and the last ones (C) or the first (F)."""
    if not reduce_axis or list(reduce_axis) != list(range(reduce_axis[0], reduce_axis[-1] + 1)):
        return False
    return reduce_axis[-1] == ndim - 1 if order == "C" else reduce_axis[0] == 0


def _order(data):
    return "F" if data.flags.f_contiguous else "C" if data.flags.c_contiguous else None


def _cub_device_reduce_launches(n, itemsize):
    """``cub::DeviceReduce``: one kernel when the n values fit one tile of its sm_60..sm_90 policy
    (256 threads x max(1, min(64 // itemsize, 32)) items: 4096 float32, 2048 float64), else two."""
    return 1 if n <= 256 * _builtins.max(1, _builtins.min(64 // itemsize, 32)) else 2


def _reduction_launches(op, data, axis=None, dtype=None, out=None):
    """Kernels CuPy 14 launches for ``a.<op>(axis, dtype, out)`` (``_routines_math.pyx``,
    ``_routines_statistics.pyx``, ``cuda/cub.pyx``, ``_reduction.pyx``, ``_cub_reduction.pyx``),
    with its default ``CUPY_ACCELERATORS=cub``:

    * ``sum``, ``prod``, ``max``, ``min``, ``mean``, ``argmax`` first try CUB's device routines, on a
      C- or F-contiguous array of a dtype CUB takes (``sum``/``prod`` without a dtype: 64-bit ints,
      floats, complex; the others: every int and float): a full reduction is ``cub::DeviceReduce``
      (``_cub_device_reduce_launches``: 1 or 2 kernels; ``argmax`` then casts its index: +1); a
      reduction over the last axes (C order; the first, F order) is ``cub::DeviceSegmentedReduce``,
      one kernel (``argmax`` has no segmented form). ``mean`` divides afterwards: +1.
    * Otherwise CuPy's own reduction kernel: one launch, or CUB's two-pass block reduction (two)
      for a full reduction of a contiguous array of at least 128 values (``all``, ``any``, a sum of
      booleans or int32 go this way). ``mean`` divides inside it.
    * ``out=`` given to a CUB routine: +1 copy; ``mean`` with an explicit ``dtype``: +1 copy (CuPy
      casts the result with ``astype``, which copies). ``var``/``std``: ``_var_launches``.
    """
    ndim, size = data.ndim, data.size
    reduce_axis, out_axis = _reduce_axes(axis, ndim)
    order = _order(data)
    routine = op in ("sum", "prod", "max", "min", "mean", "argmax")
    extra = 0
    if op == "mean":
        if dtype is None and data.dtype.kind in "iub":
            dtype_sum = dtype_out = _np.dtype("float64")
        elif dtype is None:
            dtype_sum = dtype_out = None
        else:
            dtype_sum = dtype_out = _np.dtype(dtype)
        dtype = dtype_sum
        extra += int(dtype_out is not None and out is None)      # result.astype(dtype_out) copies
    if routine and order is not None and size > 0 and not (op == "argmax" and dtype is not None):
        if dtype is None:
            supported = _CUB_SUM_DTYPES if op in ("sum", "prod", "mean") else _CUB_DTYPES
            cub_ok = data.dtype in supported
        else:
            cub_ok = _np.dtype(dtype) == data.dtype and data.dtype in _CUB_DTYPES
        if cub_ok and size <= _INT_MAX:
            itemsize = data.dtype.itemsize + (4 if op == "argmax" else 0)
            copy_out = int(out is not None)
            divide = int(op == "mean")
            if not out_axis:
                return _cub_device_reduce_launches(size, itemsize) + int(op == "argmax") + copy_out + divide + extra
            if op != "argmax" and _axes_contiguous(reduce_axis, ndim, order):
                return 1 + copy_out + divide + extra
    # CuPy's reduction kernel, with CUB's block reduction where it fits
    block_order = "F" if data.flags.f_contiguous else ("C" if data.flags.c_contiguous else None)
    contiguous_size = _math.prod(data.shape[i] for i in reduce_axis)
    block = (block_order is not None and _axes_contiguous(reduce_axis, ndim, block_order)
             and contiguous_size >= 128)
    return (2 if block and not out_axis else 1) + extra


def _var_launches(data, axis, dtype, out, std):
    """``var``: the mean (``keepdims``, in the array's float dtype, so with CuPy's extra cast) and one
    reduction kernel of the squared deviations; ``std`` adds a square root."""
    mean_dtype = "float64" if data.dtype.kind in "iub" else data.dtype
    return _reduction_launches("mean", data, axis, dtype=mean_dtype) + 1 + int(std)


# --------------------------------------------------------------------------------------------
# ndarray methods (signatures: CuPy's)
# --------------------------------------------------------------------------------------------

def _drop_none(**kwargs):
    return {k: v for k, v in kwargs.items() if v is not None}


def _reduction(op, spec):
    @_declare(spec)
    def method(self, axis=None, dtype=None, out=None, keepdims=False, ddof=0):
        _refuse_host_array([out])
        numpy_kwargs = _drop_none(axis=axis, out=out, keepdims=bool(keepdims))
        if op in ("sum", "prod", "mean", "var", "std"):
            numpy_kwargs.update(_drop_none(dtype=dtype))
        if op in ("var", "std"):
            numpy_kwargs["ddof"] = ddof
            launches = _var_launches(self._data, axis, dtype, out, op == "std")
        else:
            launches = _reduction_launches(op, self._data, axis, dtype, out)

        def reduce(a, **kw):
            result = getattr(a, op)(**kw)
            return result.astype(dtype) if op == "argmax" and dtype is not None else result
        return _run(reduce, (self,), numpy_kwargs, writes=(out,), launches=launches, what=op)
    method.__name__ = op
    return method


_REDUCTIONS = {
    "sum": "(self, axis=None, dtype=None, out=None, keepdims=False)",
    "mean": "(self, axis=None, dtype=None, out=None, keepdims=False)",
    "prod": "(self, axis=None, dtype=None, out=None, keepdims=None)",
    "max": "(self, axis=None, out=None, keepdims=False)",
    "min": "(self, axis=None, out=None, keepdims=False)",
    "argmax": "(self, axis=None, out=None, dtype=None, keepdims=False)",
    "all": "(self, axis=None, out=None, keepdims=False)",
    "any": "(self, axis=None, out=None, keepdims=False)",
    "var": "(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False)",
    "std": "(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False)",
}
for _name, _spec in _REDUCTIONS.items():
    setattr(ndarray, _name, _reduction(_name, _spec))


@_declare("(self, *shape, order='C', copy=None)")
def _reshape(self, shape, order, copy):
    """A view where the strides allow one (0 launches), else a copy (1), as CuPy decides."""
    shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    result = _run(lambda a: a.reshape(shape, order=order), (self,), what="reshape (a copy)")
    if copy and result._buffer is self._buffer:
        return result.copy()
    if copy is False and result._buffer is not self._buffer:
        raise ValueError("Unable to avoid copy while reshaping.")
    return result


@_declare("(self, *axes)")
def _transpose(self, axes):
    return _run(lambda a: a.transpose(*axes), (self,), launches=0)


@_declare("(self, dtype, order='K', casting=None, subok=None, copy=True)")
def _astype(self, dtype, order, casting, subok, copy):
    """``self`` itself when ``copy=False`` and the dtype is the same (0 launches), else one copy."""
    if not copy and _np.dtype(dtype) == self.dtype:
        return self
    return _run(lambda a: a.astype(dtype, order=order, copy=True, **_drop_none(casting=casting)), (self,),
                launches=int(self.size > 0), what="astype")


@_declare("(self, order='C')")
def _copy(self, order):
    return _run(lambda a: a.copy(order=order), (self,), launches=int(self.size > 0), what="copy")


@_declare("(self, order='C')")
def _ravel(self, order):
    return _run(lambda a: a.ravel(order=order), (self,), what="ravel (a copy)")


@_declare("(self, order='C')")
def _flatten(self, order):
    return _run(lambda a: a.flatten(order=order), (self,), launches=int(self.size > 0), what="flatten")


@_declare("(self, repeats, axis=None)")
def _repeat(self, repeats, axis):
    """A Python int of repeats only (CuPy takes arrays too, with host syncs): one broadcast copy, after
    a copy of a non-contiguous array flattened for ``axis=None``."""
    if not isinstance(repeats, (int, _np.integer)):
        raise NotImplementedError("the stand-in's repeat takes an int (CuPy's per-element repeats sync)")
    ravel = int(axis is None and not self._data.flags.c_contiguous and self.size > 0)
    return _run(lambda a: a.repeat(repeats, axis=axis), (self,),
                launches=ravel + int(self.size * repeats > 0), what="repeat")


for _name, _method in (("reshape", _reshape), ("transpose", _transpose), ("astype", _astype), ("copy", _copy),
                       ("ravel", _ravel), ("flatten", _flatten), ("repeat", _repeat)):
    _method.__name__ = _method.__qualname__ = _name
    setattr(ndarray, _name, _method)


# --------------------------------------------------------------------------------------------
# The module's functions (signatures: CuPy's)
# --------------------------------------------------------------------------------------------

def _check_inputs(*values):
    _refuse_host_array(list(values))


def _new(numpy_function, kernel, what):
    """An array made from nothing on the device: with ``kernel`` one launch (a memset, a fill), none
    when it has no element; without, an allocation only."""
    return _run(numpy_function, (), launches=None if kernel else 0, what=what)


@_declare("(shape, dtype=float, order='C')")
def zeros(shape, dtype, order):
    """One memset (``cudaMemsetAsync``)."""
    return _new(lambda: _np.zeros(shape, dtype, order), True, "zeros (memset)")


@_declare("(shape, dtype=float, order='C')")
def ones(shape, dtype, order):
    """One fill kernel."""
    return _new(lambda: _np.ones(shape, dtype, order), True, "ones (fill)")


@_declare("(shape, dtype=float, order='C')")
def empty(shape, dtype, order):
    """An allocation: no launch."""
    return _new(lambda: _np.empty(shape, dtype, order), False, "empty")


@_declare("(shape, fill_value, dtype=None, order='C')")
def full(shape, fill_value, dtype, order):
    """One fill (a memset for 0)."""
    _check_inputs(fill_value)
    return _new(lambda: _np.full(shape, _unwrap(fill_value), dtype, order), True, "full (fill)")


def _like(name, numpy_function, kernel, what, spec):
    @_declare(spec)
    def function(a=None, prototype=None, dtype=None, order="K", subok=None, shape=None):
        source = a if prototype is None else prototype
        if not isinstance(source, ndarray):
            raise TypeError(f"Unsupported type {type(source)} (minimf strict stand-in): {what} of a device array")
        return _run(lambda x: numpy_function(x, **_drop_none(dtype=dtype, order=order, shape=shape)), (source,),
                    launches=None if kernel else 0, what=what)
    function.__name__ = function.__qualname__ = name
    return function


zeros_like = _like("zeros_like", _np.zeros_like, True, "zeros_like (memset)",
                   "(a, dtype=None, order='K', subok=None, shape=None)")
ones_like = _like("ones_like", _np.ones_like, True, "ones_like (fill)",
                  "(a, dtype=None, order='K', subok=None, shape=None)")
empty_like = _like("empty_like", _np.empty_like, False, "empty_like",
                   "(prototype, dtype=None, order='K', subok=None, shape=None)")


@_declare("(start, stop=None, step=1, dtype=None)")
def arange(start, stop, step, dtype):
    """One kernel."""
    _check_inputs(start, stop, step)
    return _new(lambda: _np.arange(start, stop, step, dtype=dtype), True, "arange")


# --- ufuncs: one element-wise kernel; inside ``fuse`` they join the fused kernel -------------------

_UNARY_UFUNC = "(x, /, out=None, *, casting='same_kind', dtype=None)"
_BINARY_UFUNC = "(x1, x2, /, out=None, *, casting='same_kind', dtype=None)"


def _ufunc(name, numpy_ufunc, spec):
    bind = _signature(spec, name)
    nin = numpy_ufunc.nin

    def function(*args, **kwargs):
        bound = bind(*args, **kwargs)
        inputs = [bound[k] for k in ("x", "x1", "x2") if k in bound]
        out = bound["out"]
        options = _drop_none(casting=bound["casting"], dtype=bound["dtype"])
        if _builtins.any(isinstance(v, _Fused) for v in inputs + [out]):
            return _fused_ufunc(numpy_ufunc, inputs, out, options)
        _check_inputs(*inputs, out)
        if out is not None and not isinstance(out, ndarray):
            raise TypeError(f"Output arguments must be cupy.ndarray, not {type(out)}")
        return _run(lambda *xs, **kw: numpy_ufunc(*xs, **kw), tuple(inputs[:nin]), _drop_none(out=out, **options),
                    writes=(out,), what=name)
    function.__name__ = function.__qualname__ = name
    function.__wrapped__ = bind
    return function


_UFUNCS = {"exp": _UNARY_UFUNC, "log": _UNARY_UFUNC, "log1p": _UNARY_UFUNC, "sqrt": _UNARY_UFUNC,
           "tanh": _UNARY_UFUNC, "abs": _UNARY_UFUNC, "isfinite": _UNARY_UFUNC, "maximum": _BINARY_UFUNC, "multiply": _BINARY_UFUNC,
           "divide": _BINARY_UFUNC}
for _name, _spec in _UFUNCS.items():   # abs shadows a builtin: the module's own code says builtins.* where it matters
    globals()[_name] = _ufunc(_name, getattr(_np, _name), _spec)


@_declare("(condition, x=None, y=None)")
def where(condition, x, y):
    """``where(condition, x, y)``: one kernel (it joins a fused kernel). ``where(condition)`` is
    ``nonzero`` on CuPy (a scan and a host sync): not in the stand-in."""
    if (x is None) != (y is None):
        raise ValueError("Must provide both 'x' and 'y' or neither.")
    if x is None:
        raise NotImplementedError("xp.where(condition) (nonzero, a host sync) is not in the stand-in")
    if _builtins.any(isinstance(v, _Fused) for v in (condition, x, y)):
        return _fused_ufunc(_np.where, [condition, x, y], None, {})
    _check_inputs(condition, x, y)
    return _run(_np.where, (condition, x, y), what="where")


def _concatenate_launches(arrays, dtype, axis):
    """CuPy's ``_concatenate``: more than 8 arrays of one dtype, under 2 MiB each on average, go in
    one kernel, after their pointers are copied to the device (1 copy; 3 when they differ in shape
    or are not contiguous); otherwise one copy kernel per non-empty array."""
    total = _builtins.sum(a.size for a in arrays) * dtype.itemsize
    if len(arrays) > 8 and _builtins.all(a.dtype == dtype for a in arrays) and total < 2 * 1024 * 1024 * len(arrays):
        axis_size = _builtins.sum(a.shape[axis] for a in arrays) // len(arrays)
        same = _builtins.all(a._data.flags.c_contiguous and a.shape[axis] == axis_size for a in arrays)
        return (1 if same else 3) + 1
    return _builtins.sum(1 for a in arrays if a.size)


def _joined(tup, axis, out, dtype, casting, what, expand):
    arrays = list(tup)
    if not arrays:
        raise ValueError("Cannot concatenate from empty tuple")
    for a in arrays:
        if not isinstance(a, ndarray):
            raise TypeError("Only cupy arrays can be concatenated")
    _check_inputs(out)
    shapes = [a.shape if not expand else a.shape[:axis % (a.ndim + 1)] + (1,) + a.shape[axis % (a.ndim + 1):]
              for a in arrays]
    views = [ndarray._wrap(a._data.reshape(s), a._buffer) for a, s in zip(arrays, shapes)]
    result_dtype = out.dtype if out is not None else _np.dtype(dtype) if dtype is not None else \
        _np.result_type(*(a.dtype for a in arrays))
    launches = _concatenate_launches(views, result_dtype, axis % views[0].ndim if views[0].ndim else 0)
    function = _np.stack if expand else _np.concatenate
    return _run(lambda xs, **kw: function(xs, **kw), (arrays,),
                _drop_none(axis=axis, out=out, dtype=dtype, casting=None if casting == "same_kind" else casting),
                writes=(out,), launches=launches,
                what=what)


@_declare("(tup, axis=0, out=None, *, dtype=None, casting='same_kind')")
def concatenate(tup, axis, out, dtype, casting):
    """``_concatenate_launches``."""
    return _joined(tup, axis, out, dtype, casting, "concatenate", expand=False)


@_declare("(tup, axis=0, out=None, *, dtype=None, casting='same_kind')")
def stack(tup, axis, out, dtype, casting):
    """``concatenate`` of the arrays with a new axis (views)."""
    return _joined(tup, axis, out, dtype, casting, "stack", expand=True)


def _pad_launches(array, pad_width, value):
    """``cupy.pad`` in ``constant`` mode (``cupy/_padding/pad.py``): a padding of 0 on a 1-d array or
    one under 4e6 values is a fill of the new array (a memset) and one copy of the old one into it
    (2); otherwise the copy and two fills per padded axis (one per non-empty side)."""
    widths = _np.broadcast_to(_np.asarray(pad_width), (array.ndim, 2))
    if isinstance(value, _Number) and value == 0 and (array.ndim == 1 or array.size < 4e6):
        return 1 + int(array.size > 0)
    return int(array.size > 0) + int(_np.count_nonzero(widths))


@_declare("(array, pad_width, mode='constant', **kwargs)")
def pad(array, pad_width, mode, kwargs):
    """``_pad_launches``; the stand-in has the ``constant`` mode only."""
    if mode != "constant" or set(kwargs) - {"constant_values"}:
        raise NotImplementedError("the stand-in's pad has mode='constant' (and constant_values) only")
    _check_inputs(array)
    value = kwargs.get("constant_values", 0)
    return _run(lambda a: _np.pad(a, pad_width, mode="constant", constant_values=value), (array,),
                launches=_pad_launches(array, pad_width, value), what="pad")


@_declare("(array, shape)")
def broadcast_to(array, shape):
    """A view: no launch."""
    _check_inputs(array)
    return _run(lambda a: _np.broadcast_to(a, shape), (array,), launches=0)


def _matmul_launches(a, b, out):
    """Kernels CuPy 14 launches for ``a @ b`` / ``matmul(a, b, out=out)`` (``_routines_linalg.pyx``):

    * 2-d (or 1-d) float operands: one cuBLAS ``gemmEx`` call (counted 1; cuBLAS may split a
      product into more kernels inside), after a copy of each operand that is neither C- nor
      F-contiguous (a transposed view costs nothing: cuBLAS reads it transposed) and a cast of one
      whose dtype differs from the result's; a vector dot product is a multiply and a CUB sum into
      the output (1 + 1 or 2 + 1); integer operands: CuPy's own product kernel (1);
    * more than 2 dimensions: both operands made C-contiguous (+1 each that is not), then one
      strided batched ``gemmEx``, or, where a batch axis is broadcast (a 2-d operand against a
      stack), the three pointer arrays of a batched gemm first: ``_mat_ptrs`` kernels, ndim - 2
      per operand, then ``gemmBatched``;
    * an ``out`` that is not C-contiguous, of another dtype, or overlapping an operand: +1 copy;
      an empty product: one fill.
    """
    result_dtype = _np.result_type(a.dtype, b.dtype)
    ndim = _builtins.max(a.ndim, b.ndim)
    shape = _np.matmul(_np.empty(a.shape[-2:] if a.ndim > 1 else a.shape, dtype="int8"),
                       _np.empty(b.shape[-2:] if b.ndim > 1 else b.shape, dtype="int8")).shape
    out_copy = int(out is not None and (not out._data.flags.c_contiguous or out.dtype != result_dtype
                                        or _np.may_share_memory(out._data, a._data)
                                        or _np.may_share_memory(out._data, b._data)))
    if a.size == 0 or b.size == 0:
        return int(_math.prod(shape) > 0)
    if ndim <= 2:
        if a.ndim == 1 and b.ndim == 1:
            return 1 + _cub_device_reduce_launches(a.size, result_dtype.itemsize) + 1 + out_copy
        if result_dtype.kind not in "fc":
            return 1 + out_copy
        copies = _builtins.sum(int(not _contiguous(x._data)) + int(x.dtype != result_dtype) for x in (a, b))
        return copies + 1 + out_copy
    copies = _builtins.sum(int(not x._data.flags.c_contiguous or x.dtype != result_dtype) for x in (a, b))
    a_batch = (1,) * (ndim - a.ndim) + a.shape[:-2]
    b_batch = (1,) * (ndim - b.ndim) + b.shape[:-2]
    broadcast = _builtins.any(x != y and 1 in (x, y) for x, y in zip(a_batch, b_batch))
    if result_dtype.kind not in "fc":
        return copies + 1 + out_copy
    return copies + (3 * (ndim - 2) if broadcast else 0) + 1 + out_copy


@_declare("(x1, x2, /, *, out=None)")
def matmul(x1, x2, out):
    """``_matmul_launches``."""
    _check_inputs(x1, x2, out)
    if not isinstance(x1, ndarray) or not isinstance(x2, ndarray):
        raise TypeError("matmul of device arrays only (minimf strict stand-in)")
    if x1.ndim == 0 or x2.ndim == 0:
        raise ValueError("Scalar operands are not allowed, use '*' instead")
    return _run(lambda a, b, **kw: _np.matmul(a, b, **kw), (x1, x2), _drop_none(out=out), writes=(out,),
                launches=_matmul_launches(x1, x2, out), what="matmul")


@_declare("(a, dtype=None)")
def ascontiguousarray(a, dtype):
    """``a`` itself when C-contiguous of that dtype (0 launches), else one copy."""
    _check_inputs(a)
    if not isinstance(a, ndarray):
        raise TypeError("ascontiguousarray of a device array only (minimf strict stand-in)")
    same = a._data.flags.c_contiguous and (dtype is None or _np.dtype(dtype) == a.dtype)
    return a if same else _run(lambda x: _np.ascontiguousarray(x, dtype=dtype), (a,),
                               launches=int(a.size > 0), what="ascontiguousarray")


@_declare("(a, dtype=None, order=None, *, copy=None, blocking=False)")
def asarray(a, dtype, order, copy, blocking):
    """Host data -> device: one host-to-device copy, queued on the current stream. A device array as
    it is, or cast (one launch)."""
    if isinstance(a, ndarray):
        if dtype is None or _np.dtype(dtype) == a.dtype:
            return a.copy() if copy else a
        if copy is False:
            raise ValueError("Unable to avoid copy while creating an array as requested.")
        return a.astype(dtype)
    if _builtins.any(True for _ in _device_arrays(a)):
        raise TypeError("xp.asarray of a list holding device arrays: use xp.stack")
    if copy is False:
        raise ValueError("Unable to avoid copy while creating an array from host data.")
    data = _np.array(a, dtype=dtype, order=order or "K", copy=True)
    return _run(lambda: data, (), launches=int(data.size > 0), what="asarray (host-to-device copy)")


@_declare("(obj, dtype=None, copy=True, order='K', subok=False, ndmin=0, *, blocking=False)")
def array(obj, dtype, copy, order, subok, ndmin, blocking):
    if ndmin:
        raise NotImplementedError("the stand-in's array has no ndmin")
    if isinstance(obj, ndarray):
        if dtype is not None and _np.dtype(dtype) != obj.dtype:
            return obj.astype(dtype, order=order)
        return obj.copy(order="C" if order == "K" else order) if copy else obj
    return asarray(obj, dtype=dtype, order=None if order == "K" else order)


@_declare("(a, stream=None, order='C', out=None, *, blocking=True)")
def asnumpy(a, stream, order, out, blocking):
    """Device -> host (a sync); a NumPy array is returned as it is."""
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out, blocking=blocking)
    return _np.asarray(a, order=order)


def get_array_module(*args):
    """This module if any argument is one of its arrays (or a fused value), else NumPy (as
    ``cupy.get_array_module``)."""
    return _module if _builtins.any(isinstance(a, (ndarray, _Fused)) for a in args) else _np


def result_type(*arrays_and_dtypes):
    """The dtype NumPy's rules give (metadata only: no device work)."""
    return _np.result_type(*(a.dtype if isinstance(a, (ndarray, _Fused)) else a for a in arrays_and_dtypes))


@_declare("(x, shape=None, strides=None)")
def _as_strided(x, shape, strides):
    """A view: no launch (CuPy's takes neither ``subok`` nor ``writeable``)."""
    return _run(lambda a: _np.lib.stride_tricks.as_strided(a, shape=shape, strides=strides), (x,), launches=0)


_as_strided.__name__ = _as_strided.__qualname__ = "as_strided"
lib = _types.SimpleNamespace(stride_tricks=_types.SimpleNamespace(as_strided=_as_strided))


# --------------------------------------------------------------------------------------------
# fuse: a traced function, one kernel
# --------------------------------------------------------------------------------------------

_FUSE_MESSAGE = ("Cannot convert to Python scalar in cupy.fuse: a fused function is traced once into a "
                 "kernel, so it cannot branch on, or read, a fused value (CuPy's first tracer says \"Can't "
                 "cast to bool\")")


class _Fused:
    """What a fused function gets for an argument, as CuPy's tracer gives it a proxy: arithmetic,
    comparisons, ufuncs and ``where`` work (eagerly, in NumPy), anything that needs the value on
    the host (``bool``, ``float``, ``if x > 0:``), ``shape`` and indexing do not."""
    __slots__ = ("_value",)
    __array_ufunc__ = None            # NumPy scalars on the left defer to us, NumPy's ufuncs refuse us

    def __init__(self, value):
        self._value = value

    dtype = property(lambda self: _np.result_type(self._value))
    ndim = property(lambda self: _np.ndim(self._value))

    @property
    def shape(self):
        raise NotImplementedError("`shape` is not supported, currently.")

    def __bool__(self):
        raise TypeError(_FUSE_MESSAGE)

    __int__ = __float__ = __complex__ = __bool__

    def __getitem__(self, index):
        raise TypeError("indexing a value inside cupy.fuse is not in the stand-in (CuPy's first tracer "
                        "refuses it; pass the part you need as an argument)")

    def copy(self):
        return _fused(_np.array(self._value, copy=True))

    def astype(self, dtype, order=None, casting=None, subok=None, copy=True):
        if order is not None or casting is not None or subok is not None:
            raise TypeError("order, casting and subok are not supported yet")
        return self if not copy and self.dtype == _np.dtype(dtype) else _fused(_np.asarray(self._value).astype(dtype))

    def __repr__(self):
        return f"<fused value {self.dtype} {self.ndim}-dim>"


class _FusedArray(_Fused):
    """An array argument of a fused function: in-place operators and ``x[...] = v`` write it."""
    __slots__ = ("_written",)

    def __init__(self, value):
        super().__init__(value)
        self._written = False

    def __setitem__(self, slices, value):
        if not (slices is Ellipsis or slices == slice(None)):
            raise ValueError("The fusion supports `[...]` or `[:]`.")
        self._value[...] = _fused_operand(value)
        self._written = True


def _fused(value):
    return _FusedArray(value) if isinstance(value, _np.ndarray) else _Fused(value)


def _fused_operand(value):
    if isinstance(value, _Fused):
        return value._value
    if isinstance(value, (ndarray, _np.ndarray)):
        raise TypeError(f"Unsupported type {type(value)} in cupy.fuse: a fused function reads arrays only "
                        "through its arguments")
    if not isinstance(value, (_Number, _np.generic)):
        raise TypeError(f"Unsupported type {type(value)} in cupy.fuse")
    return value


def _fused_operator(op, reflected=False):
    def method(self, other):
        other = _fused_operand(other)
        return _fused(op(other, self._value) if reflected else op(self._value, other))
    return method


def _fused_inplace(op):
    def method(self, other):
        op(self._value, _fused_operand(other))          # NumPy writes the array in place
        self._written = True
        return self
    return method


for _name in ["add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor", "lshift", "rshift"]:
    _op = getattr(_operator, f"{_name}_" if _name in ("and", "or") else _name)
    setattr(_Fused, f"__{_name}__", _fused_operator(_op))
    setattr(_Fused, f"__r{_name}__", _fused_operator(_op, reflected=True))
    setattr(_FusedArray, f"__i{_name}__", _fused_inplace(getattr(_operator, f"i{_name}")))
for _name in ["lt", "le", "eq", "ne", "gt", "ge"]:
    setattr(_Fused, f"__{_name}__", _fused_operator(getattr(_operator, _name)))
_Fused.__hash__ = None
_Fused.__neg__ = lambda self: _fused(-self._value)
_Fused.__invert__ = lambda self: _fused(~self._value)


def _fused_ufunc(numpy_ufunc, inputs, out, options):
    values = [_fused_operand(v) for v in inputs]
    if out is None:
        return _fused(numpy_ufunc(*values, **options))
    if not isinstance(out, _FusedArray):
        raise TypeError("the output of a ufunc inside cupy.fuse must be an array argument")
    numpy_ufunc(*values, out=out._value, **options)
    out._written = True
    return out


_FUSE_ARGUMENTS = (ndarray, _np.generic, bool, int, float, complex, type(None))


class _Fusion:
    """What ``fuse`` returns (CuPy's ``Fusion``): called with at least one device array, the function
    is traced with ``_Fused`` values in place of its arguments and runs as ONE kernel, which writes
    the arrays the function changes in place and returns a new array for what it returns. Called
    without a device array (plain numbers, or fused values inside another fused function) it is
    the plain Python function, as on CuPy."""

    def __init__(self, func, name=None):
        self.func = func
        self.name = name or func.__name__

    def __call__(self, *args):
        if not _builtins.any(isinstance(a, ndarray) for a in args):
            return self.func(*args)
        if not _builtins.all(isinstance(a, _FUSE_ARGUMENTS) for a in args):
            raise TypeError(f"Invalid argument type for '{self.name}': "
                            f"({', '.join(repr(type(a)) for a in args)})")
        arrays = [a for a in args if isinstance(a, ndarray)]
        stream, device = _begin(arrays, ())
        proxies = [_FusedArray(a._data) if isinstance(a, ndarray) else None if a is None else _Fused(a)
                   for a in args]
        returned = self.func(*proxies)
        written = tuple(a for a, p in zip(args, proxies) if isinstance(p, _FusedArray) and p._written)
        if returned is not None and not isinstance(returned, (_Fused, tuple)):
            raise TypeError(f"Fusion function can't return {type(returned)}")
        shape = _np.broadcast_shapes(*(a.shape for a in arrays))
        values = [r for r in (returned if isinstance(returned, tuple) else (returned,)) if r is not None]
        results = tuple(_np.array(_np.broadcast_to(r._value, shape)) for r in values)
        outcome = _finish(results, arrays, written, 1, f"fuse: {self.name}", stream, device)
        return outcome[0] if isinstance(returned, _Fused) else (outcome if isinstance(returned, tuple) else None)

    def clear_cache(self):
        pass

    def __repr__(self):
        return f"<Fusion name={self.name}>"


def fuse(*args, kernel_name=None):
    """``cupy.fuse``: ``fuse(f)`` or ``fuse(kernel_name=...)(f)`` (``_Fusion``). One launch a call."""
    if len(args) == 1 and callable(args[0]) and kernel_name is None:
        return _functools.update_wrapper(_Fusion(args[0]), args[0])
    if args:
        raise TypeError("fuse() takes a function, or kernel_name=...")
    return lambda f: _functools.update_wrapper(_Fusion(f, kernel_name), f)


for _name in ["float32", "float64", "int32", "int64", "uint8", "bool_", "dtype", "newaxis", "inf", "nan", "pi"]:
    globals()[_name] = getattr(_np, _name)

_module = _sys.modules[__name__]
del _name, _spec, _method, _class, _op
