"""The MLP-Mixer (minimf/nn/mixer.py) and BP and MF on it (minimf/rules/mixer.py).

Every functional pair against finite differences in float64 on both backends (NumPy and "cupy": the
strict stand-in where there is no GPU), each with a must-fail case: a slip the check rejects (a
layer-norm backward without the variance's term, GELU's derivative without its z s (1 - s) term, a
token MLP whose gradient is not transposed back, a block without its residual, ...). GELU is smooth
everywhere and layer normalisation too (the variance is far from 0 here), so every check uses the
smooth tolerance, 1e-7. GELU in cache-sized pieces gives the whole-array computation's bits, on small
pieces with a partial last one, and a wrong piece boundary is caught.

Then the networks: MF's local gradient of every parameter of every block against the finite
differences of that block's own loss; the gradient stopping at the block input (block 1's update
is the gradient of L_1 alone, though L_2 depends on block 1; a check against the gradient of
L_1 + L_2 fails); BP's gradients of the whole network; a few training steps lower the losses on both
backends with no host sync in a step; the threaded pipeline and the batch split give the sequential
run's parameters (the Ray actors: tests/test_ray_pipeline.py); saving; MNIST with 4 x 4 patches and
CIFAR-10's shape.
"""
import math

import numpy as np
import pytest
from training_helpers import make_batches, parameter_pairs, sequential_run, use_rates

from minimf import BackpropMixer, MonoForwardMixer
from minimf.backend import get_array_module, get_backend, to_numpy
from minimf.nn.gradcheck import GradientCheckError, check_gradients, check_layer, numerical_grad
from minimf.nn import mixer as mixer_module, pieces
from minimf.nn.losses import softmax_cross_entropy
from minimf.nn.mixer import (BLOCK_PARAMS, GELU_A, GELU_K, block_cache_numbers, channel_mixing_backward,
                             channel_mixing_forward, dense_nd_backward, dense_nd_forward, gelu_backward, gelu_forward,
                             global_avg_pool_backward, global_avg_pool_forward, init_block, layer_norm_backward,
                             layer_norm_forward, mixer_block_backward, mixer_block_forward, mixer_head_backward,
                             mixer_head_forward, mlp_backward, mlp_forward, patch_embed_backward, patch_embed_forward,
                             patch_grid, patchify, token_mixing_backward, token_mixing_forward, unpatchify)
from minimf.parallel.batch_split import train_batch_split
from minimf.parallel.pipeline import train_pipelined

SHAPE, PATCH, CLASSES = (1, 8, 8), 4, 3          # S = 4 patches of 16 pixels
SIZES = dict(width=4, token_hidden=3, channel_hidden=5)


def arrays(xp, rng, *shapes):
    return [xp.asarray(rng.standard_normal(shape)) for shape in shapes]


def block_params(xp, rng, S=4, D=4, Ht=3, Hc=5, bias=True):
    """A block's parameters in float64, none of them at its initial value (LN scales 1 and shifts 0
    would hide a slip in their gradients)."""
    shapes = {"ln1_g": (D,), "ln1_b": (D,), "tok_W1": (S, Ht), "tok_b1": (Ht,), "tok_W2": (Ht, S), "tok_b2": (S,),
              "ln2_g": (D,), "ln2_b": (D,), "ch_W1": (D, Hc), "ch_b1": (Hc,), "ch_W2": (Hc, D), "ch_b2": (D,)}
    p = {name: xp.asarray(rng.standard_normal(shape)) for name, shape in shapes.items()}
    p["ln1_g"] += 1
    p["ln2_g"] += 1
    if not bias:
        for name in ("tok_b1", "tok_b2", "ch_b1", "ch_b2"):
            p[name] = None
    return p


# --- the functional pairs ----------------------------------------------------------------------------

def test_dense_over_the_last_axis(xp, rng):
    x, W, b = arrays(xp, rng, (2, 3, 4), (4, 5), (5,))
    z, _ = dense_nd_forward(x, W, b)
    np.testing.assert_allclose(to_numpy(z), np.einsum("nsd,dh->nsh", to_numpy(x), to_numpy(W)) + to_numpy(b))
    print(check_layer(dense_nd_forward, dense_nd_backward, {"x": x, "W": W, "b": b}))
    with pytest.raises(GradientCheckError, match=r"^W: wrong"):     # dW summed over one example only
        check_layer(dense_nd_forward, lambda dz, c: (dense_nd_backward(dz, c)[0],
                                                     dense_nd_backward(dz[:1], (c[0][:1], *c[1:]))[1],
                                                     dense_nd_backward(dz, c)[2]), {"x": x, "W": W, "b": b})


def test_patches_tile_the_image_in_order(xp):
    x = xp.asarray(np.arange(2 * 3 * 8 * 8, dtype=float).reshape(2, 3, 8, 8))
    p = patchify(x, 4)
    assert p.shape == (2, 4, 48)
    host = to_numpy(x)
    np.testing.assert_array_equal(to_numpy(p)[1, 2], host[1, :, 4:8, 0:4].reshape(-1))   # patch (1, 0): row 2
    np.testing.assert_array_equal(to_numpy(unpatchify(p, x.shape, 4)), host)
    assert patch_grid((1, 28, 28), 4) == (7, 7) and patch_grid((3, 32, 32), 4) == (8, 8)
    with pytest.raises(ValueError, match="do not tile 28x28"):
        patch_grid((1, 28, 28), 5)


def test_patch_embedding_gradients(xp, rng):
    x, W, b = arrays(xp, rng, (2, 3, 8, 8), (48, 5), (5,))
    pair = (lambda x, W, b: patch_embed_forward(x, W, b, 4), patch_embed_backward)
    print(check_layer(*pair, {"x": x, "W": W, "b": b}))
    with pytest.raises(GradientCheckError, match=r"^x: wrong"):     # dx put back in the wrong order (no unpatchify)
        check_layer(pair[0], lambda dX, c: ((dX @ c[0][1].T).reshape(c[1]), *patch_embed_backward(dX, c)[1:]),
                    {"x": x, "W": W, "b": b})
    none, dW, _ = patch_embed_backward(xp.ones((2, 4, 5)), pair[0](x, W, b)[1], input_grad=False)
    assert none is None and dW.shape == (48, 5)


def test_layer_norm_normalises_each_row(xp, rng):
    x = xp.asarray(3 + 5 * rng.standard_normal((2, 3, 6)))
    y, _ = layer_norm_forward(x, xp.ones(6), xp.zeros(6))
    y = to_numpy(y)
    np.testing.assert_allclose(y.mean(axis=-1), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=-1), 1, rtol=1e-5)       # eps = 1e-5 against a variance of ~25


def test_layer_norm_gradients(xp, rng):
    x, gamma, beta = arrays(xp, rng, (2, 3, 5), (5,), (5,))
    inputs = {"x": x, "gamma": gamma, "beta": beta}
    print(check_layer(layer_norm_forward, layer_norm_backward, inputs))

    def without_the_variance_term(dy, cache):       # as if var did not depend on x
        x_hat, inv_std, g = cache
        dx_hat = dy * g
        _, dgamma, dbeta = layer_norm_backward(dy, cache)
        return (dx_hat - dx_hat.mean(axis=-1, keepdims=True)) * inv_std, dgamma, dbeta
    with pytest.raises(GradientCheckError, match=r"^x: wrong"):
        check_layer(layer_norm_forward, without_the_variance_term, inputs)


def test_gelu_is_the_tanh_form(xp):
    z = np.linspace(-6, 6, 49)
    h = to_numpy(gelu_forward(xp.asarray(z))[0])
    tanh_form = 0.5 * z * (1 + np.tanh(np.sqrt(2 / np.pi) * (z + 0.044715 * z ** 3)))
    np.testing.assert_allclose(h, tanh_form, rtol=1e-12, atol=1e-15)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in z])
    assert np.abs(h - exact).max() < 1e-3                   # the approximation is close to the erf form
    big = to_numpy(gelu_forward(xp.asarray([-1e3, 1e3]))[0])
    assert np.isfinite(big).all() and big[0] == 0 and big[1] == 1e3


def test_gelu_gradient(xp, rng):
    z = xp.asarray(2 * rng.standard_normal((3, 7)))
    print(check_layer(gelu_forward, gelu_backward, {"z": z}))
    with pytest.raises(GradientCheckError):                 # d/dz (z s) taken as s alone
        check_layer(gelu_forward, lambda dh, cache: dh * cache[1], {"z": z})


# --- GELU in cache-sized pieces -------------------------------------------------------------------------
# On NumPy gelu_forward and gelu_backward run their passes piece by piece (minimf/nn/pieces.py), on
# CuPy in one piece. The oracle is the straightforward whole-array computation; pieces of 1,000
# numbers make several pieces and a partial last one out of small arrays. The outputs start as
# np.empty_like, so these tests make that NaN: an element that no piece writes cannot pass by luck.

def whole_array_gelu(z, dh):
    """(MX-9, MX-10) over the whole arrays, one pass an operation: h, s and dz."""
    xp = get_array_module(z)
    s = z * z
    s *= GELU_A
    s += 1
    s *= z
    s *= GELU_K
    xp.tanh(s, out=s)
    s += 1
    s *= 0.5
    slope = z * z
    slope *= 3 * GELU_A
    slope += 1
    slope *= 2 * GELU_K
    slope *= z
    slope *= s
    slope *= 1 - s
    slope += s
    slope *= dh
    return z * s, s, slope


def gelu_by_pieces(z, dh):
    """h, s and dz from minimf's gelu_forward and gelu_backward."""
    h, (_, s) = gelu_forward(z)
    return h, s, gelu_backward(dh, (z, s))


def pieces_of(size, skip=0):
    """``host_pieces`` with pieces of ``size`` numbers; ``skip`` > 0 starts every piece after the
    first ``skip`` numbers late (the must-fail case: a wrong boundary leaves numbers out)."""
    def cut(arrays):
        first, *rest = pieces.host_pieces(arrays, piece=size)
        return [first] + [slice(p.start + skip, p.stop) for p in rest]
    return cut


@pytest.fixture
def nan_outputs(monkeypatch):
    """np.empty_like gives NaN-filled arrays for the test."""
    full_like = np.full_like
    monkeypatch.setattr(np, "empty_like", lambda a, dtype=None: full_like(a, np.nan, dtype=dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, size", [((3, 70001), pieces.CACHE_PIECE), ((7, 301), 1000),
                                         ((2, 3, 500), 1000), ((5,), 1000)])
def test_gelu_in_pieces_is_the_whole_array_bit_for_bit(rng, monkeypatch, nan_outputs, dtype, shape, size):
    """3 full pieces and a partial one of CACHE_PIECE; 2 and a partial, exactly 3, one small piece of
    1,000; in float32 and float64: the same bits as the whole-array computation, dh left as it was."""
    z = (3 * rng.standard_normal(shape)).astype(dtype)
    dh = rng.standard_normal(shape).astype(dtype)
    given = dh.copy()
    monkeypatch.setattr(mixer_module, "host_pieces", pieces_of(size))
    print(len(mixer_module.host_pieces((z,))), "pieces")
    for mine, whole in zip(gelu_by_pieces(z, dh), whole_array_gelu(z, dh)):
        assert mine.dtype == dtype and np.array_equal(mine, whole)
    assert np.array_equal(dh, given)


@pytest.mark.parametrize("skip", [1, 1000])
def test_gelu_in_pieces_check_catches_a_wrong_boundary(rng, monkeypatch, nan_outputs, skip):
    """Pieces that start one number late (or leave the whole last piece out) do not pass."""
    z, dh = rng.standard_normal((2, 7, 301))
    monkeypatch.setattr(mixer_module, "host_pieces", pieces_of(1000, skip))
    h, s, dz = gelu_by_pieces(z, dh)
    whole_h, whole_s, whole_dz = whole_array_gelu(z, dh)
    assert not np.array_equal(h, whole_h) and not np.array_equal(s, whole_s) and not np.array_equal(dz, whole_dz)
    print(np.isnan(dz).sum(), "numbers left out")


def test_gelu_is_one_piece_on_cupy_with_the_whole_arrays_launches(rng):
    """On "cupy" the whole array is one piece: as many kernel launches as the whole-array
    computation (counted on the stand-in; real CuPy counts none)."""
    xp = get_backend("cupy")
    z, dh = (xp.asarray(a) for a in rng.standard_normal((2, 300, 700)))    # 210,000 numbers: 4 pieces on NumPy
    assert pieces.host_pieces((z,)) == [None] and len(pieces.host_pieces((to_numpy(z),))) == 4
    if not hasattr(xp, "kernel_launches"):
        pytest.skip("only the strict CuPy stand-in counts kernel launches")
    def launches(gelu):
        before = xp.kernel_launches()
        return xp.kernel_launches() - before if gelu(z, dh) else None
    assert launches(gelu_by_pieces) == launches(whole_array_gelu) == 19    # 9 forward, 10 backward
    for a, b in zip(gelu_by_pieces(z, dh), whole_array_gelu(z, dh)):
        assert np.array_equal(to_numpy(a), to_numpy(b))


@pytest.mark.parametrize("bias", [True, False])
def test_mlp_and_channel_mixing_gradients(xp, rng, bias):
    x, W1, b1, W2, b2 = arrays(xp, rng, (2, 3, 4), (4, 6), (6,), (6, 4), (4,))
    if bias:
        inputs = {"x": x, "W1": W1, "b1": b1, "W2": W2, "b2": b2}
        print(check_layer(mlp_forward, mlp_backward, inputs))
        print(check_layer(channel_mixing_forward, channel_mixing_backward, inputs))
    else:
        print(check_layer(lambda x, W1, W2: mlp_forward(x, W1, None, W2, None),
                          lambda d, c: tuple(g for g in mlp_backward(d, c) if g is not None),
                          {"x": x, "W1": W1, "W2": W2}))


def test_mlp_check_rejects_a_missing_gelu_derivative(xp, rng):
    x, W1, b1, W2, b2 = arrays(xp, rng, (2, 3, 4), (4, 6), (6,), (6, 4), (4,))

    def linear_backward(dout, cache):                 # as if gelu were the identity
        cache1, _, cache2 = cache
        dh, dW2, db2 = dense_nd_backward(dout, cache2)
        dx, dW1, db1 = dense_nd_backward(dh, cache1)
        return dx, dW1, db1, dW2, db2
    with pytest.raises(GradientCheckError, match=r"^x, W1, b1: wrong \(W2 [^,]*, b2 [^)]* right\)"):
        check_layer(mlp_forward, linear_backward, {"x": x, "W1": W1, "b1": b1, "W2": W2, "b2": b2})


def test_token_mixing_gradients(xp, rng):
    """S = D = 4, so that a backward that forgets to transpose the gradient back has the right shape."""
    u, W1, b1, W2, b2 = arrays(xp, rng, (2, 4, 4), (4, 3), (3,), (3, 4), (4,))
    inputs = {"u": u, "W1": W1, "b1": b1, "W2": W2, "b2": b2}
    print(check_layer(token_mixing_forward, token_mixing_backward, inputs))
    t, _ = token_mixing_forward(u, W1, b1, W2, b2)          # it mixes patches: = MLP of u^T, transposed back
    np.testing.assert_allclose(to_numpy(t), to_numpy(mlp_forward(u.transpose(0, 2, 1), W1, b1, W2, b2)[0])
                               .transpose(0, 2, 1))

    def not_transposed(dt, cache):
        du, *rest = token_mixing_backward(dt, cache)
        return (du.transpose(0, 2, 1), *rest)
    with pytest.raises(GradientCheckError, match=r"^u: wrong"):
        check_layer(token_mixing_forward, not_transposed, inputs)


def block_pair(bias=True):
    names = [n for n in BLOCK_PARAMS if bias or not n.startswith(("tok_b", "ch_b"))]

    def forward(x, *values):
        p = dict(zip(names, values))
        return mixer_block_forward(x, {n: p.get(n) for n in BLOCK_PARAMS})

    def backward(dy, cache):
        dx, grads = mixer_block_backward(dy, cache)
        return (dx, *[grads[n] for n in names])
    return names, forward, backward


@pytest.mark.parametrize("bias", [True, False])
def test_mixer_block_gradients(xp, rng, bias):
    p = block_params(xp, rng, bias=bias)
    names, forward, backward = block_pair(bias)
    inputs = {"x": xp.asarray(rng.standard_normal((2, 4, 4))), **{n: p[n] for n in names}}
    errors = check_layer(forward, backward, inputs)
    print(errors)
    assert set(errors) == {"x", *names}
    dy = xp.asarray(rng.standard_normal((2, 4, 4)))
    cache = forward(*inputs.values())[1]
    none, grads = mixer_block_backward(dy, cache, input_grad=False)
    _, all_grads = mixer_block_backward(dy, cache)
    assert none is None
    for name in names:
        np.testing.assert_array_equal(to_numpy(grads[name]), to_numpy(all_grads[name]))


def test_mixer_block_check_rejects_a_missing_residual(xp, rng):
    """A backward that forgets the channel-mixing shortcut (dU = LN_2'(MLP_ch'(dY)) only)."""
    p = block_params(xp, rng)
    names, forward, _ = block_pair()

    def no_residual(dy, cache):
        ln1_cache, tok_cache, ln2_cache, ch_cache = cache
        dv, *ch = channel_mixing_backward(dy, ch_cache)
        dx1, dg2, db2 = layer_norm_backward(dv, ln2_cache)            # (no dx1 += dy)
        du, *tok = token_mixing_backward(dx1, tok_cache)
        dx, dg1, db1 = layer_norm_backward(du, ln1_cache)
        grads = dict(zip(("ln1_g", "ln1_b", "tok_W1", "tok_b1", "tok_W2", "tok_b2", "ln2_g", "ln2_b",
                          "ch_W1", "ch_b1", "ch_W2", "ch_b2"), (dg1, db1, *tok, dg2, db2, *ch)))
        return (dx + dx1, *[grads[n] for n in names])
    with pytest.raises(GradientCheckError) as info:
        check_layer(forward, no_residual, {"x": xp.asarray(rng.standard_normal((2, 4, 4))), **p})
    assert "ch_W1" not in str(info.value).split(":")[0]      # the channel MLP's own gradients are right
    print(info.value)


def test_pooling_and_head_gradients(xp, rng):
    y, W, b = arrays(xp, rng, (2, 4, 3), (3, 5), (5,))
    print(check_layer(global_avg_pool_forward, global_avg_pool_backward, {"y": y}))
    print(check_layer(mixer_head_forward, mixer_head_backward, {"y": y, "W": W, "b": b}))
    with pytest.raises(GradientCheckError, match=r"^y: wrong"):       # summed, not averaged over patches
        check_layer(global_avg_pool_forward, lambda dp, S: dp[:, None, :].repeat(S, axis=1), {"y": y})


def test_head_check_rejects_a_weight_gradient_of_summed_patches(xp, rng):
    """dW from the patches' sum instead of their mean: S times too large."""
    y, W, b = arrays(xp, rng, (2, 4, 3), (3, 5), (5,))

    def summed(dscores, cache):
        dy, dW, db = mixer_head_backward(dscores, cache)
        return dy, dW * cache[0], db
    with pytest.raises(GradientCheckError, match=r"^W: wrong"):
        check_layer(mixer_head_forward, summed, {"y": y, "W": W, "b": b})


def cached_numbers(cache, params):
    """How many numbers the arrays in a (nested) cache hold, each array once, the parameters left out."""
    seen, skip = {}, {id(a) for a in params.values()}
    stack = [cache]
    while stack:
        item = stack.pop()
        if isinstance(item, tuple):
            stack.extend(item)
        elif hasattr(item, "size") and hasattr(item, "shape") and id(item) not in skip:
            seen[id(item)] = item.size
    return sum(seen.values())


@pytest.mark.parametrize("N, S, D, H_t, H_c", [(2, 4, 3, 5, 7), (3, 9, 8, 2, 16)])
def test_block_cache_numbers_counts_the_cache(rng, N, S, D, H_t, H_c):
    """block_cache_numbers, which lesson 15 and benchmarks/mixer_memory.py quote, is the cache's true size."""
    p = init_block(rng, S, D, H_t, H_c, np)
    _, cache = mixer_block_forward(rng.standard_normal((N, S, D)).astype("float32"), p)
    assert cached_numbers(cache, p) == block_cache_numbers(N, S, D, H_t, H_c)


# --- the networks --------------------------------------------------------------------------------------

def mixer(cls, backend="numpy", seed=0, dtype="float64", bias=True, depth=2, lr=1e-3, **sizes):
    return cls(input_shape=SHAPE, patch=PATCH, depth=depth, num_classes=CLASSES, backend=backend, seed=seed,
               bias=bias, dtype=dtype, lr=lr, **{**SIZES, **sizes})


def images(xp, n=3, seed=0, shape=SHAPE, dtype="float64"):
    rng = np.random.default_rng(seed)
    return (xp.asarray(rng.standard_normal((n, *shape)).astype(dtype)),
            xp.asarray(rng.integers(0, CLASSES, n)))


def perturb(net, seed=7):
    """Every parameter moved off its initial value (LN scales 1 and shifts 0 hide slips)."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        for a in layer.params.values():
            if a is not None:
                a += net.xp.asarray(0.3 * rng.standard_normal(a.shape))
    return net


def local_loss(layer, x, y):
    """L_i (6) of one MF layer on its input x."""
    return softmax_cross_entropy(layer.goodness(layer.forward(x)), y)[0]


def present(params):
    return {k: v for k, v in params.items() if v is not None}


def test_shapes_parameters_and_a_shared_trunk():
    mf, bp = mixer(MonoForwardMixer, depth=3), mixer(BackpropMixer, depth=3)
    first = mf.layers[0].params
    assert first["embed_W"].shape == (16, 4) and first["tok_W1"].shape == (4, 3) and first["ch_W1"].shape == (4, 5)
    assert [l.M.shape for l in mf.layers] == [(CLASSES, 4)] * 3
    assert "embed_W" not in mf.layers[1].params
    assert [type(l).__name__ for l in bp.layers] == ["PatchEmbedding"] + ["MixerBlock"] * 3 + ["DenseLayer"]
    np.testing.assert_array_equal(first["embed_W"], bp.layers[0].W)           # one seed, one trunk
    for i in range(3):
        for name in BLOCK_PARAMS:
            np.testing.assert_array_equal(mf.layers[i].params[name], bp.layers[i + 1].params[name])
    np.testing.assert_array_equal(first["ln1_g"], 1)
    bound = 1 / np.sqrt(4)
    assert all(np.abs(l.M).max() <= bound for l in mf.layers)
    # MF's "bp" mode counts the trunk and the last M; "ff" every M
    trunk = bp.num_parameters() - bp.layers[-1].W.size - bp.layers[-1].b.size
    assert mf.num_parameters("bp") == trunk + CLASSES * 4
    assert mf.num_parameters("ff") == trunk + 3 * CLASSES * 4


@pytest.mark.parametrize("bias", [True, False])
def test_mf_local_gradients_of_every_block(backend, xp, bias):
    net = perturb(mixer(MonoForwardMixer, backend, bias=bias))
    x, y = images(xp)
    grads = net.local_gradients(x, y)
    inputs = net.layer_inputs(x)
    for i, (layer, layer_x) in enumerate(zip(net.layers, inputs)):
        params = present(layer.params)
        errors = check_gradients(lambda: local_loss(layer, layer_x, y), params, grads[i])
        print(f"block {i + 1}", {k: f"{v:.1e}" for k, v in errors.items()})
        assert set(errors) == set(params) and set(present(grads[i])) == set(params)


@pytest.mark.parametrize("wrong", ["M_doubled", "ln2_g_of_ln1", "tok_W1_of_both_losses", "embed_W_transposed"])
def test_mf_local_gradient_check_rejects_wrong_gradients(wrong):
    net = perturb(mixer(MonoForwardMixer))
    x, y = images(np)
    first, second = net.layers
    grads = dict(net.local_gradients(x, y)[0])
    if wrong == "M_doubled":
        grads["M"] = 2 * grads["M"]
    elif wrong == "ln2_g_of_ln1":                 # the two layer norms' scales mixed up
        grads["ln2_g"] = grads["ln1_g"]
    elif wrong == "tok_W1_of_both_losses":        # backprop's gradient: of L_1 + L_2, through block 2
        both = lambda: local_loss(first, x, y) + local_loss(second, first.forward(x), y)
        grads["tok_W1"] = numerical_grad(both, first.params["tok_W1"])
    else:                                         # (C*P*P, D) = (16, 4): a transposed product reshaped
        grads["embed_W"] = grads["embed_W"].T.reshape(16, 4)
    with pytest.raises(GradientCheckError) as info:
        check_gradients(lambda: local_loss(first, x, y), present(first.params), grads)
    print(info.value)


def test_mf_gradient_stops_at_the_block_input():
    """Block 1's MF gradient is that of L_1 alone: L_2 does depend on block 1's parameters, yet
    changing block 2 leaves block 1's gradients exactly as they were; and block 2's gradients are
    the same whatever came before its input (its input is a constant to it). Were block 2's error
    passed down to block 1 (dX_1 = block 2's input gradient), the first assertion would fail."""
    net = perturb(mixer(MonoForwardMixer))
    x, y = images(np)
    first, second = net.layers
    g1 = net.local_gradients(x, y)[0]
    W = first.params["ch_W1"]
    through_both = numerical_grad(lambda: local_loss(first, x, y) + local_loss(second, first.forward(x), y), W)
    assert np.abs(through_both - g1["ch_W1"]).max() > 1e-3 * np.abs(g1["ch_W1"]).max()   # L_2 depends on it ...
    changed = perturb(mixer(MonoForwardMixer))
    for a in changed.layers[1].params.values():
        a += np.random.default_rng(5).standard_normal(a.shape)
    g1_changed = changed.local_gradients(x, y)[0]
    for name, g in g1.items():                                                    # ... but not g_1
        np.testing.assert_array_equal(g1_changed[name], g, err_msg=name)
    _, _, g2 = second.local_gradients(first.forward(x), y)
    assert set(g2) == set(second.params)                                          # no gradient for the input


def test_mf_block_computes_no_input_gradient(monkeypatch):
    """Inside an MF layer the block's backward is asked for no input gradient (the cut saves that
    work too), except in the first layer, whose patch embedding needs it."""
    from minimf.rules import mixer as rules_mixer
    asked = []
    original = rules_mixer.mixer_block_backward
    monkeypatch.setattr(rules_mixer, "mixer_block_backward",
                        lambda dy, cache, input_grad=True: asked.append(input_grad) or original(dy, cache, input_grad))
    net = mixer(MonoForwardMixer, depth=3)
    net.local_gradients(*images(np))
    assert asked == [True, False, False]


def test_bp_gradients_of_the_whole_network(backend, xp):
    net = perturb(mixer(BackpropMixer, backend))
    x, y = images(xp)
    grads = net.gradients(x, y)
    loss = lambda: softmax_cross_entropy(net.forward(x)[0], y)[0]
    for i, layer in enumerate(net.layers):
        errors = check_gradients(loss, present(layer.params), grads[i])
        print(f"layer {i}", {k: f"{v:.1e}" for k, v in errors.items()})
    # must fail: block 1's gradient taken from its own MF-style loss is not BP's
    mf = perturb(mixer(MonoForwardMixer, backend))
    for name in BLOCK_PARAMS:
        net.layers[1].params[name][...] = mf.layers[0].params[name]
    net.layers[0].W[...] = mf.layers[0].params["embed_W"]
    net.layers[0].b[...] = mf.layers[0].params["embed_b"]
    wrong = {**net.gradients(x, y)[1], "tok_W1": mf.local_gradients(x, y)[0]["tok_W1"]}
    with pytest.raises(GradientCheckError, match=r"^tok_W1: wrong"):
        check_gradients(loss, present(net.layers[1].params), wrong)


def test_initial_losses_are_about_log_k():
    x, y = images(np, n=64, dtype="float32")
    for cls in (MonoForwardMixer, BackpropMixer):
        losses = mixer(cls, dtype="float32").train_step(x, y)
        for loss in (losses if isinstance(losses, list) else [losses]):
            assert abs(float(loss) - np.log(CLASSES)) < 0.5


@pytest.mark.parametrize("cls", [MonoForwardMixer, BackpropMixer])
def test_training_lowers_the_losses(backend, xp, cls):
    net = mixer(cls, backend, dtype="float32", lr=1e-2, width=8, channel_hidden=16)
    x, y = images(xp, n=24, dtype="float32")
    first = net.train_step(x, y)
    for _ in range(15):
        last = net.train_step(x, y, validate=False)
    first, last = (np.array([float(v) for v in (s if isinstance(s, list) else [s])]) for s in (first, last))
    print(cls.__name__, first, last)
    assert (last < first - 0.1).all()
    result = net.evaluate(x, y)
    assert set(result) == ({"bp", "ff", "layers"} if cls is MonoForwardMixer else {"acc"})
    if cls is MonoForwardMixer:
        assert len(result["layers"]) == 2


def strict_cupy_or_skip():
    xp = get_backend("cupy")
    if not hasattr(xp, "host_syncs"):
        pytest.skip("real CuPy does not count host syncs; the strict stand-in does")
    return xp


@pytest.mark.parametrize("cls", [MonoForwardMixer, BackpropMixer])
def test_no_host_sync_in_a_step_or_an_evaluation_batch(cls):
    xp = strict_cupy_or_skip()
    net = mixer(cls, "cupy", dtype="float32")
    batches = [images(xp, n=6, seed=s, dtype="float32") for s in range(5)]
    before = xp.host_syncs()
    losses = [net.train_step(x, y, validate=False) for x, y in batches]
    assert xp.host_syncs() == before, f"{xp.host_syncs() - before} host syncs in 5 steps"
    x, y = images(xp, n=20, dtype="float32")
    before = xp.host_syncs()
    net.evaluate(x, y, batch_size=7, validate=False)
    assert xp.host_syncs() == before + 1                    # the counts, read once
    last = losses[-1][0] if isinstance(losses[-1], list) else losses[-1]
    assert float(last) > 0


# --- the parallel trainers and saving ---------------------------------------------------------------------

def test_pipeline_equals_sequential_bit_for_bit():
    batches = make_batches(SHAPE, 5, 6, classes=CLASSES)
    rates = [1e-3 * (1 + k) for k in range(5)]
    sequential, pipelined = mixer(MonoForwardMixer, dtype="float32", depth=3), mixer(MonoForwardMixer,
                                                                                      dtype="float32", depth=3)
    expected = sequential_run(sequential, batches, rates)
    losses = train_pipelined(use_rates(pipelined, rates), batches)
    assert [[float(v) for v in step] for step in losses] == [[float(v) for v in step] for step in expected]
    for label, a, b in parameter_pairs(sequential, pipelined):
        np.testing.assert_array_equal(b, a, err_msg=label)


def test_pipeline_on_the_cupy_backend(backend):
    xp = get_backend(backend)
    batches = [(xp.asarray(x), xp.asarray(y)) for x, y in make_batches(SHAPE, 4, 6, classes=CLASSES)]
    sequential, pipelined = (mixer(MonoForwardMixer, backend, dtype="float32") for _ in range(2))
    expected = [sequential.train_step(x, y) for x, y in batches]
    losses = train_pipelined(pipelined, iter(batches), validate=False)
    np.testing.assert_allclose([[float(v) for v in s] for s in losses], [[float(v) for v in s] for s in expected],
                               rtol=1e-5)
    for label, a, b in parameter_pairs(sequential, pipelined):
        np.testing.assert_allclose(to_numpy(b), to_numpy(a), rtol=1e-4, atol=1e-6, err_msg=label)


@pytest.mark.parametrize("cls", [MonoForwardMixer, BackpropMixer])
def test_batch_split_equals_sequential(cls):
    batches = make_batches(SHAPE, 3, 8, classes=CLASSES)
    batches = [(x.astype("float64"), y) for x, y in batches]
    one, sequential, split = (mixer(cls) for _ in range(3))
    sequential_run(sequential, batches)
    train_batch_split(one, batches, threads=1)
    for label, a, b in parameter_pairs(sequential, one):
        np.testing.assert_array_equal(b, a, err_msg=label)          # one thread, one part: bit for bit
    train_batch_split(split, batches, threads=2, micro_batch=3)
    for label, a, b in parameter_pairs(sequential, split):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-12, err_msg=label)


@pytest.mark.parametrize("cls", [MonoForwardMixer, BackpropMixer])
def test_state_dict_round_trip(cls):
    net, other = mixer(cls, dtype="float32", seed=1), mixer(cls, dtype="float32", seed=2)
    x, y = images(np, n=10, dtype="float32")
    net.train_step(x, y)
    state = net.state_dict()
    assert "layers.0.W" in state or "layers.0.embed_W" in state
    other.load_state_dict(state)
    for mode in (("bp", "ff") if cls is MonoForwardMixer else (None,)):
        args = () if mode is None else (mode,)
        np.testing.assert_array_equal(other.scores(x, *args), net.scores(x, *args))
    with pytest.raises(ValueError, match="shape"):
        mixer(cls, dtype="float32", width=6).load_state_dict(state)


@pytest.mark.parametrize("cls", [MonoForwardMixer, BackpropMixer])
def test_a_resumed_run_ends_as_the_uninterrupted_one(tmp_path, cls):
    """Parameters and Adam's state through a checkpoint folder (minimf/checkpoint.py): 2 + 2 steps
    with a save and a load between them give the 4-step run's parameters, bit for bit."""
    from minimf.checkpoint import load_checkpoint, restore_training_state, save_checkpoint, training_state
    batches = make_batches(SHAPE, 4, 6, classes=CLASSES)
    straight = mixer(cls, dtype="float32")
    sequential_run(straight, batches)
    first = mixer(cls, dtype="float32")
    sequential_run(first, batches[:2])
    save_checkpoint(tmp_path / "checkpoint", *training_state(first))
    resumed = mixer(cls, dtype="float32", seed=9)              # another start: everything comes from the file
    restore_training_state(resumed, *load_checkpoint(tmp_path / "checkpoint"))
    sequential_run(resumed, batches[2:])
    for label, a, b in parameter_pairs(straight, resumed):
        np.testing.assert_array_equal(b, a, err_msg=label)


# --- data sets' shapes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, patches", [((1, 28, 28), 49), ((3, 32, 32), 64), ((3, 28, 28), 49)])
@pytest.mark.parametrize("cls", [MonoForwardMixer, BackpropMixer])
def test_mnist_cifar_and_pathmnist_shapes(cls, shape, patches):
    """4 x 4 patches of MNIST (1, 28, 28), CIFAR-10 (3, 32, 32) and PathMNIST (3, 28, 28)."""
    net = cls(input_shape=shape, patch=4, width=8, token_hidden=4, channel_hidden=8, depth=2, num_classes=10)
    assert net.patches == patches
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, *shape)).astype("float32"), rng.integers(0, 10, 5)
    net.train_step(x, y)
    assert net.predict(x).shape == (5,)


@pytest.mark.parametrize("cls", [MonoForwardMixer, BackpropMixer])
def test_cifar10_split_trains(tiny_cifar10, cls):
    from minimf.datasets import load, normalization
    train = load("cifar10", "train", progress=False)
    mean, std = normalization("cifar10")
    x = ((train.x[:40] - mean) / std).astype("float32")
    net = cls(input_shape=(3, 32, 32), patch=8, width=8, token_hidden=4, channel_hidden=8, depth=2, num_classes=10)
    net.train_step(x, train.y[:40])


@pytest.mark.parametrize("bad, message", [
    (dict(patch=5), "do not tile 8x8"), (dict(patch=0), "patch must be a positive integer"),
    (dict(width=0), "width must be a positive integer"), (dict(depth=1.5), "depth must be a positive integer"),
    (dict(input_shape=(8, 8)), r"input_shape must be \(C, H, W\)")])
@pytest.mark.parametrize("cls", [MonoForwardMixer, BackpropMixer])
def test_bad_sizes_are_clear_errors(cls, bad, message):
    options = dict(input_shape=SHAPE, patch=PATCH, num_classes=CLASSES, **SIZES, depth=2)
    options.update(bad)
    with pytest.raises(ValueError, match=message):
        cls(**options)


@pytest.mark.slow
@pytest.mark.parametrize("cls", [MonoForwardMixer, BackpropMixer])
def test_mnist_with_4x4_patches_learns(cls):
    """Two epochs on 3000 MNIST digits (packaged with minimf): far above chance (0.1) on 1000 others.
    The bar is below what an MLP reaches on the same data: a small Mixer learns slowly from little
    data (docs/results.md has the Mixer's accuracies)."""
    from minimf.datasets import MNIST_MEAN, MNIST_STD, load
    train, test = load("mnist", "train"), load("mnist", "test")
    norm = lambda x: ((x - MNIST_MEAN) / MNIST_STD).astype("float32")
    net = cls(input_shape=(1, 28, 28), patch=4, width=32, token_hidden=16, channel_hidden=64, depth=2, seed=0,
              lr=3e-3)
    x, y = norm(train.x[:3000]), train.y[:3000]
    for _ in range(2):
        for start in range(0, 3000, 50):
            net.train_step(x[start:start + 50], y[start:start + 50])
    result = net.evaluate(norm(test.x[:1000]), test.y[:1000])
    print(cls.__name__, result)
    assert (result["bp"] if cls is MonoForwardMixer else result["acc"]) > 0.45


def test_the_memory_benchmark_runs(capsys):
    """benchmarks/mixer_memory.py at a tiny setting (measured by hand, never timed here): MF's step
    peak does not grow with depth, BP's does."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "mixer_memory.py"
    spec = importlib.util.spec_from_file_location("bench_mixer_memory", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--depths", "1", "3", "--width", "8", "--token-hidden", "4", "--channel-hidden", "8",
                        "--batch-size", "8", "--image", "mnist"]) == 0
    out = capsys.readouterr().out
    assert "step peak MiB" in out and "31%" in out
    mlp = [line.split() for line in out.splitlines() if line.split()[:1] == ["MLP"]]
    assert len(mlp) == 1 and 0.9 < float(mlp[0][-1].rstrip("%")) / 100 < 1.1   # total MF/BP: parameters dominate
    rows = [line.split() for line in out.splitlines() if line.strip().split(" ")[0] in ("1", "3")]
    (_, _, _, _, _, mf1, bp1, *_), (_, _, _, _, _, mf3, bp3, *_) = rows
    assert float(bp3) > float(bp1) and float(mf3) < 1.5 * float(mf1)


def test_the_elementwise_benchmark_runs(capsys, monkeypatch):
    """benchmarks/mixer_elementwise.py at a tiny setting (measured by hand, never timed here), with
    this mixer.py as the ``--before`` file."""
    import importlib.util
    from pathlib import Path
    benchmarks = Path(__file__).resolve().parent.parent / "benchmarks"
    monkeypatch.syspath_prepend(str(benchmarks))             # for its helper, benchmarks/blas_threads.py
    spec = importlib.util.spec_from_file_location("bench_mixer_elementwise", benchmarks / "mixer_elementwise.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--batch-size", "4", "--rounds", "1", "--repeats", "1", "--before", mixer_module.__file__]) == 0
    out = capsys.readouterr().out
    assert "pieces / one piece" in out and "pieces / before" in out and "MF step" in out
    assert mixer_module.host_pieces is pieces.host_pieces                  # put back after the run

