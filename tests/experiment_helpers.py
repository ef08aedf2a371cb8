"""What the tests of stopped and parallel experiments share (test_experiment_resume,
test_experiment_workers): a report's numbers to compare, and the environment of an experiment run as
its own process."""
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def report_numbers(folder):
    """The raw numbers of the report in ``folder`` that come from its trainings: results.json's
    results less the seconds each training took and the memory figure (measured, they differ from
    run to run)."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "seconds"}
        return [strip(v) for v in value] if isinstance(value, list) else value
    raw = json.loads((Path(folder) / "results.json").read_text())["results"]
    return strip({k: v for k, v in raw.items() if k != "memory"})


def process_env():
    """The environment of ``python -m minimf.experiments`` run as a subprocess of a test."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}
