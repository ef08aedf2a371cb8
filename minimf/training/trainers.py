"""Who runs the steps of an epoch: the network itself, or one of the parallel trainers.

Every trainer has ``train(batches, validate=False) -> [losses of each step]``, so ``fit`` does not
care which one it was given:

    Sequential(net)                  ``net.train_step`` on every batch in turn
    UnitSplit(net, threads)          each MF layer's units over threads (minimf/parallel/unit_split.py)
    BatchSplit(net, threads, micro)  each batch's examples over threads (minimf/parallel/batch_split.py)
    ThreadedPipeline(net, timeline)  one thread per layer (minimf/parallel/pipeline.py)
    RayPipeline(net, ...)            one Ray actor per layer (minimf/parallel/ray_pipeline.py)

``make_trainer(net, config)`` picks the one a RunConfig asks for, as a context manager: the Ray
pipeline starts its actors (and a local Ray instance) on entry and stops them on exit.
"""
import contextlib

from minimf.parallel.batch_split import train_batch_split
from minimf.parallel.pipeline import train_pipelined
from minimf.parallel.ray_pipeline import RayPipeline
from minimf.parallel.unit_split import train_unit_split


class Sequential:
    """``net.train_step`` on every batch in turn (the data was checked once: ``validate=False``
    skips the value checks, so a step makes no host synchronisation)."""

    def __init__(self, net):
        self.net = net

    def train(self, batches, validate=False):
        return [self.net.train_step(x, y, validate=validate) for x, y in batches]


class UnitSplit:
    """Each MF layer's units shared out between ``threads`` threads."""

    def __init__(self, net, threads):
        self.net, self.threads = net, threads

    def train(self, batches, validate=False):
        return train_unit_split(self.net, batches, self.threads, validate=validate)


class BatchSplit:
    """Each batch's examples shared out between ``threads`` threads, in parts of ``micro_batch``."""

    def __init__(self, net, threads, micro_batch=None):
        self.net, self.threads, self.micro_batch = net, threads, micro_batch

    def train(self, batches, validate=False):
        return train_batch_split(self.net, batches, self.threads, self.micro_batch, validate=validate)


class ThreadedPipeline:
    """The layers as threads, each on its own batch (``timeline``: when each layer trained each batch)."""

    def __init__(self, net, timeline=None):
        self.net, self.timeline = net, timeline

    def train(self, batches, validate=False):
        return train_pipelined(self.net, batches, validate, self.timeline)


def make_trainer(net, config, timeline=None):
    """The trainer a (validated) RunConfig asks for, as a context manager."""
    if config.pipeline == "ray":
        return RayPipeline(net, config.ray_address, config.cpus_per_layer, config.gpus_per_layer, timeline=timeline)
    if config.pipeline == "threads":
        trainer = ThreadedPipeline(net, timeline)
    elif config.split_units:
        trainer = UnitSplit(net, config.split_units)
    elif config.split_batch:
        trainer = BatchSplit(net, config.split_batch, config.micro_batch)
    else:
        trainer = Sequential(net)
    return contextlib.nullcontext(trainer)
