"""Input validation shared by every network: wrong shapes, dtypes, NaN/inf and out-of-range labels
become a ``ValueError`` that says what was expected, before any arithmetic runs.

Labels matter most on the GPU: CuPy wraps an out-of-range index silently (label 12 of 10 classes
reads class 2), so a bad label would train on garbage instead of failing.

Shapes and dtypes are free to check (the host knows them). Values are not: on a GPU, "is every
number finite?" and "do the labels lie in [0, C)?" are computed on the device and the host must
wait for the answer (one host synchronisation each). So ``values=False`` skips those two checks,
for data whose values were checked once already: ``python -m minimf.train`` checks the whole data
set when it prepares it, then trains and evaluates without a single synchronisation per step.
"""
from numbers import Integral

from minimf.backend import to_numpy


def check_features(x, example_shape, xp, dtype, values=True):
    """Return x as a (N, *example_shape) array of ``dtype`` on the backend ``xp``.

    ``example_shape`` is the shape of one example: an int D for an MLP's (N, D), or a tuple such
    as (1, 28, 28) for a CNN's (N, C, H, W). Accepts any floating-point array (float64 is cast to
    the network's dtype); rejects other shapes, integer or boolean arrays (pixels must be scaled
    to floats first) and, unless ``values=False`` (see above), NaN/inf (one host sync on a GPU),
    checked AFTER the cast: 1e300 is finite in float64 and infinite in float32.
    """
    shape = (int(example_shape),) if isinstance(example_shape, Integral) else tuple(example_shape)
    x = xp.asarray(x)
    if tuple(x.shape[1:]) != shape:
        expected = ", ".join(["N"] + [str(s) for s in shape])
        raise ValueError(f"expected inputs of shape ({expected}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("expected at least one example, got an empty batch")
    if x.dtype.kind != "f":
        raise ValueError(
            f"expected floating-point inputs (e.g. float32 pixels in [0, 1]), got dtype {x.dtype}"
        )
    x = x.astype(dtype, copy=False)
    if values and not bool(xp.isfinite(x).all()):            # one host sync on a GPU
        raise ValueError(f"inputs contain NaN or infinite values (as {x.dtype})")
    return x


def check_labels(y, n, num_classes, xp, values=True):
    """Return y as an int64 array of shape (n,) on ``xp``, every label in [0, num_classes) (the
    range is checked unless ``values=False``: one host sync on a GPU, for the smallest and the
    largest label together)."""
    y = xp.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"expected {n} integer labels of shape ({n},), got shape {tuple(y.shape)}")
    if y.dtype.kind not in "iu":
        raise ValueError(f"expected integer class labels, got dtype {y.dtype}")
    if not values:
        return y.astype("int64", copy=False)
    low, high = (int(v) for v in to_numpy(xp.stack([y.min(), y.max()])))   # one transfer for both
    if low < 0 or high >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], found values from {low} to {high}")
    return y.astype("int64", copy=False)


FLOAT_DTYPES = ("float32", "float64")   # float32 to train, float64 for gradient checks


def check_dtype(dtype):
    """``dtype`` as its name if it is one of FLOAT_DTYPES, else a ValueError (an integer network
    would round every update away)."""
    name = getattr(dtype, "__name__", None) or str(dtype)
    if name not in FLOAT_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(FLOAT_DTYPES)}, got {dtype!r}")
    return dtype


def check_sizes(sizes, num_classes):
    """Layer widths [D, H1, ..., HL] need at least one hidden layer; every width and C positive."""
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"sizes must list the input width and at least one hidden width, got {sizes}")
    if min(sizes) < 1 or int(num_classes) < 2:
        raise ValueError(f"widths must be positive and num_classes >= 2, got {sizes}, {num_classes}")
    return sizes


def check_image_shape(input_shape):
    """The shape of one image, (C, H, W): three positive integers, returned as a tuple."""
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(s, Integral) and s >= 1 for s in shape):
        raise ValueError(f"input_shape must be (C, H, W), three positive integers, got {shape}")
    return tuple(int(s) for s in shape)


def check_channels(channels, num_classes):
    """Conv block widths [F_1, ..., F_L]: at least one block; every width and C positive."""
    channels = [int(c) for c in channels]
    if len(channels) < 1:
        raise ValueError(f"channels must list at least one conv block width, got {channels}")
    if min(channels) < 1 or int(num_classes) < 2:
        raise ValueError(f"channels must be positive and num_classes >= 2, got {channels}, {num_classes}")
    return channels
