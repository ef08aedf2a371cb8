"""PEPITA (Dellaferrera & Kreiman 2022, "Error-driven Input Modulation: Solving the Credit Assignment
Problem without a Backward Pass", ICML): two forward passes and no backward pass at all.

The network is BP's MLP (hidden ReLU layers h_1 .. h_{L-1}, a softmax output layer), and its
updates come from comparing two forward passes of the same batch:

    pass 1 (standard)   h_0 = x,        h_l = relu(h_{l-1} W_l + b_l),   p = softmax(h_{L-1} W_L + b_L)
                        e = p - onehot(y)                                   the output error, (N, C)
    pass 2 (modulated)  h_0' = x + e F  F: (C, D), a FIXED random projection of the error onto the input
                        h_l' = relu(h_{l-1}' W_l + b_l),   p' = softmax(h_{L-1}' W_L + b_L),   e' = p' - onehot(y)

    hidden layers       dW_l = h_{l-1}'^T (h_l - h_l') / N,   db_l = sum_n (h_l - h_l') / N     (PEPITA-1)
    output layer        dW_L = h_{L-1}'^T e' / N,             db_L = sum_n e' / N               (PEPITA-2)
    W <- W - eta dW     (SGD with momentum 0.9, the paper's setting)

Each hidden layer learns from the difference between its own activity in the two passes times
its (modulated) input; the output layer from the modulated error times its (modulated) input.
That is the rule of the authors' reference code (GiorgiaD/PEPITA, ``Tutorial_PEPITA_...ipynb``:
``-(h - h_mod)^T x_mod`` for the first layer and ``-e_mod^T h_mod`` for the last, added with a
plus sign, divided by the batch size). Written with e, the first pass's error, instead of e'
the output update would differ only by the small change the nudge e F makes to the output. Biases (not in the paper, whose layers have none) get the same rule
with a constant input of 1, the same in both passes; ``bias=False`` is the paper's network.

Why it learns. For one hidden layer, h_1 - h_1' = relu(x W_1) - relu((x + e F) W_1) is, to first
order, -(e F W_1) * 1[z_1 > 0]: the update dW_1 ~ -x^T ((e F W_1) * relu') is Feedback
Alignment's update with the feedback matrix (F W_1)^T, which changes as W_1 learns (Srinivasan et
al., ICLR 2024, "Forward learning with top-down feedback", analyse PEPITA as an adaptive FA).
The sign convention therefore matters: with F = 0 both passes agree, the hidden updates vanish
and the output update is the delta rule e^T h / N (the true gradient of the cross-entropy with
respect to the output weights). PEPITA's updates are not the gradient of any loss:
tests/test_pepita.py checks these properties instead of a finite-difference gradient.

Published setting (MNIST): one hidden layer of 1024 ReLUs, no biases, He-uniform weights
(uniform in +-sqrt(6 / fan_in)), F uniform in +-0.05 sqrt(6 / D), SGD lr 0.1 with momentum 0.9,
batch 64, lr divided by 10 at epochs 60 and 90 of 100, dropout 10%, inputs in [0, 1]: 98.01%
test accuracy. Here: the same rule and initialisation, no dropout; the paper's schedule is the
command line's ``--lr-schedule step --lr-steps 60 90`` (minimf/nn/schedules.py, ``Step``).

``feedback[0]`` is F (C, D); it never learns, is drawn from its own stream of the seed (so the
forward weights equal those of a BP net with the same seed, times sqrt(6)), is saved as
"feedback.0" and is not counted by ``num_parameters``.

Shape letters: N batch, D input width, H_l layer widths, C classes.
"""
from minimf.rules.backprop import BackpropNet
from minimf.rules.feedback_alignment import RandomFeedback, feedback_rng
from minimf.nn.layers import dense_param_grads
from minimf.nn.losses import softmax, softmax_cross_entropy
from minimf.nn.optim import SGD

HE_GAIN = 6 ** 0.5          # He uniform bound sqrt(6 / fan_in) = sqrt(6) x the default 1 / sqrt(fan_in)
F_SCALE = 0.05              # F = 0.05 x He uniform over the input width D (the paper's setting)
MOMENTUM = 0.9


def input_feedback(rng, num_classes, in_features, xp, dtype, scale=F_SCALE):
    """F: (C, D), uniform in +-scale * sqrt(6 / D), drawn on the host."""
    bound = scale * (6.0 / in_features) ** 0.5
    return xp.asarray(rng.uniform(-bound, bound, size=(num_classes, in_features)), dtype=dtype)


def onehot(y, num_classes, xp, dtype):
    """(N, C) with 1 at each label. y: (N,) integers."""
    out = xp.zeros((y.shape[0], num_classes), dtype=dtype)
    out[xp.arange(y.shape[0]), y] = 1
    return out


class PepitaNet(RandomFeedback, BackpropNet):
    """BP's MLP (``sizes = [D, H_1, ..., H_L]``, output layer H_L -> C), trained by PEPITA.

    Same constructor and methods as BackpropNet, plus ``momentum`` (used with ``optimizer="sgd"``,
    the paper's 0.9; Adam ignores it) and ``feedback_scale`` (F's bound relative to He uniform).
    ``gradients(x, y)`` returns PEPITA's updates (no gradients: see the module docstring).
    """

    BATCH_SPLIT = False   # not checked for PEPITA (minimf/parallel/batch_split.py is tested on MF, BP, FA, DFA)

    def __init__(self, sizes=(784, 1024), num_classes=10, backend="numpy", seed=0, bias=True,
                 optimizer="sgd", lr=0.1, dtype="float32", momentum=MOMENTUM, feedback_scale=F_SCALE):
        super().__init__(sizes, num_classes, backend, seed, bias, optimizer, lr, dtype)
        for layer in self.layers:
            layer.W *= HE_GAIN                            # He uniform, as in the reference code
        if optimizer == "sgd":
            self.optimizers = [SGD(lr=lr, momentum=momentum) for _ in self.layers]
        self.feedback = [input_feedback(feedback_rng(seed), self.num_classes, self.sizes[0], self.xp, dtype,
                                        feedback_scale)]

    @property
    def F(self):
        """The fixed input feedback F: (C, D)."""
        return self.feedback[0]

    def two_passes(self, x, y):
        """Both forward passes: ([h_0, ..., h_{L-1}], e, [h_0', ..., h_{L-1}'], e', loss of pass 1).

        h_0 = x, h_0' = x + e F; every h: (N, H_l); e, e': (N, C).
        """
        target = onehot(y, self.num_classes, self.xp, x.dtype)
        hidden, loss, error = self._pass(x, y, target)
        hidden_mod, _, error_mod = self._pass(x + error @ self.F, y, target)   # x + e F: the modulated input
        return hidden, error, hidden_mod, error_mod, loss

    def _pass(self, x, y, target):
        """One forward pass: the inputs of every layer [x, h_1, ..., h_{L-1}], the cross-entropy and p - onehot."""
        scores, caches = self.forward(x)
        inputs = [dense_cache[0] for dense_cache, _ in caches]   # each layer's input, x first
        loss, _ = softmax_cross_entropy(scores, y)
        return inputs, loss, softmax(scores) - target

    def loss_and_gradients(self, x, y):
        """The first pass's cross-entropy (0-d array) and PEPITA's update {"W", "b"} per layer."""
        hidden, _, hidden_mod, error_mod, loss = self.two_passes(x, y)
        n = x.shape[0]
        has_bias = self.layers[0].b is not None
        updates = []
        for l in range(1, len(self.layers)):                 # hidden layer l-1 gets h_l - h_l'
            dW, db = dense_param_grads((hidden[l] - hidden_mod[l]) / n, hidden_mod[l - 1], has_bias)  # PEPITA-1
            updates.append({"W": dW, "b": db})
        dW, db = dense_param_grads(error_mod / n, hidden_mod[-1], has_bias)   # PEPITA-2: e'^T h_{L-1}' / N
        updates.append({"W": dW, "b": db})
        return loss, updates
