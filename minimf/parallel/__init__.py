"""Trainers that share a rule's work out: the pipeline (one thread per layer), the unit split (each
layer's units over threads), the batch split (each batch's examples over threads), and threads.py,
what the threaded trainers share.

Tier 4 of 4: may import minimf.rules, minimf.nn and the ground (minimf.backend, checks, files,
checkpoint); never the command line, the experiments or the data sets.
"""
