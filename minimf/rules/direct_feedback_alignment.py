"""Direct Feedback Alignment (DFA; Nøkland 2016, "Direct Feedback Alignment Provides Learning in
Deep Neural Networks", NeurIPS 29).

FA (minimf/rules/feedback_alignment.py) still passes the error down layer by layer, through fixed random
matrices. DFA sends the output error e STRAIGHT to every hidden layer, through a fixed random
matrix B_i: (C, n_i) per layer, n_i being the layer's width:

    e = ds = (softmax(s) - onehot(y)) / N             the output error, as in BP, (N, C)
    dW_out = a_L^T e,   db_out = sum_n e              the true gradient
    da_i = e B_i                                      (BP: the error of the layer above, through
                                                       W_{i+1}^T and that layer's ReLU mask)
    dz_i = da_i * 1[z_i > 0],   dW_i = a_{i-1}^T dz_i,   db_i = sum_n dz_i

No hidden layer waits for the layers above it: each needs only e and its own forward cache, so
all the updates could be computed at once. As for FA, the hidden layers' updates are no gradient
of any loss; the network learns to make them useful (the forward weights align with the
feedback). With a single hidden layer DFA and FA coincide (B_1 = B_out^T). For the LAST hidden
layer, B_L = W_out^T makes DFA's update that of BP (a test checks it); below it, BP's error has
passed further ReLU masks and weights, which DFA skips.

The CNN: B_i: (C, F_i*H_i*W_i) maps the output error to block i's output after pooling, flattened;
da_i = unflatten(e B_i), and from there BP's backward through the pooling and the ReLU gives
dW_i, db_i (the block's input gradient is never needed).

``feedback[i]`` belongs to ``layers[i]`` (a hidden layer or conv block); ``feedback[-1]`` is None
(the output layer gets e itself). The feedback is drawn uniformly in ±1/sqrt(C), like a dense layer
from C to n_i, from its own stream of the seed (so the forward weights equal BP's and FA's for the
same seed); it is saved with the parameters ("feedback.i") and not counted by ``num_parameters``.
"""
from minimf.rules.backprop import BackpropCNN, BackpropNet
from minimf.nn.cnn import conv_block_backward
from minimf.nn.conv import flatten_backward
from minimf.rules.feedback_alignment import RandomFeedback, feedback_rng, random_feedback
from minimf.nn.layers import dense_param_grads, relu_backward
from minimf.nn.losses import softmax_cross_entropy


def output_layer_gradients(error, dense_cache):
    """The output layer's true gradient {"W": a_L^T e, "b": sum_n e} from its dense cache."""
    features, _, has_bias = dense_cache
    dW, db = dense_param_grads(error, features, has_bias)
    return {"W": dW, "b": db}


class DirectFeedbackAlignmentNet(RandomFeedback, BackpropNet):
    """BP's MLP (``sizes = [D, H_1, ..., H_L]``, output layer H_L -> C), trained by DFA.

    ``feedback[i]``: (C, H_i) for the hidden layers; ``feedback[-1]`` (the output layer) is None.
    Same constructor, methods and parameter count as BackpropNet.
    """

    def __init__(self, sizes=(784, 1000, 1000), num_classes=10, backend="numpy", seed=0,
                 bias=True, optimizer="adam", lr=1e-3, dtype="float32"):
        super().__init__(sizes, num_classes, backend, seed, bias, optimizer, lr, dtype)
        rng = feedback_rng(seed)
        C = self.num_classes
        self.feedback = [random_feedback(rng, (C, width), C, self.xp, dtype) for width in self.sizes[1:]] + [None]

    def loss_and_gradients(self, x, y):
        """The batch loss (0-d array) and one update dict {"W", "b"} per layer, bottom first."""
        scores, caches = self.forward(x)
        loss, error = softmax_cross_entropy(scores, y)                  # e: (N, C)
        grads = []
        for (dense_cache, relu_cache), B in zip(caches[:-1], self.feedback):
            dz = relu_backward(error @ B, relu_cache)                  # da_i = e B_i, then the ReLU mask
            layer_input, _, has_bias = dense_cache
            dW, db = dense_param_grads(dz, layer_input, has_bias)
            grads.append({"W": dW, "b": db})
        grads.append(output_layer_gradients(error, caches[-1][0]))
        return loss, grads


class DirectFeedbackAlignmentCNN(RandomFeedback, BackpropCNN):
    """BP's CNN (conv blocks ``channels``, then a dense output layer), trained by DFA.

    ``feedback[i]``: (C, F_i*H_i*W_i) for block i's pooled output; ``feedback[-1]`` is None.
    """

    def __init__(self, input_shape=(1, 28, 28), channels=(64, 128, 256, 512), num_classes=10,
                 backend="numpy", seed=0, bias=True, optimizer="adam", lr=1e-3, dtype="float32",
                 pool="avg"):
        super().__init__(input_shape, channels, num_classes, backend, seed, bias, optimizer, lr, dtype, pool)
        rng = feedback_rng(seed)
        C = self.num_classes
        self.feedback = [random_feedback(rng, (C, F * H * W), C, self.xp, dtype)
                         for F, H, W in self.shapes[1:]] + [None]

    def loss_and_gradients(self, x, y):
        """The batch loss (0-d array) and one update dict {"W", "b"} per layer, bottom first."""
        scores, (block_caches, _, dense_cache) = self.forward(x)
        loss, error = softmax_cross_entropy(scores, y)                  # e: (N, C)
        grads = []
        for cache, B, shape in zip(block_caches, self.feedback, self.shapes[1:]):
            da = flatten_backward(error @ B, (x.shape[0], *shape))       # e B_i as (N, F_i, H_i, W_i)
            _, dW, db = conv_block_backward(da, cache, input_grad=False)
            grads.append({"W": dW, "b": db})
        grads.append(output_layer_gradients(error, dense_cache))
        return loss, grads
