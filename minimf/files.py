"""Writing files so that nothing is ever half-written: write a temporary file in the same
folder, flush it to disk, then rename it over the target. A rename within one file system is
atomic, so a reader (or a crash) sees either the old complete file or the new complete file.
"""
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np


def atomic_write_bytes(path, data, tag=None):
    """Write ``data`` (bytes) to ``path`` atomically; creates the parent folder. The temporary file is
    ``.NAME.<tag>.<random>.tmp`` beside it: a run passes its identity as ``tag``, so that it can
    later tell the leftovers of its own killed writes from anybody else's files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}." + (f"{tag}." if tag else "")
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def atomic_write_json(path, obj, tag=None):
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode(), tag)


def atomic_save_npz(path, arrays, tag=None):
    """Save a dict of NumPy arrays as an ``.npz`` archive, atomically."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue(), tag)


def _remove_quietly(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
