"""Forward-Forward (FF; Hinton 2022, "The Forward-Forward Algorithm: Some Preliminary
Investigations", arXiv 2212.13345): every layer learns to tell real data from fake, and no error
travels from one layer to another.

The label is written into the input: the first C pixels of an image become a one-hot vector
(``label_value`` at the label's pixel, 0 at the other C - 1), the "label in the image" of FF:

    positive data  x+ = embed(x, y)      the true label
    negative data  x- = embed(x, y')     y' drawn uniformly from the C - 1 other classes

Layer i (W_i: (D_i, H_i), b_i: (H_i,)) first normalises its input, then is a dense ReLU layer:

    x^ = x / (sqrt(mean_j x_j^2) + eps)      RMS normalisation (``normalize="rms"``), or
    x^ = x / (sqrt(sum_j x_j^2) + eps)       unit length (``normalize="length"``, Hinton's)
    h = relu(x^ W_i + b_i)                   (N, H_i)
    g = (1/H_i) sum_j h_j^2                  goodness, (N,) (``goodness="mean"``; "sum": sum_j h_j^2)
    L_i = 1/(2N) [ sum_n softplus(theta - g+_n) + sum_n softplus(g-_n - theta) ]

L_i is the logistic loss of p(positive) = sigmoid(g - theta): it pushes the goodness of positive
data above the threshold theta and that of negative data below it. With s_n = +1 for a positive
and -1 for a negative example, its gradient is

    dL/dg_n = -s_n sigmoid(-s_n (g_n - theta)) / (2N)
    dL/dh = dL/dg * 2h / H_i   ("mean")   or   dL/dg * 2h   ("sum")
    dz = dL/dh * 1[z > 0],   dW_i = x^T dz,   db_i = sum_n dz

and it STOPS at x^: nothing flows back through the normalisation or into the layer below (the
layers are trained greedily, each on its own loss, all in the same pass over a batch, as in MF;
``ForwardForwardGlobalNet`` in minimf/rules/global_credit.py sums the layers' losses and backpropagates).
Why normalise: layer i's goodness is the squared length of its output h; dividing by that length
hands layer i+1 only the direction of h, so layer i+1 cannot pass by just reading off layer i's
goodness and has to find features of its own.

Prediction, two ways:

    all labels  G_i[n, c] = goodness of layer i on embed(x_n, c), for every class c: C forward
                passes; the predicted class is argmax_c sum_i G_i[n, c]
    one pass    a neutral label (``label_value / C`` on each of the C label pixels, Hinton's;
                ``neutral="zero"``: all C at 0), one forward pass; the normalised activities of
                all layers, side by side (N, H_1 + ... + H_L), go through a linear softmax
                read-out W_r: (sum H_i, C), b_r: (C,), trained by cross-entropy on them during
                training (its gradient stops at the features: the FF layers never see it)

A caveat of the uniform neutral label: to keep the goodness of negative data low, the first layer
learns negative weights on the label pixels of the classes a unit does not stand for. The uniform
neutral label lights all C pixels at once, and their sum switches most units off, the more so the
longer the layer trains: the read-out's features fade, and its one-pass accuracy can fall after a
few epochs. ``neutral="zero"`` leaves the label pixels empty and avoids that; the FF layers train
identically either way, since the read-out never reaches them.

Known pitfalls (from public reproductions): a large Adam learning rate (3e-2) kills most ReLUs of
the first layer; normalising to unit length shrinks a 784-pixel input by a factor of 28, and the
first layer then collapses where RMS normalisation (mean square 1) trains well. The defaults
therefore are RMS normalisation, Adam 1e-3, mean goodness with threshold 2.

Not here: Hinton's hard negatives (wrong labels the network currently favours), the convolutional
and recurrent FF variants, and peer normalisation.

Shape letters: N batch, D input width, H_i layer widths, C classes.
"""
from minimf.backend import get_array_module, get_backend, make_rng
from minimf.checks import check_sizes
from minimf.nn.layers import DenseLayer, dense_forward, dense_param_grads, init_dense, relu_backward, relu_forward
from minimf.nn.losses import sigmoid, softmax_cross_entropy, softplus
from minimf.rules.base import Network

NORMALIZATIONS = ("rms", "length")
NEUTRAL = ("uniform", "zero")
GOODNESS = ("mean", "sum")
PREDICTION_MODES = ("all_labels", "one_pass")
EPS = 1e-8


def normalize(x, kind="rms"):
    """Each row divided by its RMS (``"rms"``: mean square 1 afterwards) or its length
    (``"length"``: unit length). x: (N, D) -> (N, D). An all-zero row stays zero."""
    xp = get_array_module(x)
    square = (x * x).mean(axis=1, keepdims=True) if kind == "rms" else (x * x).sum(axis=1, keepdims=True)
    return x / (xp.sqrt(square) + EPS)


def embed_label(x, labels, num_classes, value=1.0):
    """A copy of x with its first C entries replaced by ``value * onehot(label)``.

    x: (N, D) with D >= C   labels: (N,) integers in [0, C)   -> (N, D)
    """
    xp = get_array_module(x)
    out = x.copy()
    out[:, :num_classes] = 0
    out[xp.arange(x.shape[0]), labels] = value
    return out


def embed_neutral(x, num_classes, value=1.0):
    """A copy of x whose first C entries all hold ``value / C``: no label (one-pass prediction).
    ``value`` = 0 leaves them all at 0."""
    out = x.copy()
    out[:, :num_classes] = value / num_classes
    return out


class ForwardForwardLayer:
    """One FF layer: normalisation, dense, ReLU, and its own logistic loss on the goodness.

    Arrays: W (D, H), b (H,) or None, in the dict ``params``. ``threshold`` is theta;
    ``normalize`` "rms" or "length"; ``goodness`` "mean" or "sum" of the squared activities.
    """

    def __init__(self, in_features, width, rng, xp, dtype="float32", bias=True, threshold=2.0,
                 normalize="rms", goodness="mean"):
        self.W, self.b = init_dense(rng, in_features, width, xp, dtype, bias)
        self.threshold = float(threshold)
        self.normalization = normalize
        self.goodness_kind = goodness

    @property
    def params(self):
        return {"W": self.W, "b": self.b}

    def forward(self, x):
        """h = relu(normalize(x) W + b). x: (N, D) -> h: (N, H)."""
        z, _ = dense_forward(normalize(x, self.normalization), self.W, self.b)
        return relu_forward(z)[0]

    def goodness(self, h):
        """g = mean_j h_j^2 ("mean") or sum_j h_j^2 ("sum"). h: (N, H) -> g: (N,)."""
        square = h * h
        return square.mean(axis=1) if self.goodness_kind == "mean" else square.sum(axis=1)

    def local_gradients(self, x_pos, x_neg):
        """Forward positive and negative data and differentiate this layer's loss; nothing is updated.

        x_pos, x_neg: (N, D) the layer's inputs (treated as constants).
        Returns (h_pos, h_neg, loss, grads): h_pos, h_neg (N, H) for the next layer, loss a 0-d
        array, grads {"W": (D, H), "b": (H,) or None}.
        """
        xp = get_array_module(x_pos)
        n = x_pos.shape[0]
        x_hat = normalize(xp.concatenate([x_pos, x_neg]), self.normalization)   # (2N, D)
        z, _ = dense_forward(x_hat, self.W, self.b)
        h, relu_cache = relu_forward(z)
        loss, dh = self.goodness_loss(h, n)
        dz = relu_backward(dh, relu_cache)
        dW, db = dense_param_grads(dz, x_hat, self.b is not None)     # stops at x^
        return h[:n], h[n:], loss, {"W": dW, "b": db}

    def goodness_loss(self, h, n):
        """This layer's loss L_i and its gradient dL_i/dh, from the activities h: (2N, H) of n
        positive examples (the first n rows) and n negative ones. Returns (loss 0-d, dh (2N, H))."""
        xp = get_array_module(h)
        g = self.goodness(h)                                          # (2N,)
        sign = xp.concatenate([xp.ones(n, dtype=h.dtype), -xp.ones(n, dtype=h.dtype)])
        margin = sign * (g - self.threshold)                          # > 0 where the layer is right
        loss = softplus(-margin).mean()                               # the logistic loss, over 2N
        dg = -sign * sigmoid(-margin) / (2 * n)                       # dL/dg
        dh = dg[:, None] * 2 * h                                      # dg/dh = 2h ("sum") ...
        if self.goodness_kind == "mean":
            dh /= h.shape[1]                                          # ... or 2h / H ("mean")
        return loss, dh


class ForwardForwardNet(Network):
    """An FF MLP: ``sizes = [D, H_1, ..., H_L]`` with the label written into the first C inputs
    (so D >= C), and a softmax read-out (sum H_i -> C) for one-pass prediction.

    ``layers`` holds the L FF layers (W, b each); ``readout`` the read-out (W (sum H_i, C), b (C,)).
    Every layer and the read-out have their own optimiser (Adam, lr 1e-3 by default); checks and
    saving come from ``Network`` (minimf/rules/base.py), with the read-out saved as the last layer.
    Negative labels are drawn by a host generator seeded with ``seed`` (after the initial
    weights), so the same seed gives the same run.

    ``neutral`` is the label of one-pass prediction: "uniform" (``label_value / C`` on every label
    pixel, Hinton's) or "zero" (all 0; why: the module docstring's caveat).
    ``threshold`` theta = 2 suits ``goodness="mean"``; with "sum" it has to grow with the width
    (Hinton takes the number of units). ``label_value`` = 10: standardised MNIST pixels have an
    RMS of about 1, and a label pixel of 10 stands out after the normalisation.
    """

    # What the network is, for the code above it (see BackpropModel in minimf/rules/backprop.py):
    LOSSES = "per_layer"                        # one loss per layer, then the read-out's
    EVALUATION_MODES = ("all_labels", "one_pass")   # evaluate(): both predictions, and "layers"
    BATCH_SPLIT = False                         # negative labels are drawn per batch: not checked
    PIPELINE = False                            # not wired up for FF's layers
    UNIT_SPLIT = False
    CREDIT = "local"                            # no error between layers (global: minimf/rules/global_credit.py)
    OPTIONS = ()

    def __init__(self, sizes=(784, 1000, 1000), num_classes=10, backend="numpy", seed=0,
                 bias=True, optimizer="adam", lr=1e-3, dtype="float32", threshold=2.0,
                 normalize="rms", goodness="mean", label_value=10.0, neutral="uniform"):
        self.sizes = check_sizes(sizes, num_classes)
        C = int(num_classes)
        if self.sizes[0] < C:
            raise ValueError(f"FF writes the label into the first {C} inputs: "
                             f"the input width must be at least {C}, got {self.sizes[0]}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"unknown normalize {normalize!r}: choose 'rms' or 'length'")
        if goodness not in GOODNESS:
            raise ValueError(f"unknown goodness {goodness!r}: choose 'mean' or 'sum'")
        if neutral not in NEUTRAL:
            raise ValueError(f"unknown neutral label {neutral!r}: choose 'uniform' or 'zero'")
        xp = get_backend(backend)
        self.normalization = normalize
        self.label_value = float(label_value)
        self.neutral_value = self.label_value if neutral == "uniform" else 0.0   # spread over the C pixels
        self.rng = make_rng(seed)
        layers = [ForwardForwardLayer(d_in, width, self.rng, xp, dtype, bias, threshold, normalize, goodness)
                  for d_in, width in zip(self.sizes[:-1], self.sizes[1:])]
        self.readout = DenseLayer(sum(self.sizes[1:]), C, self.rng, xp, dtype, bias)   # before the optimisers
        super().__init__(layers, self.sizes[:1], C, xp, dtype, optimizer, lr)

    def trained_layers(self):
        """The FF layers, then the read-out: the order of ``optimizers`` and of the saved state
        ("layers.L.W" is the read-out's, the last, as BP's output layer)."""
        return self.layers + [self.readout]

    # --- training --------------------------------------------------------------------------------

    def negative_labels(self, y):
        """A wrong label for every example, uniform over the C - 1 other classes: y + k mod C with
        k drawn uniformly from 1..C-1 on the host. y: (N,) -> (N,)."""
        offsets = self.xp.asarray(self.rng.integers(1, self.num_classes, size=y.shape[0]))
        return (y + offsets) % self.num_classes

    def local_gradients(self, x, y, negative_labels=None):
        """Each layer's gradients of its own loss, and the read-out's; nothing is updated.

        x: (N, D), y: (N,); ``negative_labels`` (N,) (drawn if None; pass them for a fixed check).
        Returns [grads of layer 1, ..., grads of layer L, grads of the read-out], dicts {"W", "b"}.
        """
        x, y = self.check_batch(x, y)
        if negative_labels is None:
            negative_labels = self.negative_labels(y)
        return self._step(x, y, negative_labels, update=False)[1]

    def train_step(self, x, y, validate=True):
        """One batch: positive, negative and neutral data pass the layers once; each layer (and
        then the read-out) updates as soon as the batch has passed it.

        The activities handed to layer i+1 are those computed before layer i's update.
        Returns [L_1, ..., L_L, L_readout] (before the update) as 0-d arrays on the backend
        (``float`` reads one: a host sync on a GPU). ``validate=False`` skips the value checks
        of x and y, for data checked once already (minimf/checks.py).
        """
        x, y = self.check_batch(x, y, values=validate)
        return self._step(x, y, self.negative_labels(y), update=True)[0]

    def _step(self, x, y, negative_labels, update):
        """(losses, grads) of every layer and the read-out; with ``update`` the optimisers step."""
        C, value = self.num_classes, self.label_value
        pos, neg = embed_label(x, y, C, value), embed_label(x, negative_labels, C, value)
        neutral = embed_neutral(x, C, self.neutral_value)
        losses, all_grads, activities = [], [], []
        for layer, optimizer in zip(self.layers, self.optimizers):
            h_pos, h_neg, loss, grads = layer.local_gradients(pos, neg)
            neutral = layer.forward(neutral)             # for the read-out, also before the update
            activities.append(neutral)
            if update:
                optimizer.step(layer.params, grads)
            losses.append(loss)
            all_grads.append(grads)
            pos, neg = h_pos, h_neg
        loss, grads = self._readout_loss_and_gradients(activities, y)
        if update:
            self.optimizers[-1].step(self.readout.params, grads)
        return losses + [loss], all_grads + [grads]

    def _readout_loss_and_gradients(self, activities, y):
        """The one-pass read-out's cross-entropy (0-d) and gradients {"W", "b"}, from every layer's
        activities (N, H_i) with the neutral label; its gradient stops at the features."""
        features = self._features(activities)
        logits, _ = dense_forward(features, self.readout.W, self.readout.b)
        loss, dlogits = softmax_cross_entropy(logits, y)
        dW, db = dense_param_grads(dlogits, features, self.readout.b is not None)   # stops at the features
        return loss, {"W": dW, "b": db}

    def _features(self, activities):
        """The read-out's input: every layer's normalised activities side by side, (N, sum H_i)."""
        return self.xp.concatenate([normalize(h, self.normalization) for h in activities], axis=1)

    # --- prediction ------------------------------------------------------------------------------

    def goodness(self, x):
        """[G_1, ..., G_L], each (N, C): G_i[n, c] = layer i's goodness on x_n with label c written
        in. C forward passes of x: (N, D)."""
        return self._goodness(self.check_inputs(x))

    def _goodness(self, x):
        """``goodness`` of an already checked x."""
        n = x.shape[0]
        columns = [[] for _ in self.layers]
        for c in range(self.num_classes):
            h = embed_label(x, self.xp.full(n, c), self.num_classes, self.label_value)
            for i, layer in enumerate(self.layers):
                h = layer.forward(h)
                columns[i].append(layer.goodness(h))
        return [self.xp.stack(cols, axis=1) for cols in columns]

    def readout_scores(self, x):
        """The read-out's class scores (N, C) from one forward pass with the neutral label."""
        return self._readout_scores(self.check_inputs(x))

    def _readout_scores(self, x):
        """``readout_scores`` of an already checked x."""
        h = embed_neutral(x, self.num_classes, self.neutral_value)
        activities = []
        for layer in self.layers:
            h = layer.forward(h)
            activities.append(h)
        return dense_forward(self._features(activities), self.readout.W, self.readout.b)[0]

    def scores(self, x, mode="all_labels"):
        """Class scores (N, C): the goodness summed over layers for every label ("all_labels",
        C forward passes) or the read-out's scores ("one_pass", one forward pass)."""
        if mode not in PREDICTION_MODES:
            raise ValueError(f"unknown prediction mode {mode!r}: choose 'all_labels' or 'one_pass'")
        return sum(self.goodness(x)) if mode == "all_labels" else self.readout_scores(x)

    def predict(self, x, mode="all_labels"):
        """Labels (N,) on the backend: the argmax of ``scores(x, mode)``."""
        return self.scores(x, mode).argmax(axis=1)

    def evaluate(self, x, y, batch_size=1000, validate=True):
        """Accuracy of both prediction modes and of every layer's goodness on its own.

        The counts of correct predictions are added up on the device and read once at the end;
        ``validate=False`` skips the value checks of x and y (see ``train_step``).
        Returns {"all_labels": float, "one_pass": float, "layers": [float per layer]}.
        """
        def scores_of(batch):
            goodness = self._goodness(batch)
            return [sum(goodness), self._readout_scores(batch), *goodness]     # all labels, one pass, layers

        accuracy = self.accuracies(x, y, scores_of, batch_size, validate)      # (2 + L,)
        return {"all_labels": float(accuracy[0]), "one_pass": float(accuracy[1]),
                "layers": accuracy[2:].tolist()}

    def num_parameters(self, mode="all_labels"):
        """Parameters used for prediction: every layer's W and b, plus, in "one_pass" mode, the
        read-out's."""
        count = lambda layers: sum(a.size for l in layers for a in l.params.values() if a is not None)
        return int(count(self.layers) + (count([self.readout]) if mode == "one_pass" else 0))

    # --- saving ----------------------------------------------------------------------------------

    def random_streams(self):
        """The random generators training draws from, by name: the negative labels of every step;
        a checkpoint saves their states (minimf/checkpoint.py)."""
        return {"negative_labels": self.rng}
