"""Atomic writes: a reader sees the old file or the new one, never a half-written one."""
import json
import os

import numpy as np
import pytest

from minimf.files import atomic_save_npz, atomic_write_bytes, atomic_write_json


def test_write_and_replace(tmp_path):
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"x": 1})
    atomic_write_json(target, {"x": 2})
    assert json.loads(target.read_text()) == {"x": 2}
    assert os.listdir(target.parent) == ["a.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, [1, 2, 3])

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"[4, 5")
    assert json.loads(target.read_text()) == [1, 2, 3]
    assert os.listdir(tmp_path) == ["metrics.json"]


def test_npz_round_trip(tmp_path):
    atomic_save_npz(tmp_path / "m.npz", {"W": np.arange(6.0).reshape(2, 3)})
    with np.load(tmp_path / "m.npz") as f:
        np.testing.assert_array_equal(f["W"], np.arange(6.0).reshape(2, 3))
