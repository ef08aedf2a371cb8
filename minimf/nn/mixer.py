"""The MLP-Mixer (Tolstikhin et al. 2021, "MLP-Mixer: An all-MLP Architecture for Vision", arXiv
2105.01601) as functional forward/backward pairs, each derived by hand and checked against finite
differences in ``tests/test_mixer.py``.

An image is cut into S non-overlapping P x P patches, each patch is mapped to D numbers by one
dense map shared by all patches, and then every Mixer block mixes the (N, S, D) array twice: across
patches (token mixing, one MLP per channel, shared by all channels) and across channels (channel
mixing, one MLP per patch, shared by all patches)::

    X = patches(x) W_e + b_e                      (MX-1) patch embedding: (N, S, C*P*P) -> (N, S, D)
    U = X + T(MLP_tok(T(LN_1(X))))                (MX-2) token mixing, T swaps the last two axes
    Y = U + MLP_ch(LN_2(U))                       (MX-3) channel mixing
    MLP(v) = gelu(v W_1 + b_1) W_2 + b_2          (MX-4) over the last axis
    p = (1/S) sum_s Y[:, s, :]                    (MX-5) global average pooling over patches
    scores = p W_h + b_h                          (MX-6) classifier head

(MX-2) and (MX-3) are the Mixer paper's eq. (1) for a whole batch; LN is layer normalisation over
the D channels of every patch, with a learned scale and shift (MX-7). A Mixer is (MX-1), then
``depth`` blocks, then (MX-5) and (MX-6). (The paper also normalises once more before pooling; here
the head reads the last block's output directly, for BP and MF alike, minimf/rules/mixer.py.)

Layer normalisation, per patch (any leading axes), over the last axis of length D::

    mu = mean_d x_d,   var = mean_d (x_d - mu)^2,   x^ = (x - mu) / sqrt(var + eps)
    y = gamma * x^ + beta                                                                 (MX-7)
    dgamma = sum_rows dy * x^,   dbeta = sum_rows dy,   dx^ = dy * gamma
    dx = (dx^ - mean_d dx^ - x^ mean_d(dx^ * x^)) / sqrt(var + eps)                         (MX-8)

(MX-8) follows from x^ = (x - mu) s with s = 1/sqrt(var + eps): differentiating mu and var removes
from dx^ its mean and its component along x^. No batch statistics are involved: every patch is
normalised on its own, so a batch's gradient is the mean of its examples' (batch-split training).

GELU in its tanh form (Hendrycks & Gimpel 2016; the form the Mixer authors' JAX code uses, flax's
``nn.gelu`` with ``approximate=True``; NumPy has no erf for the exact form)::

    gelu(z) = z/2 (1 + tanh(k (z + a z^3))) = z * sigmoid(v),   v = 2k (z + a z^3)         (MX-9)
    k = sqrt(2/pi), a = 0.044715;   1/2 (1 + tanh(u)) = sigmoid(2u)
    dgelu/dz = s + z s (1 - s) dv/dz,   s = sigmoid(v),   dv/dz = 2k (1 + 3a z^2)          (MX-10)

s is computed as (1 + tanh(v/2)) / 2: one transcendental function, stable for any z (tanh saturates
at +-1 where exp would overflow) and on every backend; the logistic function through exp and log1p
(``sigmoid``, minimf/nn/losses.py) gives the same numbers to rounding in three times as many passes,
and GELU is the Mixer's largest element-wise cost. On NumPy both directions run in cache-sized pieces
(minimf/nn/pieces.py): the nine or ten passes over a piece find it in the CPU's cache, where passes
over the whole array would each stream it through main memory; the numbers are the same, bit for bit.

The dense maps act on the last axis of an array of any rank, as one (rows, D) product: the token
MLP first makes its transposed input (N, D, S) contiguous, so that its rows are the D channels of
every example and the product is one matrix product, not N small ones.

Every backward takes ``input_grad``: False skips the gradient of the input (a matrix product and
a normalisation's backward) where nobody needs it: at the image (the patch embedding) and, in
Mono-Forward, at the input of every block, where MF stops the gradient.

Shape letters: N batch, C image channels, H x W image size, P patch size, S = (H/P)(W/P) patches,
D channels (the Mixer's width), H_t token-MLP hidden size, H_c channel-MLP hidden size, K classes
(``C`` is taken by the image's channels here).
"""
from minimf.backend import get_array_module
from minimf.nn.layers import init_dense
from minimf.nn.norm import EPS
from minimf.nn.pieces import flat_parts, host_pieces

GELU_K = (2 / 3.141592653589793) ** 0.5   # sqrt(2 / pi)
GELU_A = 0.044715

# the parameters of one Mixer block, in the order ``init_block`` draws them and ``params`` lists them
BLOCK_PARAMS = ("ln1_g", "ln1_b", "tok_W1", "tok_b1", "tok_W2", "tok_b2",
                "ln2_g", "ln2_b", "ch_W1", "ch_b1", "ch_W2", "ch_b2")


# --- patches ---------------------------------------------------------------------------------------

def patch_grid(image_shape, patch):
    """(H/P, W/P) for images of ``image_shape`` (C, H, W) cut into P x P patches; a ValueError
    when P is not a positive integer that divides H and W."""
    _, H, W = image_shape
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1:
        raise ValueError(f"patch must be a positive integer, got {patch!r}")
    if H % patch or W % patch:
        raise ValueError(f"{patch}x{patch} patches do not tile {H}x{W} images: the patch size must divide "
                         f"both (e.g. 4 or 7 for 28x28, 4 or 8 for 32x32)")
    return H // patch, W // patch


def patchify(x, patch):
    """x: (N, C, H, W) -> (N, S, C*P*P): patch (i, j) of the (H/P) x (W/P) grid is row s = i*(W/P) + j,
    its C*P*P numbers in the order (channel, row in the patch, column in the patch)."""
    N, C, H, W = x.shape
    gh, gw = H // patch, W // patch
    return x.reshape(N, C, gh, patch, gw, patch).transpose(0, 2, 4, 1, 3, 5).reshape(N, gh * gw, C * patch * patch)


def unpatchify(p, image_shape, patch):
    """The inverse of ``patchify``: p (N, S, C*P*P) -> (N, C, H, W) for ``image_shape`` (N, C, H, W)."""
    N, C, H, W = image_shape
    gh, gw = H // patch, W // patch
    return p.reshape(N, gh, gw, C, patch, patch).transpose(0, 3, 1, 4, 2, 5).reshape(N, C, H, W)


# --- a dense map over the last axis ------------------------------------------------------------------

def dense_nd_forward(x, W, b=None):
    """z = x W + b over the last axis. x: (..., D_in)  W: (D_in, D_out)  b: (D_out,) or None.

    Returns z: (..., D_out) and the cache (x, W, has_bias). x is read as one (rows, D_in) matrix (a
    view when x is contiguous)."""
    D_in, D_out = W.shape
    z = x.reshape(-1, D_in) @ W
    if b is not None:
        z += b
    return z.reshape(*x.shape[:-1], D_out), (x, W, b is not None)


def dense_nd_backward(dz, cache, input_grad=True):
    """Gradients of ``dense_nd_forward`` given dz: (..., D_out):
    dx = dz W^T (None without ``input_grad``), dW = sum_rows x^T dz: (D_in, D_out), db = sum_rows dz."""
    x, W, has_bias = cache
    D_in, D_out = W.shape
    rows = dz.reshape(-1, D_out)
    dW = x.reshape(-1, D_in).T @ rows
    db = rows.sum(axis=0) if has_bias else None
    dx = (rows @ W.T).reshape(x.shape) if input_grad else None
    return dx, dW, db


# --- patch embedding (MX-1) --------------------------------------------------------------------------

def patch_embed_forward(x, W, b, patch):
    """(MX-1) X = patchify(x) W + b.  x: (N, C, H, W)  W: (C*P*P, D)  b: (D,) or None.

    Returns X: (N, S, D), S = (H/P)(W/P), and the cache."""
    X, dense_cache = dense_nd_forward(patchify(x, patch), W, b)
    return X, (dense_cache, x.shape, patch)


def patch_embed_backward(dX, cache, input_grad=True):
    """dX: (N, S, D) -> dx: (N, C, H, W) (None without ``input_grad``: nothing needs the image's
    gradient in training), dW: (C*P*P, D), db: (D,) or None."""
    dense_cache, shape, patch = cache
    dp, dW, db = dense_nd_backward(dX, dense_cache, input_grad)
    return (unpatchify(dp, shape, patch) if input_grad else None), dW, db


# --- layer normalisation with scale and shift (MX-7, MX-8) ------------------------------------------

def layer_norm_forward(x, gamma, beta, eps=EPS):
    """(MX-7) y = gamma * (x - mu) / sqrt(var + eps) + beta, mu and var over the last axis.

    x: (..., D)   gamma, beta: (D,). Returns y: (..., D) and the cache (x^, 1/sqrt(var + eps), gamma)."""
    xp = get_array_module(x)
    mu = x.mean(axis=-1, keepdims=True)
    centred = x - mu
    var = (centred * centred).mean(axis=-1, keepdims=True)
    inv_std = 1 / xp.sqrt(var + eps)                       # (..., 1)
    x_hat = centred
    x_hat *= inv_std                                       # in place: centred is ours
    y = x_hat * gamma
    y += beta
    return y, (x_hat, inv_std, gamma)


def layer_norm_backward(dy, cache, input_grad=True):
    """(MX-8) dy: (..., D) -> dx: (..., D) (None without ``input_grad``), dgamma: (D,), dbeta: (D,)."""
    x_hat, inv_std, gamma = cache
    D = x_hat.shape[-1]
    dgamma = (dy * x_hat).reshape(-1, D).sum(axis=0)
    dbeta = dy.reshape(-1, D).sum(axis=0)
    if not input_grad:
        return None, dgamma, dbeta
    dx_hat = dy * gamma
    dx = dx_hat - dx_hat.mean(axis=-1, keepdims=True)
    dx -= x_hat * (dx_hat * x_hat).mean(axis=-1, keepdims=True)
    dx *= inv_std
    return dx, dgamma, dbeta


# --- GELU, tanh form (MX-9, MX-10) ---------------------------------------------------------------------

def gelu_forward(z):
    """(MX-9) h = z * sigmoid(2k (z + a z^3)), element-wise (the tanh form of GELU).

    z: any shape. Returns h (z's shape) and the cache (z, s) with s = sigmoid(v) (z's shape). On
    NumPy in cache-sized pieces (``host_pieces``), on CuPy in one piece, the whole array."""
    xp = get_array_module(z)
    s, h = xp.empty_like(z), xp.empty_like(z)
    for piece in host_pieces((z, s, h)):
        _gelu_forward_piece(xp, *flat_parts(piece, z, s, h))
    return h, (z, s)


def _gelu_forward_piece(xp, z, s, h):
    """``gelu_forward`` on one piece: writes s and h (views of the whole arrays) from z."""
    xp.multiply(z, z, out=s)
    s *= GELU_A
    s += 1
    s *= z
    s *= GELU_K                                            # v/2 = k (z + a z^3)
    xp.tanh(s, out=s)
    s += 1
    s *= 0.5                                               # s = (1 + tanh(v/2)) / 2 = sigmoid(v)
    xp.multiply(z, s, out=h)                               # (MX-9) h = z * sigmoid(v)


def gelu_backward(dh, cache):
    """(MX-10) dz = dh * (s + z s (1 - s) 2k (1 + 3a z^2)).

    dh: the shape of z. Returns dz, a new array (dh and the cache are only read). On NumPy in
    cache-sized pieces (``host_pieces``), on CuPy in one piece, the whole array. Where z dv/dz (about
    0.2 z^3) overflows (|z| above about 1e13 in float32) and s (1 - s) is zero, dz is NaN: activations
    that large mean training has diverged, and the training loop stops on the parameters that are no
    longer finite (minimf/training/loop.py's ``TrainingDiverged``)."""
    z, s = cache
    xp = get_array_module(z)
    dz = xp.empty_like(z)
    for piece in host_pieces((z, s, dh, dz)):
        _gelu_backward_piece(xp, *flat_parts(piece, z, s, dh, dz))
    return dz


def _gelu_backward_piece(xp, z, s, dh, dz):
    """``gelu_backward`` on one piece: writes dz (a view of the whole array) from z, s and dh."""
    slope = xp.multiply(z, z, out=dz)
    slope *= 3 * GELU_A
    slope += 1
    slope *= 2 * GELU_K                                    # dv/dz
    slope *= z
    slope *= s
    slope *= 1 - s                                         # z s (1 - s) dv/dz
    slope += s
    slope *= dh                                            # (MX-10)


# --- the two MLPs (MX-2 to MX-4) ---------------------------------------------------------------------

def mlp_forward(x, W1, b1, W2, b2):
    """(MX-4) out = gelu(x W1 + b1) W2 + b2 over the last axis.

    x: (..., D)   W1: (D, H)   b1: (H,) or None   W2: (H, D)   b2: (D,) or None
    Returns out: (..., D) and the cache."""
    z, cache1 = dense_nd_forward(x, W1, b1)
    h, gelu_cache = gelu_forward(z)
    out, cache2 = dense_nd_forward(h, W2, b2)
    return out, (cache1, gelu_cache, cache2)


def mlp_backward(dout, cache, input_grad=True):
    """dout: (..., D) -> dx: (..., D) (None without ``input_grad``), dW1: (D, H), db1: (H,), dW2: (H, D),
    db2: (D,) (the biases' None where the forward had none)."""
    cache1, gelu_cache, cache2 = cache
    dh, dW2, db2 = dense_nd_backward(dout, cache2)
    dz = gelu_backward(dh, gelu_cache)
    dx, dW1, db1 = dense_nd_backward(dz, cache1, input_grad)
    return dx, dW1, db1, dW2, db2


def token_mixing_forward(u, W1, b1, W2, b2):
    """(MX-2) T(MLP(T(u))): the MLP over the S patches, shared by all D channels.

    u: (N, S, D)   W1: (S, H_t)   b1: (H_t,) or None   W2: (H_t, S)   b2: (S,) or None
    Returns t: (N, S, D) (a transposed view of the MLP's (N, D, S) output) and the cache."""
    xp = get_array_module(u)
    ut = xp.ascontiguousarray(u.transpose(0, 2, 1))        # (N, D, S): one row per channel
    out, cache = mlp_forward(ut, W1, b1, W2, b2)
    return out.transpose(0, 2, 1), cache


def token_mixing_backward(dt, cache, input_grad=True):
    """dt: (N, S, D) -> du: (N, S, D) (None without ``input_grad``), dW1: (S, H_t), db1: (H_t,),
    dW2: (H_t, S), db2: (S,) (None for a missing bias)."""
    xp = get_array_module(dt)
    dut, dW1, db1, dW2, db2 = mlp_backward(xp.ascontiguousarray(dt.transpose(0, 2, 1)), cache, input_grad)
    return (None if dut is None else dut.transpose(0, 2, 1)), dW1, db1, dW2, db2


def channel_mixing_forward(v, W1, b1, W2, b2):
    """(MX-3) MLP(v) over the D channels of every patch. v: (N, S, D)  W1: (D, H_c)  b1: (H_c,) or None
    W2: (H_c, D)  b2: (D,) or None. Returns c: (N, S, D) and the cache."""
    return mlp_forward(v, W1, b1, W2, b2)


def channel_mixing_backward(dc, cache, input_grad=True):
    """dc: (N, S, D) -> dv: (N, S, D) (None without ``input_grad``), dW1: (D, H_c), db1: (H_c,),
    dW2: (H_c, D), db2: (D,) (None for a missing bias)."""
    return mlp_backward(dc, cache, input_grad)


# --- a Mixer block -----------------------------------------------------------------------------------

def mixer_block_forward(x, p):
    """One Mixer block, (MX-2) then (MX-3), with the parameters ``p`` (a dict keyed by BLOCK_PARAMS).

    x: (N, S, D). ln1_g, ln1_b, ln2_g, ln2_b: (D,); tok_W1 (S, H_t), tok_b1 (H_t,), tok_W2 (H_t, S),
    tok_b2 (S,); ch_W1 (D, H_c), ch_b1 (H_c,), ch_W2 (H_c, D), ch_b2 (D,) (the biases may be None).
    Returns y: (N, S, D) and the cache: what the backward needs, ``block_cache_numbers`` numbers in
    all (the two normalised x^, the token MLP's (N, D, S) input and its three (N, D, H_t) arrays, the
    channel MLP's (N, S, D) input and its three (N, S, H_c) arrays, the two 1/sqrt(var + eps))."""
    u, ln1_cache = layer_norm_forward(x, p["ln1_g"], p["ln1_b"])
    t, tok_cache = token_mixing_forward(u, p["tok_W1"], p["tok_b1"], p["tok_W2"], p["tok_b2"])
    x1 = x + t                                             # (MX-2) the token-mixing residual
    v, ln2_cache = layer_norm_forward(x1, p["ln2_g"], p["ln2_b"])
    c, ch_cache = channel_mixing_forward(v, p["ch_W1"], p["ch_b1"], p["ch_W2"], p["ch_b2"])
    x1 += c                                                # (MX-3) the channel-mixing residual
    return x1, (ln1_cache, tok_cache, ln2_cache, ch_cache)


def block_cache_numbers(N, S, D, token_hidden, channel_hidden):
    """How many numbers one block's cache holds (``mixer_block_forward``), the arrays BP keeps alive
    for every block until its backward pass and MF for one block at a time::

        4 N S D          LN_1's and LN_2's x^ (MX-7), the token MLP's transposed input T(LN_1(X)),
                         the channel MLP's input LN_2(U)
      + 3 N D H_t        the token MLP's z = x W_1 + b_1, s = sigmoid(v) and h = gelu(z) (MX-9)
      + 3 N S H_c        the channel MLP's z, s and h
      + 2 N S            LN_1's and LN_2's 1/sqrt(var + eps), one per patch

    Times 4 bytes in float32."""
    return 4 * N * S * D + 3 * N * D * token_hidden + 3 * N * S * channel_hidden + 2 * N * S


def mixer_block_backward(dy, cache, input_grad=True):
    """Backward of ``mixer_block_forward``: the chain rule through (MX-3) and (MX-2); each residual
    adds the gradient of its output to that of its input::

        dU = dY + LN_2'(MLP_ch'(dY)),   dX = dU + LN_1'(T(MLP_tok'(T(dU))))

    dy: (N, S, D). Returns dx: (N, S, D) (None without ``input_grad``) and a dict of the gradients
    of every parameter, keyed like ``p`` (None for a missing bias)."""
    ln1_cache, tok_cache, ln2_cache, ch_cache = cache
    dv, dch_W1, dch_b1, dch_W2, dch_b2 = channel_mixing_backward(dy, ch_cache)
    dx1, dln2_g, dln2_b = layer_norm_backward(dv, ln2_cache)
    dx1 += dy                                              # the channel-mixing residual
    du, dtok_W1, dtok_b1, dtok_W2, dtok_b2 = token_mixing_backward(dx1, tok_cache)
    dx, dln1_g, dln1_b = layer_norm_backward(du, ln1_cache, input_grad)
    if input_grad:
        dx += dx1                                          # the token-mixing residual
    grads = {"ln1_g": dln1_g, "ln1_b": dln1_b, "tok_W1": dtok_W1, "tok_b1": dtok_b1, "tok_W2": dtok_W2,
             "tok_b2": dtok_b2, "ln2_g": dln2_g, "ln2_b": dln2_b, "ch_W1": dch_W1, "ch_b1": dch_b1,
             "ch_W2": dch_W2, "ch_b2": dch_b2}
    return dx, grads


# --- pooling and the head (MX-5, MX-6) ---------------------------------------------------------------

def global_avg_pool_forward(y):
    """(MX-5) p = mean over the S patches. y: (N, S, D) -> p: (N, D); the cache is S."""
    return y.mean(axis=1), y.shape[1]


def global_avg_pool_backward(dp, cache):
    """dp: (N, D) -> dy: (N, S, D), every patch getting dp / S."""
    S = cache
    return (dp[:, None, :] * (1 / S)).repeat(S, axis=1)


def mixer_head_forward(y, W, b=None):
    """(MX-5, MX-6) scores = mean_s(y) W + b. y: (N, S, D)  W: (D, K)  b: (K,) or None -> (N, K)."""
    pooled, pool_cache = global_avg_pool_forward(y)
    scores, dense_cache = dense_nd_forward(pooled, W, b)
    return scores, (pool_cache, dense_cache)


def mixer_head_backward(dscores, cache):
    """dscores: (N, K) -> dy: (N, S, D), dW: (D, K), db: (K,) or None."""
    pool_cache, dense_cache = cache
    dp, dW, db = dense_nd_backward(dscores, dense_cache)
    return global_avg_pool_backward(dp, pool_cache), dW, db


# --- parameters ---------------------------------------------------------------------------------------

def init_block(rng, patches, width, token_hidden, channel_hidden, xp, dtype="float32", bias=True):
    """A Mixer block's parameters, keyed by BLOCK_PARAMS, with S = ``patches``, D = ``width``, H_t =
    ``token_hidden``, H_c = ``channel_hidden``: ln1_g, ln1_b, ln2_g, ln2_b: (D,); tok_W1 (S, H_t), tok_b1
    (H_t,), tok_W2 (H_t, S), tok_b2 (S,); ch_W1 (D, H_c), ch_b1 (H_c,), ch_W2 (H_c, D), ch_b2 (D,) (the
    biases None with ``bias=False``).

    LN scales 1 and shifts 0 (they are learned, also with ``bias=False``, which drops the dense maps'
    biases only); the four dense maps as PyTorch's ``nn.Linear`` (W, b uniform in +-1/sqrt(fan_in),
    ``init_dense``), drawn in the order token W1, token W2, channel W1, channel W2."""
    tok_W1, tok_b1 = init_dense(rng, patches, token_hidden, xp, dtype, bias)
    tok_W2, tok_b2 = init_dense(rng, token_hidden, patches, xp, dtype, bias)
    ch_W1, ch_b1 = init_dense(rng, width, channel_hidden, xp, dtype, bias)
    ch_W2, ch_b2 = init_dense(rng, channel_hidden, width, xp, dtype, bias)
    return {"ln1_g": xp.ones(width, dtype=dtype), "ln1_b": xp.zeros(width, dtype=dtype),
            "tok_W1": tok_W1, "tok_b1": tok_b1, "tok_W2": tok_W2, "tok_b2": tok_b2,
            "ln2_g": xp.ones(width, dtype=dtype), "ln2_b": xp.zeros(width, dtype=dtype),
            "ch_W1": ch_W1, "ch_b1": ch_b1, "ch_W2": ch_W2, "ch_b2": ch_b2}


class PatchEmbedding:
    """The parameters of (MX-1): W (C*P*P, D) and b (D,) or None (``init_dense``), and the patch size."""

    def __init__(self, image_shape, patch, width, rng, xp, dtype="float32", bias=True):
        patch_grid(image_shape, patch)
        self.patch = patch
        self.W, self.b = init_dense(rng, image_shape[0] * patch * patch, width, xp, dtype, bias)

    @property
    def params(self):
        return {"W": self.W, "b": self.b}


class MixerBlock:
    """The parameters of one Mixer block (``init_block``, which gives their shapes) in the dict
    ``params``, keyed by BLOCK_PARAMS."""

    def __init__(self, patches, width, token_hidden, channel_hidden, rng, xp, dtype="float32", bias=True):
        self.arrays = init_block(rng, patches, width, token_hidden, channel_hidden, xp, dtype, bias)

    @property
    def params(self):
        return dict(self.arrays)
