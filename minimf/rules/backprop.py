"""The backpropagation (BP) baseline: the same hidden layers as Mono-Forward plus an output
dense layer, trained end to end on one loss at the top.

    a_0 = x,   a_i = relu(a_{i-1} W_i + b_i)   for the hidden layers i = 1..L
    s = a_L W_out + b_out                      class scores (N, C)
    L = cross-entropy(softmax(s), y)

Backward, from the top down (the chain rule, layer by layer):

    ds = (softmax(s) - onehot(y)) / N
    dW_out = a_L^T ds,   da_L = ds W_out^T
    dz_i = da_i * 1[z_i > 0],   dW_i = a_{i-1}^T dz_i,   db_i = sum_n dz_i,   da_{i-1} = dz_i W_i^T

Unlike MF, every layer waits for the error of all layers above it, and all activations of the
batch must be held until the backward pass reaches them. The input gradient da_0 is never
needed, so the first layer skips it (as PyTorch does for inputs that need no gradient).

``BackpropCNN`` is the same with conv blocks (minimf/nn/cnn.py: 3x3 conv with padding 1 -> ReLU ->
2x2 pooling) as hidden layers, their output flattened into one dense output layer:

    a_i = pool(relu(conv(a_{i-1}, W_i) + b_i)),   s = flat(a_L) W_out + b_out
    da_L = unflatten(ds W_out^T),   then block by block: through the pooling, the ReLU mask and
    the convolution to dW_i, db_i and da_{i-1} (skipped for the first block)

The network-level logic (``BackpropModel``: training step, prediction, evaluation, parameter count;
checks and saving come from ``Network``, minimf/rules/base.py) runs over any list of layers and is
the same code for both. The layers' parameters are ``DenseLayer`` (minimf/nn/layers.py) and
``ConvLayer`` (minimf/nn/cnn.py).

Shape letters: N batch, D input width, H_i layer widths, C classes;
conv blocks: F_i channels, H_i x W_i map size.
"""
from minimf.backend import get_backend, make_rng
from minimf.checks import check_channels, check_image_shape, check_sizes
from minimf.nn.cnn import ConvLayer, block_shapes, check_pool, conv_block_backward, conv_block_forward
from minimf.nn.conv import flatten_backward, flatten_forward
from minimf.nn.layers import (DenseLayer, dense_backward, dense_forward, dense_param_grads, dense_relu_forward,
                              relu_backward)
from minimf.nn.losses import softmax_cross_entropy
from minimf.rules.base import Network


class BackpropModel(Network):
    """Backprop over a list of layers with ``params``: training step, prediction, evaluation,
    parameter count (checks and saving: ``Network``, minimf/rules/base.py). A subclass builds
    ``layers`` and defines ``forward(x) -> (scores, caches)`` and ``loss_and_gradients(x, y) ->
    (loss, [grads per layer])``. ``input_shape`` is the shape of one example: (D,) or (C, H, W).
    """

    # What the network is, for the code above it (minimf.train asks these, and keeps no lists of rules):
    LOSSES = "one"              # train_step returns one loss; "per_layer": a list, one per layer
    EVALUATION_MODES = ("acc",)  # the accuracies evaluate() returns (besides "layers", where it gives them)
    BATCH_SPLIT = True          # the batch gradient is the mean of its parts' (minimf/parallel/batch_split.py)
    PIPELINE = False            # no backward pass between layers (minimf/parallel/pipeline.py)
    UNIT_SPLIT = False          # dense layers whose units learn apart (minimf/parallel/unit_split.py)
    OPTIONS = ()                # constructor options beyond the common ones (minimf/training/registry.py)

    def gradients(self, x, y):
        """Gradients of the mean batch loss: one dict {"W", "b"} per layer (output layer last)."""
        x, y = self.check_batch(x, y)
        return self.loss_and_gradients(x, y)[1]

    def train_step(self, x, y, validate=True):
        """One forward pass, one backward pass, one update of every layer. Returns the loss (before
        the update) as a 0-d array on the backend (``float(loss)`` reads it: a host sync on a GPU).
        ``validate=False`` skips the value checks of x and y, for data checked once already
        (minimf/checks.py): the step then makes no host synchronisation."""
        x, y = self.check_batch(x, y, values=validate)
        loss, grads = self.loss_and_gradients(x, y)
        for layer, optimizer, layer_grads in zip(self.layers, self.optimizers, grads):
            optimizer.step(layer.params, layer_grads)
        return loss

    def scores(self, x):
        """Class scores (N, C) for inputs x: (N, *input_shape)."""
        return self.forward(self.check_inputs(x))[0]

    def predict(self, x):
        """Labels (N,) on the backend: argmax of the output layer's scores."""
        return self.scores(x).argmax(axis=1)

    def evaluate(self, x, y, batch_size=1000, validate=True):
        """Test accuracy as {"acc": float}. The count of correct predictions is added up on the
        device and read once; ``validate=False`` skips the value checks (see ``train_step``)."""
        accuracy = self.accuracies(x, y, lambda batch: [self.forward(batch)[0]], batch_size, validate)
        return {"acc": float(accuracy[0])}

    def num_parameters(self):
        """All weights and biases."""
        return int(sum(a.size for layer in self.layers for a in layer.params.values() if a is not None))

    @staticmethod
    def _dense_backward(dz, dense_cache):
        dx, dW, db = dense_backward(dz, dense_cache)
        return dx, {"W": dW, "b": db}


class BackpropNet(BackpropModel):
    """An MLP ``sizes = [D, H_1, ..., H_L]`` plus an output layer H_L -> C, trained by backprop.

    ``layers`` holds the L hidden layers and then the output layer, each with W and b.
    """

    def __init__(self, sizes=(784, 1000, 1000), num_classes=10, backend="numpy", seed=0,
                 bias=True, optimizer="adam", lr=1e-3, dtype="float32"):
        self.sizes = check_sizes(sizes, num_classes)
        xp = get_backend(backend)
        rng = make_rng(seed)
        widths = self.sizes + [int(num_classes)]
        layers = [DenseLayer(d_in, width, rng, xp, dtype, bias)
                  for d_in, width in zip(widths[:-1], widths[1:])]
        super().__init__(layers, self.sizes[:1], num_classes, xp, dtype, optimizer, lr)

    def forward(self, x):
        """Class scores s: (N, C) and the caches the backward pass needs. x: (N, D)."""
        caches = []
        for layer in self.layers[:-1]:
            x, layer_caches = dense_relu_forward(x, layer.W, layer.b)   # (dense_cache, relu_cache)
            caches.append(layer_caches)
        scores, dense_cache = dense_forward(x, self.layers[-1].W, self.layers[-1].b)
        caches.append((dense_cache, None))
        return scores, caches

    def loss_and_gradients(self, x, y):
        """The batch loss (0-d array) and one gradient dict {"W", "b"} per layer, bottom first."""
        scores, caches = self.forward(x)
        loss, d_scores = softmax_cross_entropy(scores, y)
        grads = [None] * len(self.layers)
        da, grads[-1] = self._dense_backward(d_scores, caches[-1][0])
        for i in range(len(self.layers) - 2, -1, -1):
            dense_cache, relu_cache = caches[i]
            dz = relu_backward(da, relu_cache, out=da)   # in place: da is fresh from a product
            if i == 0:  # the input needs no gradient: skip dx = dz W^T
                layer_input, _, has_bias = dense_cache
                dW, db = dense_param_grads(dz, layer_input, has_bias)
                grads[0] = {"W": dW, "b": db}
            else:
                da, grads[i] = self._dense_backward(dz, dense_cache)
        return loss, grads


class BackpropCNN(BackpropModel):
    """Conv blocks ``channels = [F_1, ..., F_L]`` (3x3 conv with padding 1 -> ReLU -> 2x2
    pooling with stride 2), flattened, then one dense output layer F_L*H_L*W_L -> C, trained
    end to end by backprop. ``input_shape`` (C, H, W) is one image; ``pool`` "avg" or "max".

    ``layers`` holds the L conv blocks (W (F_i, C_i, 3, 3), b (F_i,)) and then the output layer
    (W (F_L*H_L*W_L, C), b (C,)).
    """

    def __init__(self, input_shape=(1, 28, 28), channels=(64, 128, 256, 512), num_classes=10,
                 backend="numpy", seed=0, bias=True, optimizer="adam", lr=1e-3, dtype="float32",
                 pool="avg"):
        input_shape = check_image_shape(input_shape)
        self.channels = check_channels(channels, num_classes)
        self.shapes = block_shapes(input_shape, self.channels)   # the input, then every block's output
        self.pool = check_pool(pool)
        xp = get_backend(backend)
        rng = make_rng(seed)
        layers = [ConvLayer(shape_in[0], shape_out[0], rng, xp, dtype, bias)
                  for shape_in, shape_out in zip(self.shapes[:-1], self.shapes[1:])]
        F, H, W = self.shapes[-1]
        layers.append(DenseLayer(F * H * W, int(num_classes), rng, xp, dtype, bias))
        super().__init__(layers, input_shape, num_classes, xp, dtype, optimizer, lr)

    def forward(self, x):
        """Class scores s: (N, C) and the caches the backward pass needs. x: (N, C, H, W)."""
        block_caches = []
        for layer in self.layers[:-1]:
            x, cache = conv_block_forward(x, layer.W, layer.b, self.pool)
            block_caches.append(cache)
        features, shape = flatten_forward(x)                          # (N, F_L*H_L*W_L)
        scores, dense_cache = dense_forward(features, self.layers[-1].W, self.layers[-1].b)
        return scores, (block_caches, shape, dense_cache)

    def loss_and_gradients(self, x, y):
        """The batch loss (0-d array) and one gradient dict {"W", "b"} per layer, bottom first."""
        scores, (block_caches, shape, dense_cache) = self.forward(x)
        loss, d_scores = softmax_cross_entropy(scores, y)
        grads = [None] * len(self.layers)
        d_features, grads[-1] = self._dense_backward(d_scores, dense_cache)
        da = flatten_backward(d_features, shape)
        for i in range(len(block_caches) - 1, -1, -1):
            # the input needs no gradient: the first block skips dx (no col2im)
            da, dW, db = conv_block_backward(da, block_caches[i], input_grad=i > 0)
            grads[i] = {"W": dW, "b": db}
        return loss, grads
