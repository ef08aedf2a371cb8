"""What every network shares, whatever its learning rule: its parts, the batch checks, the
evaluation loop and saving.

A network is a list ``layers`` whose items have a ``params`` dict ({"W": array, "b": array or None,
...}), one optimiser per layer (``optimizers[i]`` steps ``layers[i]``), the shape of one example
and the number of classes. A rule's class (``BackpropModel``, ``MonoForwardModel``,
``ForwardForwardNet``) builds the layers, calls ``Network.__init__`` and adds its own training step,
prediction and ``evaluate``. The class attributes that say what a network is (LOSSES,
EVALUATION_MODES, BATCH_SPLIT, PIPELINE, UNIT_SPLIT, CREDIT, OPTIONS) stay on the rules' classes.

Evaluation reads the device once: each batch of the test set gives K class-score arrays (N_b, C),
for instance one per prediction mode and one per layer, and the counts of correct predictions,
(K,), are added up on the device and moved to the host at the end:

    acc_k = (1/N) sum_n 1[argmax_c s_k[n, c] = y_n]

Shape letters: N examples, C classes; ``input_shape`` is one example's, (D,) or (C_in, H, W).
"""
from minimf.backend import to_numpy
from minimf.checkpoint import layers_state, load_layers_state
from minimf.checks import check_dtype, check_features, check_labels
from minimf.nn.losses import count_correct
from minimf.nn.optim import make_optimizer


class Network:
    """The parts of a network: ``layers``, ``input_shape``, ``num_classes``, ``xp`` (numpy or
    cupy), ``dtype`` and ``optimizers``, one per trained layer (``trained_layers``), each made by
    ``make_optimizer(optimizer, lr)``."""

    def __init__(self, layers, input_shape, num_classes, xp, dtype, optimizer, lr):
        self.layers = layers
        self.input_shape = tuple(input_shape)
        self.num_classes = int(num_classes)
        self.xp = xp
        self.dtype = check_dtype(dtype)
        self.optimizers = [make_optimizer(optimizer, lr) for _ in self.trained_layers()]

    def trained_layers(self):
        """Everything with ``params`` that training updates, in the order of ``optimizers`` and of
        the saved state: ``layers`` (a subclass may add more, e.g. FF's read-out)."""
        return self.layers

    # --- checks ----------------------------------------------------------------------------------

    def check_inputs(self, x, values=True):
        """x: (N, *input_shape) on the backend, in the network's dtype (minimf/checks.py);
        ``values=False`` checks shape and dtype only, no NaN (no host synchronisation)."""
        return check_features(x, self.input_shape, self.xp, self.dtype, values)

    def check_batch(self, x, y, values=True):
        """(x, y) checked: x as ``check_inputs``, y: (N,) integer labels in [0, C) (with ``values``)."""
        x = self.check_inputs(x, values)
        return x, check_labels(y, x.shape[0], self.num_classes, self.xp, values)

    # --- evaluation ------------------------------------------------------------------------------

    def accuracies(self, x, y, scores_of, batch_size=1000, validate=True):
        """The accuracy of every score array ``scores_of(batch)`` returns, as a host array (K,).

        ``scores_of`` maps a checked batch (N_b, *input_shape) to a list of K arrays (N_b, C).
        The batches are x[s:s + batch_size]; the counts are added up on the device and read once.
        ``validate=False`` skips the value checks of x and y, for data checked once already.
        """
        x, y = self.check_batch(x, y, values=validate)
        correct = 0
        for start in range(0, x.shape[0], batch_size):
            scores = scores_of(x[start:start + batch_size])
            labels = y[start:start + batch_size]
            correct = correct + self.xp.stack([count_correct(s, labels) for s in scores])   # (K,)
        return to_numpy(correct) / x.shape[0]                                               # the one transfer

    # --- saving ----------------------------------------------------------------------------------

    def random_streams(self):
        """The random generators training draws from, by name (none here: every draw is made at
        construction); a checkpoint saves their states (minimf/checkpoint.py)."""
        return {}

    def state_dict(self):
        """Host copies of every parameter of ``trained_layers()``, named "layers.i.W" etc. (for
        ``numpy.savez``)."""
        return layers_state(self.trained_layers())

    def load_state_dict(self, state):
        """Copy parameters saved by ``state_dict`` back in (names and shapes must match)."""
        load_layers_state(self.trained_layers(), state, self.xp)
