"""Saving and restoring a network's parameters, and a whole training state.

Every network in minimf keeps a list ``layers`` whose items have a ``params`` dict
({"W": array, "b": array or None, ...}). Its state is the flat dict {"layers.i.name": host array},
which ``numpy.savez`` stores as an ``.npz`` archive: ``save``/``load``, the file ``model.npz``.

A training state is more: to continue a run so that it ends exactly as if it had never stopped,
a checkpoint also holds every optimiser's state (Adam's m, v and t; SGD's velocity), every random
stream the network draws from while training (``net.random_streams()``, e.g. FF's negative labels)
and whatever the caller adds (the trainer's own streams, the epoch and step, the metrics so far):
``training_state``/``restore_training_state``, written by ``save_checkpoint`` as a folder
with two files:

    state.npz       every array (parameters, optimiser state, the caller's arrays)
    manifest.json   the format, state.npz's size and SHA-256, everything else as JSON, and the
                    SHA-256 of the manifest's own content (a hand edit is caught too)

The folder is written under a temporary name and renamed when complete, so a crash leaves either
no new checkpoint or a whole one. ``load_checkpoint`` verifies both checksums and never unpickles
(``allow_pickle=False``; an object array is refused), so a malicious ``.npz`` cannot run code.
"""
import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from minimf.backend import to_numpy
from minimf.files import atomic_save_npz

CHECKPOINT_FORMAT = 1
STATE_FILE, MANIFEST_FILE = "state.npz", "manifest.json"


class CheckpointError(ValueError):
    """A checkpoint (or model.npz) that cannot be used: the message names the file and what is wrong."""


def layers_state(layers):
    """{"layers.i.name": host copy} for every parameter that exists (a missing bias is skipped)."""
    return {f"layers.{i}.{name}": to_numpy(array).copy()
            for i, layer in enumerate(layers)
            for name, array in layer.params.items() if array is not None}


def load_layers_state(layers, state, xp):
    """Copy a state made by ``layers_state`` into the layers' arrays, in place, strictly: every
    array the layers have and no other, each a real floating-point array of the right shape with
    finite values. Raises ValueError naming the array that is missing, extra, of another kind or
    shape, or not finite; nothing is copied unless every array passes."""
    expected = {f"layers.{i}.{name}": array for i, layer in enumerate(layers)
                for name, array in layer.params.items() if array is not None}
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ValueError(f"saved state has array{'s' if len(extra) > 1 else ''} the network lacks: {', '.join(extra)}")
    for key, array in expected.items():
        check_saved_array(key, state.get(key), tuple(array.shape))
    for key, array in expected.items():
        array[...] = xp.asarray(state[key])


def check_saved_array(key, saved, shape):
    """``saved`` is a host float array of ``shape`` with finite values; else a ValueError naming ``key``."""
    if saved is None:
        raise ValueError(f"saved state has no array {key!r}")
    if not isinstance(saved, np.ndarray) or saved.dtype.kind != "f":
        kind = saved.dtype if isinstance(saved, np.ndarray) else type(saved).__name__
        raise ValueError(f"saved {key} is {kind}, not a real floating-point array")
    if tuple(saved.shape) != shape:
        raise ValueError(f"saved {key} has shape {tuple(saved.shape)}, the network expects {shape}")
    if not np.isfinite(saved).all():
        raise ValueError(f"saved {key} holds NaN or infinite values")


def save(net, path, tag=None):
    """Write ``net.state_dict()`` to ``path`` (.npz) atomically (``tag``: see ``atomic_write_bytes``)."""
    atomic_save_npz(path, net.state_dict(), tag)


def load(net, path):
    """Load parameters saved by ``save`` into ``net`` (built with the same sizes). A file that is
    no readable archive, holds pickled objects, or whose arrays do not fit ``net`` raises
    ``CheckpointError`` naming it."""
    arrays = read_npz(path)
    try:
        net.load_state_dict(arrays)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None


def read_npz(path):
    """{name: array} of an ``.npz`` archive, read without unpickling anything."""
    if Path(path).exists() and not zipfile.is_zipfile(path):   # NumPy would take any other file for a pickle
        raise CheckpointError(f"{path}: not a readable .npz archive (truncated, damaged, or another kind of file)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except ValueError as err:   # NumPy refuses object arrays when allow_pickle=False
        raise CheckpointError(f"{path}: holds pickled objects, which are never loaded ({err})") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError) as err:
        raise CheckpointError(f"{path}: not a readable .npz archive, truncated or damaged ({err})") from None


# --- a whole training state -----------------------------------------------------------------------

def training_state(net):
    """(arrays, info) of ``net``: every parameter (``net.state_dict()``), every optimiser's state,
    every random stream's state. arrays: {name: host array}; info: JSON-ready scalars."""
    arrays = {f"params/{key}": value for key, value in net.state_dict().items()}
    optimizers = []
    for i, optimizer in enumerate(net.optimizers):
        scalars, state = optimizer.state_dict()
        optimizers.append(scalars)
        arrays.update({f"optimizers/{i}/{key}": value for key, value in state.items()})
    streams = {name: rng.bit_generator.state for name, rng in net.random_streams().items()}
    return arrays, {"optimizers": optimizers, "random_streams": streams}


def restore_training_state(net, arrays, info):
    """Put a state made by ``training_state`` back into ``net`` (built with the same settings)."""
    net.load_state_dict(_under(arrays, "params/"))
    if len(info["optimizers"]) != len(net.optimizers):
        raise ValueError(f"the state has {len(info['optimizers'])} optimisers, the network {len(net.optimizers)}")
    for i, (optimizer, scalars) in enumerate(zip(net.optimizers, info["optimizers"])):
        optimizer.load_state_dict(scalars, _under(arrays, f"optimizers/{i}/"), net.xp)
    for name, rng in net.random_streams().items():
        rng.bit_generator.state = info["random_streams"][name]


def _under(arrays, prefix):
    return {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}


def save_checkpoint(folder, arrays, info, tag=None):
    """Write ``arrays`` ({name: host array}) and ``info`` (JSON-ready) as the checkpoint ``folder``:
    built in a temporary folder beside it, each file flushed to disk, then renamed into place. An
    existing ``folder`` is replaced only once the new one is complete."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{folder.name}." + (f"{tag}." if tag else "")     # tag: the run's identity (run_folder.py)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=folder.parent))
    try:
        atomic_save_npz(tmp / STATE_FILE, arrays)
        data = (tmp / STATE_FILE).read_bytes()
        body = {"format": CHECKPOINT_FORMAT, "files": {STATE_FILE: {"bytes": len(data), "sha256": _sha256(data)}},
                "info": info}
        manifest = {**body, "manifest_sha256": _sha256(_canonical(body))}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n")
        _fsync(tmp / MANIFEST_FILE)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def load_checkpoint(folder):
    """(arrays, info) of a checkpoint written by ``save_checkpoint``, verified: raises
    ``CheckpointError`` naming the file when one is missing, truncated, corrupt or edited."""
    folder = Path(folder)
    manifest_path, state_path = folder / MANIFEST_FILE, folder / STATE_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
        body = {key: manifest[key] for key in ("format", "files", "info")}
        recorded = manifest["manifest_sha256"]
    except FileNotFoundError:
        raise CheckpointError(f"{manifest_path}: missing") from None
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{manifest_path}: not a checkpoint manifest ({err})") from None
    if _sha256(_canonical(body)) != recorded:
        raise CheckpointError(f"{manifest_path}: its content does not match its checksum (edited or damaged)")
    if body["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{manifest_path}: format {body['format']}, this minimf reads {CHECKPOINT_FORMAT}")
    expected = body["files"][STATE_FILE]
    try:
        data = state_path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{state_path}: missing") from None
    if len(data) != expected["bytes"]:
        raise CheckpointError(f"{state_path}: {len(data):,} bytes where the manifest records "
                              f"{expected['bytes']:,} (truncated or damaged)")
    if _sha256(data) != expected["sha256"]:
        raise CheckpointError(f"{state_path}: its SHA-256 does not match the manifest's (damaged or altered)")
    return read_npz(state_path), body["info"]


def _canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _sha256(data):
    return hashlib.sha256(data).hexdigest()


def _fsync(path):
    with open(path, "rb") as f:
        os.fsync(f.fileno())
