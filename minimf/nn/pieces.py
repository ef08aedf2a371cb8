"""Element-wise work in cache-sized pieces, for the optimisers (minimf/nn/optim.py) and the Mixer's
GELU (minimf/nn/mixer.py).

A chain of NumPy ufuncs over a large array makes one pass over memory per ufunc: each pass streams
the whole array from main memory and back. Done piece by piece, all the passes over one piece of
CACHE_PIECE numbers find it in the CPU's cache, so each array goes through main memory about once.
Every element is computed by the same ufuncs in the same order, so the numbers are the same, bit for
bit. On CuPy a piece would be a kernel launch per ufunc, so there the whole array is one piece.
"""
import numpy

from minimf.backend import get_array_module

CACHE_PIECE = 65536   # numbers of each array per piece: 5 float32 arrays of 256 KiB fit a CPU's L2 cache


def cache_pieces(part, arrays, piece=CACHE_PIECE):
    """``part`` (a slice of the flattened ``arrays``, or None for all of them) cut into consecutive
    slices of at most ``piece`` elements, for ``flat_parts``; ``[part]`` when it is no larger, or
    when an array is not C-contiguous (its flattened view would be a copy)."""
    start, stop, _ = (part or slice(0, arrays[0].size)).indices(arrays[0].size)
    if stop - start <= piece or not all(a.flags.c_contiguous for a in arrays):
        return [part]
    return [slice(i, min(i + piece, stop)) for i in range(start, stop, piece)]


def host_pieces(arrays, piece=CACHE_PIECE):
    """The pieces for an element-wise computation over ``arrays`` (all of one size): on NumPy,
    ``cache_pieces(None, arrays, piece)``; on CuPy ``[None]``, the whole arrays in one piece, so
    that every ufunc stays one kernel launch."""
    if get_array_module(arrays[0]) is not numpy:
        return [None]
    return cache_pieces(None, arrays, piece)


def flat_parts(part, *arrays):
    """The arrays as they are (``part`` None), or the elements ``part`` (a slice) of each one
    flattened: views, so that writing to them writes the arrays. Every array must then be
    C-contiguous (a flattened view of any other would be a copy, and the update would be lost)."""
    if part is None:
        return arrays
    for a in arrays:
        if not a.flags.c_contiguous:
            raise ValueError(f"cannot update part of a non-contiguous array of shape {a.shape}")
    return tuple(a.reshape(-1)[part] for a in arrays)
