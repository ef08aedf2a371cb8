"""Reproducing MF v1's (arXiv 2501.09238v1) tables and figures, one command each:

    python -m minimf.experiments NAME [--quick] [--seeds 0 1 2] [--out DIR] [--backend numpy|cupy]
                                      [--epochs E] [--no-progress]

NAME is one of EXPERIMENTS. Each writes results.md (tables headed by the command, settings and wall
time), results.json (the raw numbers beside the configuration) and PNG figures into --out (default
runs/experiments/NAME).

    common.py      size settings, one training run (minimf.training), mean +- std, the output folder
    accuracy.py    layerwise (Table 1), mlp (Table 3), cnn (Table 2), convergence (Figures 4-5), tabular (Table 6)
    efficiency.py  prediction (Table 4), epoch-time (Table 5), memory (Figures 1-3)
    hotplug.py     hotplug (section 3.3)
    tune.py        tune (lr, schedule, epochs chosen on a validation split; then MF against BP)
    mixer.py       mixer (MF against BP on MLP-Mixers: settings chosen on validation, paired over seeds; step memory)
    decomposition.py  decomposition (objective against locality: MF, FF, their global-credit twins, BP; depth)
    stats.py       paired t intervals and the equivalence test (TOST) over seeds, no SciPy
    measure.py     memory meters (tracemalloc, CuPy pool) and the timer (seconds_of, interleaved), shared with benchmarks/
"""
from minimf.experiments.accuracy import cnn, convergence, layerwise, mlp, tabular
from minimf.experiments.decomposition import objective_against_locality
from minimf.experiments.efficiency import epoch_time, memory, prediction
from minimf.experiments.hotplug import hotplug_layers
from minimf.experiments.mixer import mixer_comparison
from minimf.experiments.tune import tune_hyperparameters

EXPERIMENTS = {"layerwise": layerwise, "mlp": mlp, "cnn": cnn, "prediction": prediction,
               "epoch-time": epoch_time, "memory": memory, "convergence": convergence, "hotplug": hotplug_layers,
               "tabular": tabular, "tune": tune_hyperparameters, "decomposition": objective_against_locality,
               "mixer": mixer_comparison}

__all__ = ["EXPERIMENTS"]
