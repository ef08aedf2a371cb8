"""An experiment stopped part-way continues with --resume and writes the report an unstopped run
writes (minimf/experiments/journal.py): finished trainings are kept as they finish, read back on
resume (not trained again), and only ever for the training they were written for; the folder of an
unfinished or running experiment is never taken over by a new one; a damaged record stops the
resume with its name and is left where it is."""
import signal
import subprocess
import sys
import time

import pytest

from experiment_helpers import process_env, report_numbers
from minimf.experiments import common
from minimf.experiments.__main__ import main
from minimf.experiments.journal import Journal, digest, training_key
from minimf.run_folder import RunLock
from minimf.training import RunConfig, validate
from minimf.training.loop import Interrupted

REAL_TRAIN = common._train
ARGV = ["mixer", "--tiny", "--seeds", "0", "1", "--no-progress"]


@pytest.fixture(scope="module")
def unstopped(tmp_path_factory):
    out = tmp_path_factory.mktemp("unstopped")
    assert main(ARGV + ["--out", str(out)]) == 0
    return out


class StopAt:
    """Stand-in for common._train that raises Interrupted (as a SIGTERM does inside ``fit``) on its
    ``stop``-th call, and counts the trainings it let through."""

    def __init__(self, monkeypatch, stop=None):
        self.stop, self.trained = stop, 0
        monkeypatch.setattr(common, "_train", self)

    def __call__(self, *args, **kwargs):
        if self.stop is not None and self.trained + 1 == self.stop:
            raise Interrupted(1, 0, "SIGTERM")
        self.trained += 1
        return REAL_TRAIN(*args, **kwargs)


@pytest.mark.parametrize("argv", [ARGV, ["tune", "--tiny", "--seeds", "0", "1", "--trials", "2", "--no-progress"],
                                  ["decomposition", "--tiny", "--seeds", "0", "1", "--no-progress"],
                                  ["layerwise", "--tiny", "--seeds", "0", "1", "--no-progress"]],
                         ids=["mixer", "tune", "decomposition", "layerwise"])
def test_a_stopped_experiment_resumes_to_the_report_of_an_unstopped_one(argv, tmp_path, monkeypatch, capsys):
    unstopped, out = tmp_path / "unstopped", tmp_path / "stopped"
    assert main(argv + ["--out", str(unstopped)]) == 0
    first = StopAt(monkeypatch, stop=4)
    assert main(argv + ["--out", str(out)]) == 143                     # 128 + SIGTERM, as a shell reports it
    assert f"continue with: python -m minimf.experiments {argv[0]} --resume" in capsys.readouterr().err
    assert first.trained == 3 and Journal(out).count() == 3 and not (out / "results.json").exists()
    again = StopAt(monkeypatch)
    assert main([argv[0], "--resume", str(out), "--no-progress"]) == 0
    assert again.trained == Journal(unstopped).count() - 3              # the three kept ones are not trained again
    assert report_numbers(out) == report_numbers(unstopped)
    md = (out / "results.md").read_text()
    assert "Resumed: 3 trainings were read back" in md
    assert " ".join(argv) in md                                        # the report names the command that began it


def test_a_record_is_used_only_for_its_own_training(tmp_path):
    """The key tells apart every setting that changes the numbers, and the data scored on; what only
    changes display or file places does not change it."""
    base = validate(RunConfig(epochs=1, train_subset=512, test_subset=256))
    key = training_key(base)
    for change in (dict(seed=1), dict(lr=2e-3), dict(epochs=2), dict(algo="bp"), dict(hidden=[32, 32]),
                   dict(lr_schedule="constant"), dict(train_subset=256), dict(batch_size=128)):
        assert digest(training_key(validate(base.changed(**change)))) != digest(key), change
    assert digest(training_key(base, held_out=(256, 0))) != digest(key)
    for change in (dict(no_progress=True), dict(data_dir=str(tmp_path))):
        assert digest(training_key(validate(base.changed(**change)))) == digest(key), change
    journal = Journal(tmp_path)
    journal.keep(key, [{"test_acc": 0.5}])
    assert journal.recall(key) == [{"test_acc": 0.5}]
    assert journal.recall(training_key(base.changed(seed=1))) is None
    journal.path(training_key(base.changed(seed=1))).write_text(journal.path(key).read_text())
    with pytest.raises(Exception, match="not the record of the training it is named after"):
        journal.recall(training_key(base.changed(seed=1)))   # a copied file is refused


def test_a_damaged_record_stops_the_resume_with_its_name_and_stays(tmp_path, monkeypatch, capsys):
    out = tmp_path / "damaged"
    StopAt(monkeypatch, stop=3)
    assert main(ARGV + ["--out", str(out)]) == 143
    damaged = sorted((out / "runs").glob("*.json"))[0]
    damaged.write_text('{"key": ')
    assert main(["mixer", "--resume", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert str(damaged) in err and "move it away" in err
    assert damaged.read_text() == '{"key": '


@pytest.mark.parametrize("argv, message", [
    (["--out", "{out}"], "holds an unfinished experiment (2 finished trainings); continue it with --resume"),
    (["--resume", "{out}", "--seeds", "0"], "seeds 0 (recorded: 0 1) contradicts the experiment recorded there"),
    (["--resume", "{out}", "--epochs", "3"], "epochs 3 (recorded: None) contradicts"),
    (["--resume", "{out}", "--out", "{out}"], "--out and --resume exclude each other"),
    (["--resume", "{empty}"], "no experiment was started there"),
])
def test_an_unfinished_experiment_is_never_taken_over(argv, message, tmp_path, monkeypatch, capsys):
    out, empty = tmp_path / "unfinished", tmp_path / "empty"
    empty.mkdir()
    StopAt(monkeypatch, stop=3)
    assert main(ARGV + ["--out", str(out)]) == 143
    before = sorted(p.name for p in (out / "runs").iterdir())
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["mixer", "--tiny", *[a.format(out=out, empty=empty) for a in argv]])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in (out / "runs").iterdir()) == before and not (out / "results.md").exists()


def test_resume_refuses_another_experiments_folder(tmp_path, monkeypatch, capsys):
    out = tmp_path / "unfinished"
    StopAt(monkeypatch, stop=2)
    assert main(ARGV + ["--out", str(out)]) == 143
    with pytest.raises(SystemExit):
        main(["tune", "--resume", str(out)])
    assert "name tune (recorded: mixer) contradicts" in capsys.readouterr().err


def test_a_finished_experiment_is_not_resumed(unstopped, capsys):
    with pytest.raises(SystemExit):
        main(["mixer", "--resume", str(unstopped)])
    assert "holds a finished experiment's report; nothing to resume" in capsys.readouterr().err


def test_a_folder_in_use_is_refused(tmp_path, capsys):
    out = tmp_path / "busy"
    with RunLock(out):
        assert main(ARGV + ["--out", str(out)]) == 1
    assert "is in use by another run" in capsys.readouterr().err
    assert not (out / "runs").exists() and not (out / "results.md").exists()


def test_a_real_sigterm_keeps_the_finished_trainings(tmp_path):
    """The real signal, from outside: the process stops at a step boundary with status 143, its finished
    trainings kept, and --resume finishes the report."""
    out = tmp_path / "signalled"
    env = process_env()
    process = subprocess.Popen([sys.executable, "-m", "minimf.experiments", *ARGV, "--out", str(out)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while Journal(out).count() == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    kept = Journal(out).count()
    assert 1 <= kept and "continue with" in err
    resumed = subprocess.run([sys.executable, "-m", "minimf.experiments", "mixer", "--resume", str(out),
                              "--no-progress"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"Resumed: {kept} trainings were read back" in (out / "results.md").read_text()


def test_a_folder_taken_while_waiting_for_its_lock_is_left_alone(tmp_path, monkeypatch, capsys):
    """Another experiment finishes in the folder between the checks and the lock: nothing is written."""
    import minimf.experiments.__main__ as cli
    out = tmp_path / "raced"

    class LockAfterAnother(RunLock):
        def __enter__(self):
            (out / "results.md").write_text("another experiment's report\n")
            return super().__enter__()

    monkeypatch.setattr(cli, "RunLock", LockAfterAnother)
    assert main(ARGV + ["--out", str(out)]) == 1
    assert "used" in capsys.readouterr().err
    assert (out / "results.md").read_text() == "another experiment's report\n"
    assert not (out / "experiment.json").exists() and not (out / "runs").exists()


SIGTERM_BETWEEN_TRAININGS = """
import os, signal, sys
from minimf.experiments import common
from minimf.experiments.__main__ import main
real, done = common._train, []
def train_then_signal(*args, **kwargs):
    result = real(*args, **kwargs)
    done.append(1)
    if len(done) == 2:
        os.kill(os.getpid(), signal.SIGTERM)   # arrives after the training, outside fit's handler
    return result
common._train = train_then_signal
sys.exit(main(sys.argv[1:]))
"""


def test_a_sigterm_between_two_trainings_stops_as_cleanly(tmp_path):
    out = tmp_path / "between"
    env = process_env()
    done = subprocess.run([sys.executable, "-c", SIGTERM_BETWEEN_TRAININGS, *ARGV, "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 143, done.stderr          # not killed by the signal (-15)
    # the signal lands before the second training is written: it is trained again on resume
    assert "continue with" in done.stderr and Journal(out).count() == 1


REAL_FIT_CONFIG = common.fit_config


class StopAfterEpoch:
    """Stand-in for common.fit_config: training number ``training`` (counted from 1) is stopped, as a
    SIGTERM stops it, once epoch ``epoch``'s files and checkpoint are written; every epoch trained is
    listed in ``trained`` as (training number, epoch)."""

    def __init__(self, monkeypatch, training=None, epoch=None):
        self.training, self.epoch, self.calls, self.trained = training, epoch, 0, []
        monkeypatch.setattr(common, "fit_config", self)

    def __call__(self, net, data, config, **kwargs):
        self.calls += 1
        number = self.calls

        def after_files(history):
            if number == self.training and len(history) == self.epoch:
                raise Interrupted(self.epoch + 1, 0, "SIGTERM")

        def on_epoch(record):
            self.trained.append((number, record["epoch"]))

        return REAL_FIT_CONFIG(net, data, config, after_files=after_files, on_epoch=on_epoch, **kwargs)


def test_a_training_stopped_part_way_continues_from_its_last_epoch(tmp_path, monkeypatch, capsys):
    argv = ["mixer", "--tiny", "--seeds", "0", "1", "--epochs", "3", "--no-progress"]
    unstopped, out = tmp_path / "unstopped", tmp_path / "stopped"
    assert main(argv + ["--out", str(unstopped)]) == 0
    StopAfterEpoch(monkeypatch, training=2, epoch=2)
    assert main(argv + ["--out", str(out)]) == 143
    assert Journal(out).count() == 1
    partial = list((out / "partial").iterdir())
    assert len(partial) == 1 and (partial[0] / "checkpoints").is_dir()
    again = StopAfterEpoch(monkeypatch)
    assert main([argv[0], "--resume", str(out), "--no-progress"]) == 0
    assert again.trained[0] == (1, 3)                     # the stopped training went on with its third epoch
    assert report_numbers(out) == report_numbers(unstopped)
    assert not (out / "partial").exists()                 # each partial folder went once its training was kept
