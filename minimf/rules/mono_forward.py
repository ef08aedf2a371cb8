"""Mono-Forward (MF v1 = arXiv 2501.09238v1): every layer learns from its own loss, in one forward pass.

Layer i holds W_i (D_i, H_i), b_i (H_i,) and a projection matrix M_i (C, H_i). For a batch:

    a_i = relu(a_{i-1} W_i + b_i)                     the layer's activations, a_0 = x
    G_i = a_i M_i^T                                   (5) goodness: one score per class, (N, C)
    L_i = -(1/N) sum_n log softmax(G_i)_{n, y_n}      (6) local cross-entropy
    M_i <- M_i - eta dL_i/dM_i                        (7)
    W_i <- W_i - eta dL_i/dW_i  (and b_i)             (8)

(eta: the optimiser's step; minimf uses Adam by default, as the paper does.) The gradient of L_i
reaches W_i through M_i and the ReLU and STOPS at a_{i-1}: the next layer receives a_i as a
plain array, and no error ever travels from one layer to another. M_i reads the layer's
activations out as class scores, a "future projection" of what the layers above would do.
(``MonoForwardGlobalNet``, minimf/rules/global_credit.py, keeps these losses and backpropagates their sum.)

Prediction: "bp" mode takes the argmax of the last layer's goodness; "ff" mode the argmax of
the sum of all layers' goodness.

Layer-normalised inputs (``MonoForwardNet(..., input_norm="layer")``, a remedy for deep MF).
With PyTorch's initialisation (W, b uniform in +-1/sqrt(D), so Var(W_jk) = 1/(3D)) a dense ReLU
layer shrinks the mean square of what passes it about six-fold:

    Var(z_k) = sum_j E[x_j^2] Var(W_jk) = E[x^2] / 3,   E[relu(z)^2] = Var(z) / 2 = E[x^2] / 6

until the biases, the same for every example, dominate it. So in a deep net the upper layers start
on tiny inputs that hardly tell the examples apart, and wait until the layers below have learnt
large activations of their own: MF's upper layers "start late".
DeeperForward (minimf/rules/deeper_forward.py) layer-normalises what passes from one layer to the
next; with ``input_norm="layer"`` every dense layer does the same to its input before its dense map
(``layer_norm``, minimf/nn/norm.py):

    x^_i = (a_{i-1} - mean_j a_{i-1,j}) / sqrt(var_j a_{i-1} + eps)   per example, no learned scale (DF-3)
    a_i  = relu(x^_i W_i + b_i)                                        then (5)-(8) with x^_i for a_{i-1}

It needs no backward at all: L_i's gradient stops at the layer's input, and x^_i is a function of
that input alone, so dW_i = x^_i^T dz_i and nothing flows through the normalisation. (Global credit,
which would have to differentiate it, does not offer it.)

Convolutional layers (``MonoForwardCNN``) follow the same rule. Layer i is a conv block
(minimf/nn/cnn.py: 3x3 conv with padding 1 -> ReLU -> 2x2 pooling), its output a_i: (N, F_i, H_i, W_i)
is flattened per example to its n_i = F_i * H_i * W_i numbers, and

    G_i = flat(a_i) M_i^T,   M_i: (C, n_i)            (5) goodness

the direct reading of MF v1's M_i of shape C x n_i, n_i the number of neurons of layer i
(``ProjectionReadout``; other read-outs can be added beside it). (6)-(8) are unchanged:
dL_i/dW_i reaches the kernels through the pooling and the ReLU and again stops at the block
input a_{i-1}. The network-level logic (``MonoForwardModel``: training step, prediction modes,
per-layer accuracy, parameter counts; checks and saving from ``Network``, minimf/rules/base.py) is
the same code for MLP and CNN.

Shape letters: N batch, D_i layer input width, H_i layer width, C classes;
conv layers: F_i channels, H_i x W_i map size.
"""
import numpy

from minimf.backend import get_array_module, get_backend, make_rng
from minimf.checks import check_channels, check_image_shape, check_sizes
from minimf.nn.cnn import KERNEL, block_shapes, check_pool, conv_block_backward, conv_block_forward
from minimf.nn.conv import flatten_backward, flatten_forward, init_conv
from minimf.nn.flat import FlatParameters
from minimf.nn.layers import dense_param_grads, dense_relu_forward, init_dense, relu_backward
from minimf.nn.losses import softmax_cross_entropy
from minimf.nn.norm import layer_norm
from minimf.rules.base import Network
from minimf.rules.deeper_forward import ChannelGroupReadout

PREDICTION_MODES = ("bp", "ff")
INPUT_NORMS = ("none", "layer")   # what a dense layer does to its input first: nothing, or DF-3's layer norm


def known_input_norm(input_norm):
    """``input_norm`` if it is one of INPUT_NORMS, else a ValueError that lists them."""
    if input_norm not in INPUT_NORMS:
        raise ValueError(f"unknown input_norm {input_norm!r}: choose {', '.join(map(repr, INPUT_NORMS))}")
    return input_norm


class MonoForwardLayer:
    """One hidden layer: dense + ReLU, with its own projection matrix M and its own loss.

    Arrays: W (D, H), b (H,) or None, M (C, H). ``params`` maps "W", "b", "M" to them.
    ``input_norm`` "layer" layer-normalises the input first (``dense_input``); "none" leaves it.
    The three are views of one flat array, ``flat`` (minimf/nn/flat.py); on CuPy their gradients
    in a training step are views of another, and the optimiser steps the layer in one launch.
    """

    def __init__(self, in_features, width, num_classes, rng, xp, dtype="float32", bias=True, input_norm="none"):
        W, b = init_dense(rng, in_features, width, xp, dtype, bias)
        # M reads H activations out as C scores, like a dense layer from H to C.
        bound = 1.0 / width ** 0.5
        M = xp.asarray(rng.uniform(-bound, bound, size=(num_classes, width)), dtype=dtype)
        # one flat array for W, b, M; on a GPU their gradients too, so that one launch steps all three
        # (train_layer); on NumPy, where a launch costs nothing, the gradients are new arrays each step
        self.flat = FlatParameters({"W": W, "b": b, "M": M}, xp, grad=xp is not numpy)
        self.input_norm = known_input_norm(input_norm)

    W = property(lambda self: self.flat.params["W"])
    b = property(lambda self: self.flat.params["b"])
    M = property(lambda self: self.flat.params["M"])

    @property
    def params(self):
        return dict(self.flat.params)

    def dense_input(self, x):
        """What the dense map reads: x itself, or with input_norm "layer" every example shifted to
        mean 0 and scaled to variance 1 over its D features (DF-3). x: (N, D) -> (N, D)."""
        return layer_norm(x) if self.input_norm == "layer" else x

    def forward(self, x):
        """a = relu(x^ W + b), x^ = ``dense_input(x)``. x: (N, D) -> a: (N, H)."""
        return dense_relu_forward(self.dense_input(x), self.W, self.b)[0]

    def goodness(self, a):
        """G = a M^T. a: (N, H) -> G: (N, C)."""
        return a @ self.M.T  # (5) goodness

    def local_gradients(self, x, y, out=None):
        """Forward this layer and differentiate its local loss; nothing is updated.

        x: (N, D) the layer's input a_{i-1} (treated as a constant)   y: (N,) labels
        Returns (a, loss, grads): a (N, H) for the next layer, loss a 0-d array,
        grads {"W": (D, H), "b": (H,) or None, "M": (C, H)}: new arrays, or written into ``out``
        (a dict of arrays of those names: ``flat.grads`` in a training step).
        """
        x = self.dense_input(x)                       # a constant to L_i: no backward through it
        a, (_, relu_cache) = dense_relu_forward(x, self.W, self.b)
        G = a @ self.M.T                              # (5) goodness
        loss, dG = softmax_cross_entropy(G, y)        # (6) local loss; dG = (softmax(G) - onehot(y)) / N
        dM = get_array_module(a).matmul(dG.T, a, out=None if out is None else out["M"])  # (7) dL/dM = dG^T a
        da = dG @ self.M                              # the error reaches a only through M
        dz = relu_backward(da, relu_cache, out=da)    # ... and z only where z > 0 (in place)
        dW, db = dense_param_grads(dz, x, self.b is not None, out)  # (8) dL/dW = x^T dz; stops at x
        return a, loss, {"W": dW, "b": db, "M": dM}


def train_layer(layer, optimizer, x, y):
    """One layer's share of a training step on one batch: forward, local loss (5)-(6), gradients
    (``layer.local_gradients``), and its optimiser's step (7)-(8), at the rate of the optimiser's
    schedule.

    x: (N, ...) the layer's input a_{i-1}   y: (N,) labels
    Returns (a, loss, grads): a, computed before the update, for the next layer; loss a 0-d array;
    the gradients the step used. ``MonoForwardModel.train_step`` runs it layer after layer, the
    pipelines (minimf/parallel/) in a thread or a process per layer.
    """
    flat = getattr(layer, "flat", None)           # flat arrays for parameters and gradients (minimf/nn/flat.py)?
    if flat is None or flat.grad is None:
        a, loss, grads = layer.local_gradients(x, y)
        optimizer.step(layer.params, grads)       # (7) M update, (8) W and b update
    else:                                         # the gradients into flat.grad, and ONE pass over it
        a, loss, grads = layer.local_gradients(x, y, out=flat.grads)
        optimizer.step_flat(flat)                 # (7) and (8) at once
    return a, loss, grads


class ProjectionReadout:
    """Goodness of a conv block by projection: G = flat(a) M^T, with M: (C, n) and n = F*H'*W'.

    MF v1 gives M_i the shape C x n_i, n_i being the number of neurons of layer i. The neurons of a
    conv block are all F*H'*W' numbers of its output, so this read-out is what the paper's text
    implies.
    Another read-out is another class with the same ``params``, ``goodness``, ``backward`` and
    ``block_input``, added to READOUTS: DeeperForward's channel groups (minimf/rules/deeper_forward.py).
    """

    def __init__(self, out_shape, num_classes, rng, xp, dtype="float32"):
        F, H, W = out_shape
        bound = 1.0 / (F * H * W) ** 0.5          # like a dense layer from n to C, as for the MLP
        self.M = xp.asarray(rng.uniform(-bound, bound, size=(num_classes, F * H * W)), dtype=dtype)

    @property
    def params(self):
        return {"M": self.M}

    def goodness(self, a):
        """G = flat(a) M^T. a: (N, F, H', W') -> G: (N, C)."""
        return flatten_forward(a)[0] @ self.M.T  # (5) goodness

    def backward(self, dG, a):
        """Given dG = dL/dG: (N, C), return da = dL/da: (N, F, H', W') and {"M": dL/dM: (C, n)}."""
        flat, shape = flatten_forward(a)
        dM = dG.T @ flat                                  # (7) dL/dM = dG^T flat(a)
        da = flatten_backward(dG @ self.M, shape)         # the error reaches a only through M
        return da, {"M": dM}

    def block_input(self, x):
        """The block's input as it is (another read-out may normalise it)."""
        return x


READOUTS = {"projection": ProjectionReadout, "channel-group": ChannelGroupReadout}  # minimf/rules/deeper_forward.py


class MonoForwardConvLayer:
    """One conv block (3x3 conv, padding 1 -> ReLU -> 2x2 pooling) with its own read-out and loss.

    Arrays: W (F, C, 3, 3), b (F,) or None, and the read-out's parameters, for the projection
    M (C_classes, F*H'*W'). ``params`` maps "W", "b", "M" to them. ``out_shape`` = (F, H', W')
    is the block's output for one example; ``pool`` is "avg" (the paper's) or "max".
    """

    def __init__(self, in_channels, out_shape, num_classes, rng, xp, dtype="float32", bias=True,
                 pool="avg", readout="projection"):
        self.pool = check_pool(pool)
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}: choose {', '.join(map(repr, READOUTS))}")
        self.W, self.b = init_conv(rng, in_channels, out_shape[0], KERNEL, xp, dtype, bias)
        self.readout = READOUTS[readout](out_shape, num_classes, rng, xp, dtype)

    @property
    def M(self):
        """The projection matrix (C, F*H'*W') of the projection read-out."""
        return self.readout.M

    @property
    def params(self):
        return {"W": self.W, "b": self.b, **self.readout.params}

    def forward(self, x):
        """a = pool(relu(conv(x, W) + b)). x: (N, C, H, W) -> a: (N, F, H // 2, W // 2)."""
        return conv_block_forward(self.readout.block_input(x), self.W, self.b, self.pool)[0]

    def goodness(self, a):
        """G: (N, C) from the block output a: (N, F, H', W')."""
        return self.readout.goodness(a)

    def local_gradients(self, x, y):
        """Forward this block and differentiate its local loss; nothing is updated.

        x: (N, C, H, W) the block's input a_{i-1} (treated as a constant)   y: (N,) labels
        Returns (a, loss, grads): a (N, F, H', W') for the next block, loss a 0-d array,
        grads {"W": (F, C, 3, 3), "b": (F,) or None, "M": (C, F*H'*W')}.
        """
        a, block_cache = conv_block_forward(self.readout.block_input(x), self.W, self.b, self.pool)
        G = self.readout.goodness(a)                  # (5) goodness
        loss, dG = softmax_cross_entropy(G, y)        # (6) local loss; dG = (softmax(G) - onehot(y)) / N
        da, readout_grads = self.readout.backward(dG, a)   # (7) dL/dM = dG^T flat(a); da = dG M
        _, dW, db = conv_block_backward(da, block_cache, input_grad=False)  # (8) via pool and ReLU; stops at x
        return a, loss, {"W": dW, "b": db, **readout_grads}


class MonoForwardModel(Network):
    """Mono-Forward over any list of layers: training, prediction, evaluation (checks and saving:
    ``Network``, minimf/rules/base.py).

    Each layer needs ``forward(x) -> a``, ``goodness(a) -> G``, ``local_gradients(x, y) ->
    (a, loss, grads)`` and a ``params`` dict with the keys of ``grads``. ``MonoForwardNet``
    (dense layers) and ``MonoForwardCNN`` (conv blocks) only build the layers. Every layer has
    its own optimiser (Adam, lr 1e-3 by default, the paper's setting), because every layer has
    its own loss. ``input_shape`` is the shape of one example: (D,) or (C, H, W).
    """

    # What the network is, for the code above it (see BackpropModel in minimf/rules/backprop.py):
    LOSSES = "per_layer"            # train_step returns one local loss per layer
    EVALUATION_MODES = ("bp", "ff")  # evaluate(): both prediction modes, and "layers"
    BATCH_SPLIT = True              # each layer's batch gradient is the mean of its parts'
    PIPELINE = True                 # no error travels between layers: they can run concurrently
    UNIT_SPLIT = False              # MonoForwardNet's dense layers only
    CREDIT = "local"                # each layer's loss reaches that layer only (global: minimf/rules/global_credit.py)
    OPTIONS = ()                    # constructor options beyond the common ones (minimf/training/registry.py)

    def local_gradients(self, x, y):
        """Gradients of each layer's mean local loss on this batch: one dict per layer, keyed like
        that layer's ``params`` ("W", "b", "M" for a dense layer). No parameter changes.
        x: (N, *input_shape), y: (N,)."""
        x, y = self.check_batch(x, y)
        return self.loss_and_gradients(x, y)[1]

    def loss_and_gradients(self, x, y):
        """Every layer's local loss (a list of 0-d arrays) and gradients (a list of dicts), on an
        already checked batch; no parameter changes. They are the losses and gradients of
        ``train_step``: there too layer i+1 gets a_i computed before layer i's update."""
        losses, all_grads = [], []
        for layer in self.layers:
            x, loss, grads = layer.local_gradients(x, y)
            losses.append(loss)
            all_grads.append(grads)
        return losses, all_grads

    def train_step(self, x, y, validate=True):
        """One batch, one forward pass: each layer updates as soon as the batch has passed it.

        The activations handed to layer i+1 are those computed before layer i's update.
        Returns the per-layer losses (before the update) as 0-d arrays on the backend: they stay
        on the device, and ``float(loss)`` reads one (a host sync on a GPU). ``validate=False``
        skips the value checks of x and y (NaN, label range; minimf/checks.py) for data checked
        once already: then a step makes no host synchronisation at all.
        """
        x, y = self.check_batch(x, y, values=validate)
        losses = []
        for layer, optimizer in zip(self.layers, self.optimizers):
            # grads stays referenced until the next layer's replace it: while layer i works, the
            # step holds a_{i-1} and layer i-1's gradients, one layer's worth whatever the depth
            x, loss, grads = train_layer(layer, optimizer, x, y)   # (5)-(8); x is now a_i
            losses.append(loss)
        return losses

    def layer_inputs(self, x):
        """[a_0 = x, a_1, ..., a_{L-1}]: the input each layer receives, from one forward pass."""
        inputs = [self.check_inputs(x)]
        for layer in self.layers[:-1]:
            inputs.append(layer.forward(inputs[-1]))
        return inputs

    def goodness(self, x):
        """[G_1, ..., G_L], each (N, C), from one forward pass of x: (N, *input_shape)."""
        return self._goodness(self.check_inputs(x))

    def _goodness(self, x):
        """``goodness`` of an already checked x."""
        scores = []
        for layer in self.layers:
            x = layer.forward(x)
            scores.append(layer.goodness(x))
        return scores

    def predict(self, x, mode="bp"):
        """Labels (N,) on the backend: argmax of the last G ("bp") or of the sum of all G ("ff")."""
        return self.scores(x, mode).argmax(axis=1)

    def scores(self, x, mode="bp"):
        """The class scores (N, C) that ``predict`` takes the argmax of."""
        if mode not in PREDICTION_MODES:
            raise ValueError(f"unknown prediction mode {mode!r}: choose 'bp' or 'ff'")
        goodness = self.goodness(x)
        return goodness[-1] if mode == "bp" else sum(goodness)

    def evaluate(self, x, y, batch_size=1000, validate=True):
        """Accuracy of both prediction modes and of every layer on its own (the paper's Table 1).

        The counts of correct predictions are added up on the device and read once at the end;
        ``validate=False`` skips the value checks of x and y (see ``train_step``).
        Returns {"bp": float, "ff": float, "layers": [float per layer]}.
        """
        def scores_of(batch):
            goodness = self._goodness(batch)
            return [goodness[-1], sum(goodness), *goodness]             # bp mode, ff mode, each layer

        accuracy = self.accuracies(x, y, scores_of, batch_size, validate)   # (2 + L,)
        return {"bp": float(accuracy[0]), "ff": float(accuracy[1]), "layers": accuracy[2:].tolist()}

    def num_parameters(self, mode="ff"):
        """Parameters used for prediction: all W, b and, in "ff" mode, every M; in "bp" mode only
        the last layer's M (the other projections are needed for training only)."""
        weights = sum(a.size for l in self.layers for k, a in l.params.items() if k != "M" and a is not None)
        projections = [l.params["M"].size if "M" in l.params else 0 for l in self.layers]
        return int(weights + (sum(projections) if mode == "ff" else projections[-1]))


class MonoForwardNet(MonoForwardModel):
    """A Mono-Forward MLP: ``sizes = [D, H_1, ..., H_L]`` hidden layers, each with projection M_i.

    ``bias=False`` gives the paper's parameter counts (Table 4). ``input_norm="layer"``
    layer-normalises every layer's input, the image included (see the module docstring); it adds
    no parameter and draws no random number, so a seed gives the same initial weights either way.
    All methods come from ``MonoForwardModel``.
    """

    UNIT_SPLIT = True    # each unit's columns of W, b, M need only G from the others (minimf/parallel/unit_split.py)
    INPUT_NORMS = INPUT_NORMS   # the input_norm values this class trains correctly
    OPTIONS = ("input_norm",)

    def __init__(self, sizes=(784, 1000, 1000), num_classes=10, backend="numpy", seed=0,
                 bias=True, optimizer="adam", lr=1e-3, dtype="float32", input_norm="none"):
        if known_input_norm(input_norm) not in self.INPUT_NORMS:
            raise ValueError(f"{type(self).__name__} does not offer input_norm={input_norm!r} (choose "
                             f"{', '.join(map(repr, self.INPUT_NORMS))}): it would have to differentiate it")
        self.sizes = check_sizes(sizes, num_classes)
        self.input_norm = input_norm
        xp = get_backend(backend)
        rng = make_rng(seed)
        layers = [MonoForwardLayer(d_in, width, int(num_classes), rng, xp, dtype, bias, input_norm)
                  for d_in, width in zip(self.sizes[:-1], self.sizes[1:])]
        super().__init__(layers, self.sizes[:1], num_classes, xp, dtype, optimizer, lr)


class MonoForwardCNN(MonoForwardModel):
    """A Mono-Forward CNN: one conv block per entry of ``channels`` (3x3 conv with padding 1 ->
    ReLU -> 2x2 pooling with stride 2), each with its own read-out M_i and its own loss.

    ``input_shape`` (C, H, W) is one image; the maps halve block by block (floor), 28 -> 14 ->
    7 -> 3 -> 1 for the default four blocks. ``pool`` is "avg" (the paper's choice) or "max";
    ``readout`` names the goodness read-out: "projection" (eq. 5 over the flattened block
    output) or "channel-group" (DeeperForward's mean goodness of one channel group per class,
    with layer normalisation between blocks; minimf/rules/deeper_forward.py). All methods come from ``MonoForwardModel``; ``layers[i]`` has W (F_i, C_i,
    3, 3), b (F_i,) and M (C, F_i * H_i * W_i).
    """

    OPTIONS = ("readout",)

    def __init__(self, input_shape=(1, 28, 28), channels=(64, 128, 256, 512), num_classes=10,
                 backend="numpy", seed=0, bias=True, optimizer="adam", lr=1e-3, dtype="float32",
                 pool="avg", readout="projection"):
        input_shape = check_image_shape(input_shape)
        self.channels = check_channels(channels, num_classes)
        self.shapes = block_shapes(input_shape, self.channels)   # the input, then every block's output
        self.pool = check_pool(pool)
        xp = get_backend(backend)
        rng = make_rng(seed)
        layers = [MonoForwardConvLayer(shape_in[0], shape_out, int(num_classes), rng, xp, dtype, bias,
                                       pool, readout)
                  for shape_in, shape_out in zip(self.shapes[:-1], self.shapes[1:])]
        super().__init__(layers, input_shape, num_classes, xp, dtype, optimizer, lr)
