"""A layer's parameters as views of ONE flat array, and their gradients as views of another, so that
an optimiser can step the whole layer in one pass (``Adam.step_flat``, minimf/nn/optim.py).

Why: an optimiser's step is element-wise, the same arithmetic for every number of W, b and M. On a
GPU each parameter's step is a kernel launch of a few microseconds, and a Mono-Forward layer has
three parameters; laid end to end in one array they are one launch. The gradients must then be
laid out the same way, so the layer writes them straight into their views (``out=`` of the
product and the sum), which also spares NumPy a new (D, H) array every step.

    flat = FlatParameters({"W": W, "b": b, "M": M}, xp)
    flat.values      # (P,)  P = D*H + H + C*H, every parameter's numbers, W's first
    flat.params      # {"W": (D, H) view, "b": (H,) view, "M": (C, H) view}: write one, the flat array changes
    flat.grad        # (P,)  and flat.grads: the views of the gradients, same names and shapes

A parameter that is None (no bias) takes no room and stays None in both dicts. The views are
reshaped slices of contiguous arrays, so they are C-contiguous themselves: they can be updated in
place, saved and loaded like any other parameter (minimf/checkpoint.py copies into them). A copy
(pickle, as a Ray actor receives its layer; ``copy.deepcopy``) makes its views again from its own
flat arrays, since a pickled view would come back as an array of its own.
"""
import math


class FlatParameters:
    """Parameters ``arrays`` ({name: array or None}) copied into one flat array ``values``, and a flat
    array ``grad`` of the same size (zeros) for their gradients; ``params`` and ``grads`` are the
    views by name, in the order of ``arrays``. ``grad=False`` makes no gradient array (``grad`` and
    ``grads`` None): an optimiser lays its state out this way."""

    def __init__(self, arrays, xp, grad=True):
        present = {name: a for name, a in arrays.items() if a is not None}
        dtypes = {a.dtype for a in present.values()}
        if len(dtypes) != 1:
            raise ValueError(f"one flat array needs one dtype, got {sorted(map(str, dtypes))}")
        self.shapes = {name: None if a is None else tuple(a.shape) for name, a in arrays.items()}
        self.values = xp.empty(sum(a.size for a in present.values()), dtype=dtypes.pop())
        self.grad = xp.zeros_like(self.values) if grad else None
        self._make_views()
        for name, a in present.items():
            self.params[name][...] = a

    def _make_views(self):
        """``params`` and ``grads``: each parameter's slice of ``values`` and of ``grad``, in its shape."""
        self.params = self._views(self.values)
        self.grads = None if self.grad is None else self._views(self.grad)

    def _views(self, flat):
        """{name: that parameter's slice of the flat array ``flat``, in its shape (None for None)}."""
        views, start = {}, 0
        for name, shape in self.shapes.items():
            if shape is None:
                views[name] = None
                continue
            stop = start + math.prod(shape)
            views[name] = flat[start:stop].reshape(shape)
            start = stop
        return views

    def __getstate__(self):
        return {"shapes": self.shapes, "values": self.values, "grad": self.grad}

    def __setstate__(self, state):
        self.shapes, self.values, self.grad = state["shapes"], state["values"], state["grad"]
        self._make_views()
