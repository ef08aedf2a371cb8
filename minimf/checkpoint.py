"""Saving and restoring a network's parameters.

Every network in minimf keeps a list ``layers`` whose items have a ``params`` dict
({"W": array, "b": array or None, ...}). Its state is the flat dict {"layers.i.name": host array},
which ``numpy.savez`` stores as an ``.npz`` archive.
"""
import numpy as np

from minimf.backend import to_numpy
from minimf.files import atomic_save_npz


def layers_state(layers):
    """{"layers.i.name": host copy} for every parameter that exists (a missing bias is skipped)."""
    return {f"layers.{i}.{name}": to_numpy(array).copy()
            for i, layer in enumerate(layers)
            for name, array in layer.params.items() if array is not None}


def load_layers_state(layers, state, xp):
    """Copy a state made by ``layers_state`` into the layers' arrays, in place.

    Raises ValueError naming the array when one is missing or has another shape.
    """
    for i, layer in enumerate(layers):
        for name, array in layer.params.items():
            if array is None:
                continue
            key = f"layers.{i}.{name}"
            if key not in state:
                raise ValueError(f"saved state has no array {key!r}")
            saved = state[key]
            if tuple(saved.shape) != tuple(array.shape):
                raise ValueError(f"saved {key} has shape {tuple(saved.shape)}, the network expects {tuple(array.shape)}")
            array[...] = xp.asarray(saved)


def save(net, path):
    """Write ``net.state_dict()`` to ``path`` (.npz) atomically."""
    atomic_save_npz(path, net.state_dict())


def load(net, path):
    """Load parameters saved by ``save`` into ``net`` (built with the same sizes)."""
    with np.load(path) as archive:
        net.load_state_dict({key: archive[key] for key in archive.files})
