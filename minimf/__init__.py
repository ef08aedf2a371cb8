"""minimf: Mono-Forward (arXiv 2501.09238v1) and the learning rules it is measured against,
from scratch in NumPy/CuPy, for teaching.

    from minimf import MonoForwardNet, BackpropNet
    net = MonoForwardNet(sizes=[784, 1000, 1000], num_classes=10, backend="numpy", seed=0)
"""
from minimf.backprop import BackpropNet
from minimf.mono_forward import MonoForwardNet

__all__ = ["MonoForwardNet", "BackpropNet"]
__version__ = "0.1.0"
