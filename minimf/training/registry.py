"""Which network class trains each rule on each architecture, and how to build one from a configuration.

    network_class("mf", "mlp")                      -> MonoForwardNet
    network_class("mf", "mlp", credit="global")     -> MonoForwardGlobalNet
    build_network(config, input_shape=(784,), num_classes=10)

What a rule can do, its network class says (minimf/rules/): ``LOSSES`` (what ``train_step``
returns), ``EVALUATION_MODES`` (what ``evaluate`` gives), ``PIPELINE``, ``UNIT_SPLIT``,
``BATCH_SPLIT`` (the parallel trainers it supports) and ``OPTIONS``, the keyword arguments of its
constructor beyond the ones every network takes (``input_norm`` for MF's MLP, ``readout`` for MF's
CNN). Code above this module asks the class, never a list of rule names: a new rule is one module
in minimf/rules/ and one entry in ``NETWORKS``.
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

# algo: (the class for arch "mlp", for "cnn", for "mixer"); None (or left out) where the rule has no such network
NETWORKS = {"mf": (MonoForwardNet, MonoForwardCNN, MonoForwardMixer), "bp": (BackpropNet, BackpropCNN, BackpropMixer),
            "ff": (ForwardForwardNet, None), "fa": (FeedbackAlignmentNet, FeedbackAlignmentCNN),
            "dfa": (DirectFeedbackAlignmentNet, DirectFeedbackAlignmentCNN),
            "pepita": (PepitaNet, None), "sff": (None, ScalableForwardForwardCNN)}
# credit "global": the rule's objective with every layer's loss backpropagated to all layers below
# (minimf/rules/global_credit.py); MLPs only. Credit "local" (the default) is the rule of NETWORKS.
GLOBAL_CREDIT = {"mf": MonoForwardGlobalNet, "ff": ForwardForwardGlobalNet}
ARCHITECTURES = ("mlp", "cnn", "mixer")
CREDITS = ("local", "global")


def network_class(algo, arch, credit="local"):
    """The network class of a rule, an architecture and a credit (None where there is none)."""
    if credit == "global":
        return GLOBAL_CREDIT.get(algo) if arch == "mlp" else None
    classes = NETWORKS[algo]
    column = ARCHITECTURES.index(arch)
    return classes[column] if column < len(classes) else None


def algos_with(flag):
    """The rule names with a network (of either architecture) whose class sets ``flag``."""
    return [algo for algo, classes in NETWORKS.items() if any(c is not None and getattr(c, flag) for c in classes)]


def algos_offering(option):
    """(algo, arch) pairs whose network class takes the constructor option ``option``."""
    return [(algo, arch) for algo, classes in NETWORKS.items() for arch, c in zip(ARCHITECTURES, classes)
            if c is not None and option in c.OPTIONS]


def build_network(config, input_shape, num_classes):
    """The network a (validated) ``RunConfig`` names, for examples of ``input_shape``: (D,) or (C, H, W).

    Every network takes num_classes, backend, seed, bias, optimizer and lr; the options its class
    lists in ``OPTIONS`` come from the configuration's fields of the same names."""
    cls = network_class(config.algo, config.arch, config.credit)
    options = {name: getattr(config, name) for name in cls.OPTIONS}
    common = dict(num_classes=num_classes, backend=config.backend, seed=config.seed, bias=not config.no_bias,
                  optimizer=config.optimizer, lr=config.lr, **options)
    if config.arch == "mlp":
        return cls(sizes=[input_shape[0]] + list(config.hidden), **common)
    if config.arch == "cnn":
        return cls(input_shape=input_shape, channels=config.channels, **common)
    return cls(input_shape=input_shape, **common)          # the Mixer's sizes are among its OPTIONS
