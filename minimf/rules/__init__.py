"""One learning rule a module: Mono-Forward, backprop, Forward-Forward, Feedback Alignment, Direct
Feedback Alignment, PEPITA, DeeperForward's goodness, Scalable Forward-Forward; mixer, backprop and
Mono-Forward on an MLP-Mixer (MF v2's architecture); and global_credit, MF's and FF's objectives
with the layers' summed loss backpropagated. base.py holds what every network shares (``Network``:
its parts, batch checks, the evaluation loop, saving). Each network class says what it is
(LOSSES: what its train_step returns; EVALUATION_MODES: what its evaluate gives; which trainers of
minimf.parallel it supports; CREDIT, for MF and FF: "local" or "global"), so the command line asks the class.

Tier 3 of 4: may import minimf.nn, the ground (minimf.backend, checks, files, checkpoint) and other
rules; never the trainers, the command line, the experiments or the data sets.
"""
