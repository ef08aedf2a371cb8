"""The pipelines' timelines (minimf/parallel/timeline.py): every layer's every batch, in an order
that only a pipeline can give, written by --timeline and drawn as a Gantt chart."""
import json

import pytest

from minimf.parallel.timeline import Timeline, busy_fraction, main as timeline_main
from minimf.train import main


def check_pipeline_order(timeline, layers, batches):
    """Each layer trains every batch once, in order; layer i starts batch t only after layer i-1 ended
    it (a_{i-1} is its input), and only after it ended its own batch t-1."""
    events = {(layer, batch): (start, end) for layer, batch, start, end in timeline["events"]}
    assert sorted(events) == [(i, t) for i in range(layers) for t in range(batches)]
    for (layer, batch), (start, end) in events.items():
        assert start <= end
        if layer > 0:
            assert start >= events[layer - 1, batch][1]
        if batch > 0:
            assert start >= events[layer, batch - 1][1]


def test_the_threaded_pipeline_records_every_step_in_order(tmp_path, capsys):
    path = tmp_path / "timeline.json"
    assert main(["--train-subset", "600", "--test-subset", "100", "--hidden", "32", "24", "16", "--batch-size", "50",
                 "--epochs", "2", "--no-progress", "--pipeline", "--timeline", str(path)]) == 0
    timeline = json.loads(path.read_text())
    assert timeline["layers"] == 3
    check_pipeline_order(timeline, layers=3, batches=24)            # 12 batches an epoch, 2 epochs
    assert all(0 < f <= 1 for f in busy_fraction(timeline))


def test_the_order_check_catches_a_sequential_schedule_mislabelled():
    """Must fail: a timeline in which layer 2 started a batch before layer 1 had ended it."""
    timeline = Timeline(2)
    timeline.add(0, 0.0, 1.0)
    timeline.add(1, 0.5, 1.5)
    with pytest.raises(AssertionError):
        check_pipeline_order(timeline.as_dict(), layers=2, batches=1)


def test_the_chart_is_drawn(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    timeline = Timeline(2)
    for batch in range(3):
        timeline.add(0, batch, batch + 1.0)
        timeline.add(1, batch + 1.0, batch + 1.5)
    timeline.save(tmp_path / "t.json")
    assert timeline_main([str(tmp_path / "t.json")]) == 0
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_timeline_goes_with_a_pipeline(capsys):
    with pytest.raises(SystemExit):
        main(["--timeline", "t.json"])
    assert "--timeline records a pipeline's layers" in capsys.readouterr().err
