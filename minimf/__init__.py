"""minimf: Mono-Forward (arXiv 2501.09238v1) and the learning rules it is measured against,
from scratch in NumPy/CuPy, for teaching.

    from minimf import MonoForwardNet, BackpropNet, MonoForwardCNN, BackpropCNN
    net = MonoForwardNet(sizes=[784, 1000, 1000], num_classes=10, backend="numpy", seed=0)
    cnn = MonoForwardCNN(input_shape=(1, 28, 28), channels=(64, 128, 256, 512), num_classes=10)

The other rules have the same interface: ``ForwardForwardNet`` (Forward-Forward, MLP),
``FeedbackAlignmentNet``/``FeedbackAlignmentCNN`` and ``DirectFeedbackAlignmentNet``/
``DirectFeedbackAlignmentCNN``; from the forward-only family ``PepitaNet`` (PEPITA, MLP) and
``ScalableForwardForwardCNN`` (Scalable FF); DeeperForward's goodness is MF's
``MonoForwardCNN(readout="channel-group")``. ``MonoForwardGlobalNet`` and ``ForwardForwardGlobalNet``
keep MF's and FF's objectives but backpropagate the sum of the layers' losses (global credit).
``MonoForwardMixer`` and ``BackpropMixer`` are MF and BP on an MLP-Mixer (MF v2's architecture).
"""
from minimf.rules.backprop import BackpropCNN, BackpropNet
from minimf.rules.direct_feedback_alignment import DirectFeedbackAlignmentCNN, DirectFeedbackAlignmentNet
from minimf.rules.feedback_alignment import FeedbackAlignmentCNN, FeedbackAlignmentNet
from minimf.rules.forward_forward import ForwardForwardNet
from minimf.rules.global_credit import ForwardForwardGlobalNet, MonoForwardGlobalNet
from minimf.rules.mixer import BackpropMixer, MonoForwardMixer
from minimf.rules.mono_forward import MonoForwardCNN, MonoForwardNet
from minimf.rules.pepita import PepitaNet
from minimf.rules.scalable_forward_forward import ScalableForwardForwardCNN

__all__ = ["MonoForwardNet", "BackpropNet", "MonoForwardCNN", "BackpropCNN", "ForwardForwardNet",
           "FeedbackAlignmentNet", "FeedbackAlignmentCNN", "DirectFeedbackAlignmentNet",
           "DirectFeedbackAlignmentCNN", "PepitaNet", "ScalableForwardForwardCNN", "MonoForwardGlobalNet",
           "ForwardForwardGlobalNet", "MonoForwardMixer", "BackpropMixer"]
__version__ = "0.1.0"
