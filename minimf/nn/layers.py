"""Layers as functional pairs: ``*_forward`` returns ``(out, cache)``, ``*_backward`` takes
``(dout, cache)`` and returns the gradients, each derived by hand and checked against finite
differences in ``tests/test_layers.py``.

Shape letters: N batch size, D input features, H output features.
Every function works on NumPy and CuPy arrays alike (``xp`` is the module the arrays live in).

Speed: the ReLU pair takes ``out=``. A training step that owns z (fresh from ``x @ W``) or da
(fresh from a product) passes ``out=z`` / ``out=da`` and the result overwrites it, so no new
(N, H) array is made; leaving ``out`` out gives the plain functional form, inputs untouched.

One kernel where CuPy would launch two: on a GPU every whole-array operation is a kernel launch
of a few microseconds, and for a 1000-wide layer the launches, not the arithmetic, fill a training
step (benchmarks/launch_model.py). So on CuPy ``bias_relu`` adds the bias and takes the ReLU in one
fused kernel (``xp.fuse``, as the optimisers' steps in minimf/nn/optim.py), and ``relu_backward``
masks in one (the comparison ``a > 0`` and the product would be two). On NumPy both stay the
plain array lines, the reference; they round alike (tests/test_layers.py).

``DenseLayer`` is the thin class on top: one affine layer's parameters in a ``params`` dict, the
interface every network's ``layers`` share (saving, optimisers).
"""
import types

import numpy

from minimf.backend import get_array_module, kernels_for


def dense_forward(x, W, b=None):
    """Affine map ``z = x @ W + b``.

    x: (N, D)   W: (D, H)   b: (H,) or None (no bias)
    Returns z: (N, H) and the cache ``(x, W, has_bias)``.
    """
    z = x @ W
    if b is not None:
        z += b
    return z, (x, W, b is not None)


def dense_backward(dz, cache, out=None):
    """Gradients of a scalar loss L through ``z = x @ W + b``, given dz = dL/dz.

    dz: (N, H)
    Returns dx = dz @ W^T: (N, D), dW = x^T @ dz: (D, H), db = sum_n dz: (H,) (None without bias).
    ``out``: as ``dense_param_grads``'s, for dW and db.
    """
    x, W, has_bias = cache
    dx = dz @ W.T
    dW, db = dense_param_grads(dz, x, has_bias, out)
    return dx, dW, db


def dense_param_grads(dz, x, has_bias=True, out=None):
    """Only ``(dW, db)`` of ``z = x @ W + b``: what a local rule needs when the gradient stops at x.

    Skipping dx = dz @ W^T saves one matrix product per layer (a third of the backward work).
    dz: (N, H), x: (N, D) -> dW: (D, H), db: (H,) or None.
    ``out``: None for new arrays, or a dict whose "W" and "b" receive them (a layer's flat
    gradient views, minimf/nn/flat.py).
    """
    if out is None:
        return x.T @ dz, dz.sum(axis=0) if has_bias else None
    xp = get_array_module(dz)
    dW = xp.matmul(x.T, dz, out=out["W"])
    db = dz.sum(axis=0, out=out["b"]) if has_bias else None
    return dW, db


def dense_relu_forward(x, W, b=None):
    """``a = relu(x @ W + b)``: a dense map and its ReLU, the bias added in the ReLU's pass
    (``bias_relu``), so that on CuPy the step is one product and one kernel.

    x: (N, D)   W: (D, H)   b: (H,) or None
    Returns a: (N, H) and the caches of ``dense_backward`` and ``relu_backward``:
    ``((x, W, has_bias), a)``.
    """
    a = bias_relu(x @ W, b)                       # in place: x @ W is a fresh array
    return a, ((x, W, b is not None), a)


def bias_relu(z, b=None):
    """``z <- max(z + b, 0)`` in place, and z returned. z: (N, H), b: (H,) or None.

    NumPy: ``z += b`` then the ReLU, two passes. CuPy: one fused kernel.
    """
    xp = get_array_module(z)
    if b is None:
        return xp.maximum(z, 0, out=z)
    if xp is numpy:
        z += b
        return xp.maximum(z, 0, out=z)
    kernels_for(xp, _make_kernels).bias_relu(z, b)
    return z


def relu_forward(z, out=None):
    """``a = max(z, 0)`` element-wise. z: any shape. Returns a and the cache ``a``.

    The cache is the output: a > 0 exactly where z > 0, so it is all the backward pass needs.
    ``out=z`` overwrites z with a (no new array); z is then gone, so only pass it when z is yours.
    """
    xp = get_array_module(z)
    a = xp.maximum(z, 0, out=out)
    return a, a


def relu_backward(da, cache, out=None):
    """``dz = da * 1[z > 0]``; at z = 0 we take the derivative to be 0 (a subgradient).

    ``out=da`` overwrites da with dz (no new array), for a da nobody else needs.
    NumPy: the comparison and the product, two passes; CuPy: one fused kernel.
    """
    a = cache
    xp = get_array_module(da)
    if xp is numpy:
        return xp.multiply(da, a > 0, out=out)
    if out is None:
        out = xp.empty_like(da)
    kernels_for(xp, _make_kernels).relu_mask(da, a, out)
    return out


def _make_kernels(xp):
    """The fused kernels of ``bias_relu`` and ``relu_backward`` for the array module ``xp``."""
    maximum = xp.maximum                           # inside cupy.fuse a ufunc joins the kernel

    def bias_relu(z, b):                           # z <- max(z + b, 0); b: (H,) broadcast over the rows
        z[...] = maximum(z + b, 0)

    def relu_mask(da, a, out):                     # out <- da * 1[a > 0]; out may be da itself
        out[...] = da * (a > 0)

    fuse = xp.fuse
    return types.SimpleNamespace(bias_relu=fuse()(bias_relu), relu_mask=fuse()(relu_mask))


def init_dense(rng, fan_in, fan_out, xp, dtype="float32", bias=True):
    """Initial W: (fan_in, fan_out) and b: (fan_out,) (or None), uniform in ±1/sqrt(fan_in).

    This is PyTorch's default for ``nn.Linear``, which the paper's experiments used. The numbers
    are drawn on the host by ``rng`` (a NumPy Generator) and then moved to ``xp``, so a seed
    gives the same start on NumPy and CuPy.
    """
    bound = 1.0 / fan_in ** 0.5
    W = xp.asarray(rng.uniform(-bound, bound, size=(fan_in, fan_out)), dtype=dtype)
    b = xp.asarray(rng.uniform(-bound, bound, size=fan_out), dtype=dtype) if bias else None
    return W, b


class DenseLayer:
    """Parameters of one affine layer: W (D, H) and b (H,) or None, in the dict ``params``
    (initialised by ``init_dense``)."""

    def __init__(self, in_features, width, rng, xp, dtype="float32", bias=True):
        self.W, self.b = init_dense(rng, in_features, width, xp, dtype, bias)

    @property
    def params(self):
        return {"W": self.W, "b": self.b}
