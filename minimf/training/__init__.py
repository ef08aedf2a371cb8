"""Training as a library: the loop, its configuration, the data it takes, the networks it builds.

    from minimf import MonoForwardNet
    from minimf.backend import get_backend
    from minimf.training import fit, prepare_data

    data = prepare_data("mnist", get_backend("numpy"), train_subset=5000)
    history = fit(MonoForwardNet(sizes=[784, 500, 500]), data, epochs=2, on_epoch=print)

One file, one idea:

    loop.py       fit(net, data, ...): epochs, batches, chunks, checkpoints, Ctrl-C/SIGTERM, divergence
    config.py     RunConfig, the whole configuration of a run, and validate(config)
    registry.py   which network class trains each rule on each architecture; build_network(config, ...)
    data.py       prepare_data: a data set loaded, split, standardised, on the backend, checked once
    trainers.py   who takes the steps: the network, threads, or Ray actors
    records.py    the accuracy record of an epoch and its console line
    run.py        train_run(config): a whole run as the command line does it (folder, data, net, fit)

``python -m minimf.train`` (minimf/train.py) only parses its options into a RunConfig and calls
``train_run``; the experiments and benchmarks call these functions directly.
"""
from minimf.nn.schedules import Constant, Cosine, Step, make_schedule
from minimf.training.config import (DEFAULT_CHANNELS, DEFAULT_EPOCHS, DEFAULT_HIDDEN, DEFAULT_LR, DEFAULT_SCHEDULE,
                                    ConfigError, RunConfig, validate)
from minimf.training.data import data_for, prepare_data
from minimf.training.loop import Interrupted, TrainingDiverged, fit
from minimf.training.records import evaluate, format_record, headline_mode
from minimf.training.registry import NETWORKS, build_network, network_class
from minimf.training.run import train_run

__all__ = ["fit", "RunConfig", "validate", "ConfigError", "prepare_data", "data_for", "train_run", "evaluate",
           "format_record", "headline_mode", "NETWORKS", "network_class", "build_network", "Interrupted",
           "TrainingDiverged", "Constant", "Cosine", "Step", "make_schedule", "DEFAULT_LR", "DEFAULT_SCHEDULE",
           "DEFAULT_EPOCHS", "DEFAULT_HIDDEN", "DEFAULT_CHANNELS"]
