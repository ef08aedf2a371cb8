"""Global credit: Mono-Forward's and Forward-Forward's own objectives, with the error of every layer's
loss sent down to all the layers below it ("objective against locality").

MF and FF differ from backprop in two ways at once: in WHAT each layer is trained on (MF: a
projection M_i and a softmax cross-entropy per layer; FF: goodness on positive and negative data)
and in WHERE the error of a loss may go (local: to its own layer only). This module changes the
second and keeps the first, so that the two can be told apart:

    L = sum_i L_i                      the same per-layer losses as the local rule
    dL/dW_j = sum_{i >= j} dL_i/dW_j   every loss at or above layer j reaches W_j (and b_j)

The local rule keeps only the term i = j. Nothing above layer L exists, so the top layer's gradient
is the local one; the lower a layer, the more terms it collects. For MF this is "deep supervision"
(a classifier on every layer, all losses backpropagated); for FF it is FF's layer losses summed and
backpropagated through the layers and their normalisation. Everything else is the local rule's:
the constructor (so a seed gives the same initial weights), prediction, evaluation, saving.

MF with global credit (``MonoForwardGlobalNet``; MF v1 = arXiv 2501.09238v1, eqs. 5-8). One forward
pass keeps every layer's caches, then one backward pass from the top:

    G_i = a_i M_i^T,  L_i = CE(softmax(G_i), y)                    (5), (6) as in MF
    dG_i = (softmax(G_i) - onehot(y)) / N
    dM_i = dG_i^T a_i                                              (7) only L_i depends on M_i
    da_i = dG_i M_i  +  dz_{i+1} W_{i+1}^T                         its own loss, plus the error from above
    dz_i = da_i * 1[z_i > 0]
    dW_i = a_{i-1}^T dz_i,  db_i = sum_n dz_i                      (8) with the total error

(the second term of da_i is absent for the top layer i = L). Then every layer's optimiser steps
with its total gradient.

FF with global credit (``ForwardForwardGlobalNet``; Hinton 2022, arXiv 2212.13345). Positive and
negative data (2N rows, positives first) pass the layers; layer i normalises its input h_{i-1}:

    x^_i = h_{i-1} / (r + eps),  r = sqrt(mean_j h_j^2) ("rms") or sqrt(sum_j h_j^2) ("length")
    h_i = relu(x^_i W_i + b_i),  g_i = mean (or sum) of h_i^2,  L_i = logistic loss of g_i - theta

    dh_i = dL_i/dh_i  +  (error from layer i+1, through its normalisation)
    dz_i = dh_i * 1[z_i > 0],  dW_i = x^_i^T dz_i,  db_i = sum_n dz_i,  dx^_i = dz_i W_i^T
    dh_{i-1} = normalize_backward(dx^_i, h_{i-1})                  (derived at ``normalize_backward``)

The normalisation hides the size of h_{i-1} from layer i in the forward pass; its derivative
removes the part of the error along h_{i-1} (that part would only change the size), so layer i's
loss cannot tell layer i-1 to change its goodness, only the direction of its output. The one-pass
read-out stays exactly as in FF: trained on its own cross-entropy of the neutral-label activities,
its gradient stops at the features (no global credit from it: it is a probe, not a layer).

What the global rules give up: a layer now waits for the error of every layer above it, and all
activations of the batch are held until the backward pass reaches them, as in backprop. So the
pipeline and the unit split (which need layers and units that learn apart) do not apply.

Shape letters: N batch, D_i layer input width, H_i layer width, C classes.
"""
from minimf.backend import get_array_module
from minimf.nn.layers import dense_backward, dense_param_grads, dense_relu_forward, relu_backward
from minimf.nn.losses import softmax_cross_entropy
from minimf.rules.forward_forward import EPS, ForwardForwardNet, embed_label, embed_neutral, normalize
from minimf.rules.mono_forward import MonoForwardModel, MonoForwardNet


class MonoForwardGlobalNet(MonoForwardNet):
    """A Mono-Forward MLP trained on L = sum_i L_i by one backward pass through all layers.

    The constructor, ``predict``, ``evaluate``, ``num_parameters`` and saving are
    ``MonoForwardNet``'s: the same seed gives the same initial weights. ``train_step`` returns
    every layer's loss L_i, as MF's does; ``gradients`` gives the gradients of their sum, and
    ``local_gradients`` still those of each layer's own loss (the local rule), for comparison.
    """

    CREDIT = "global"
    PIPELINE = False      # layer i waits for the error of every layer above it
    UNIT_SPLIT = False    # a unit's error comes down through every unit of the layer above
    BATCH_SPLIT = True    # every L_i is a mean over the batch, so their sum is too (minimf/parallel/batch_split.py)
    INPUT_NORMS = ("none",)   # "layer" would need the normalisation's backward (minimf/rules/mono_forward.py)

    def gradients(self, x, y):
        """Gradients of the summed loss sum_i L_i on this batch: one dict {"W", "b", "M"} per
        layer, nothing updated. x: (N, D), y: (N,)."""
        x, y = self.check_batch(x, y)
        return self.loss_and_gradients(x, y)[1]

    def local_gradients(self, x, y):
        """Gradients of each layer's own loss L_i only (MF's rule, not the one trained here)."""
        x, y = self.check_batch(x, y)
        return MonoForwardModel.loss_and_gradients(self, x, y)[1]

    def loss_and_gradients(self, x, y):
        """Every layer's loss L_i (a list of 0-d arrays) and the gradients of their sum (a list of
        dicts {"W": (D_i, H_i), "b": (H_i,) or None, "M": (C, H_i)}), on an already checked batch;
        nothing updated. This is what ``train_step`` (and the batch split) steps with."""
        losses, caches, dM, own = [], [], [], []
        for layer in self.layers:                       # forward: keep what the backward pass needs
            a, (dense_cache, relu_cache) = dense_relu_forward(x, layer.W, layer.b)
            G = a @ layer.M.T                           # (5) goodness
            loss, dG = softmax_cross_entropy(G, y)      # (6) L_i; dG = (softmax(G) - onehot(y)) / N
            dM.append(dG.T @ a)                         # (7) dL/dM_i = dL_i/dM_i: no other loss holds M_i
            own.append(dG @ layer.M)                    # dL_i/da_i, the error of layer i's own loss
            caches.append((dense_cache, relu_cache))
            losses.append(loss)
            x = a
        grads = [None] * len(self.layers)
        from_above = None                               # dz_{i+1} W_{i+1}^T: what L_{i+1}, ..., L_L send to a_i
        for i in range(len(self.layers) - 1, -1, -1):   # backward, from the top
            dense_cache, relu_cache = caches[i]
            da = own[i]
            if from_above is not None:
                da += from_above                        # own[i] is fresh from a product: ours to add to
            dz = relu_backward(da, relu_cache, out=da)  # dz_i = da_i * 1[z_i > 0]
            if i > 0:
                from_above, dW, db = dense_backward(dz, dense_cache)   # (8), and da_{i-1} = dz_i W_i^T
            else:                                       # the input needs no gradient
                layer_input, _, has_bias = dense_cache
                dW, db = dense_param_grads(dz, layer_input, has_bias)  # (8)
            grads[i] = {"W": dW, "b": db, "M": dM[i]}
        return losses, grads

    def train_step(self, x, y, validate=True):
        """One batch: one forward pass, one backward pass of sum_i L_i, then every layer's
        optimiser steps with its total gradient (all computed on the network before the update).
        Returns every layer's loss L_i (before the update) as 0-d arrays on the backend;
        ``validate=False`` skips the value checks of x and y: then no host synchronisation."""
        x, y = self.check_batch(x, y, values=validate)
        losses, grads = self.loss_and_gradients(x, y)
        for layer, optimizer, layer_grads in zip(self.layers, self.optimizers, grads):
            optimizer.step(layer.params, layer_grads)  # (7), (8) with dL/d(.) of the sum
        return losses


def normalize_backward(dy, x, kind="rms"):
    """dL/dx of y = normalize(x, kind) = x / (r + eps), row by row, given dy = dL/dy.

    Per row, with k = D for "rms" (r^2 = (1/D) sum_j x_j^2) and k = 1 for "length" (r^2 = sum_j x_j^2):

        dr/dx_j   = x_j / (k r)                                   (from 2 r dr = (2/k) x_j dx_j)
        dy_m/dx_j = delta_mj / (r + eps) - x_m / (r + eps)^2 * dr/dx_j
        dx_j      = sum_m dy_m dy_m/dx_j
                  = dy_j / (r + eps) - x_j (dy . x) / (k r (r + eps)^2)

    The second term takes away the part of dy along x: scaling x changes y (almost) not at all.
    An all-zero row (a layer whose units are all off for that example) has r = 0 and x = 0: its
    second term is 0 (r is replaced by 1 there, avoiding 0/0), and dx = dy / eps.
    dy, x: (N, D) -> dx: (N, D).
    """
    xp = get_array_module(x)
    k = x.shape[1] if kind == "rms" else 1
    square = (x * x).mean(axis=1, keepdims=True) if kind == "rms" else (x * x).sum(axis=1, keepdims=True)
    r = xp.sqrt(square)                                             # (N, 1), as ``normalize`` computes it
    scale = r + EPS
    along_x = (dy * x).sum(axis=1, keepdims=True)                   # dy . x, (N, 1)
    return dy / scale - x * (along_x / (k * xp.where(r > 0, r, 1) * scale * scale))


class ForwardForwardGlobalNet(ForwardForwardNet):
    """A Forward-Forward MLP trained on L = sum_i L_i by one backward pass through the layers and
    their normalisations, for positive and negative data.

    The constructor, negative labels (the same random stream), ``predict``, ``evaluate``,
    ``num_parameters`` and saving are ``ForwardForwardNet``'s: the same seed gives the same
    initial weights and the same negative labels. ``train_step`` returns [L_1, ..., L_L,
    L_readout] as FF's does; ``gradients`` gives the gradients of sum_i L_i (and the read-out's
    own), ``local_gradients`` still those of each layer's own loss (FF's rule), for comparison.
    The one-pass read-out learns as in FF, on its own cross-entropy, its gradient stopping at the
    features: global credit is about the FF layers' losses only.
    """

    CREDIT = "global"
    PIPELINE = False      # layer i waits for the error of every layer above it
    UNIT_SPLIT = False
    BATCH_SPLIT = False   # as FF: negative labels are drawn per batch; not checked

    def gradients(self, x, y, negative_labels=None):
        """Gradients of sum_i L_i for every layer, then the read-out's of its own loss: dicts
        {"W", "b"}, nothing updated. x: (N, D), y: (N,); ``negative_labels`` (N,) (drawn if None;
        pass them for a fixed check)."""
        x, y = self.check_batch(x, y)
        if negative_labels is None:
            negative_labels = self.negative_labels(y)
        return self._global_step(x, y, negative_labels, update=False)[1]

    def train_step(self, x, y, validate=True):
        """One batch: positive, negative and neutral data pass the layers once, one backward pass
        of sum_i L_i, then every layer's optimiser (and the read-out's) steps. Returns [L_1, ...,
        L_L, L_readout] (before the update) as 0-d arrays on the backend; ``validate=False`` skips
        the value checks of x and y (then no host synchronisation)."""
        x, y = self.check_batch(x, y, values=validate)
        return self._global_step(x, y, self.negative_labels(y), update=True)[0]

    def _global_step(self, x, y, negative_labels, update):
        """(losses, grads) of every layer (of the summed loss) and of the read-out; with ``update``
        the optimisers step, after the whole backward pass."""
        C, n = self.num_classes, x.shape[0]
        h = self.xp.concatenate([embed_label(x, y, C, self.label_value),
                                 embed_label(x, negative_labels, C, self.label_value)])   # (2N, D)
        neutral = embed_neutral(x, C, self.neutral_value)
        losses, caches, own, activities = [], [], [], []
        for layer in self.layers:                                 # forward, keeping every cache
            x_hat = normalize(h, layer.normalization)             # x^_i = h_{i-1} / (r + eps)
            h_out, (dense_cache, relu_cache) = dense_relu_forward(x_hat, layer.W, layer.b)
            loss, dh = layer.goodness_loss(h_out, n)              # L_i and dL_i/dh_i
            caches.append((h, dense_cache, relu_cache))
            own.append(dh)
            losses.append(loss)
            neutral = layer.forward(neutral)                      # for the read-out
            activities.append(neutral)
            h = h_out
        grads = [None] * len(self.layers)
        from_above = None                          # what L_{i+1}, ..., L_L send to h_i
        for i in range(len(self.layers) - 1, -1, -1):             # backward, from the top
            layer_input, dense_cache, relu_cache = caches[i]
            dh = own[i]
            if from_above is not None:
                dh += from_above                   # own[i] is fresh: ours to add to
            dz = relu_backward(dh, relu_cache, out=dh)
            if i > 0:
                dx_hat, dW, db = dense_backward(dz, dense_cache)   # dx^_i = dz_i W_i^T
                from_above = normalize_backward(dx_hat, layer_input, self.layers[i].normalization)
            else:                                  # the input needs no gradient
                dW, db = dense_param_grads(dz, dense_cache[0], self.layers[i].b is not None)
            grads[i] = {"W": dW, "b": db}
        readout_loss, readout_grads = self._readout_loss_and_gradients(activities, y)   # stops at the features
        if update:
            for layer, optimizer, layer_grads in zip(self.layers + [self.readout], self.optimizers,
                                                     grads + [readout_grads]):
                optimizer.step(layer.params, layer_grads)
        return losses + [readout_loss], grads + [readout_grads]
