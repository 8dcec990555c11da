"""Training checkpoints: written atomically, read with ``weights_only=True``, holding every RNG state.

A checkpoint is a plain dict of tensors, numbers and strings (so that loading it runs
no pickled code):

    format, version, step, config (the resolved config as a dict),
    method (the method's state dict: backbone, projector, squeeze module, ...),
    backbone (the backbone's build arguments, for export and probing),
    optimizer, scaler, stream (the real-data position),
    rng (one dict per rank: python, numpy, torch, cuda, augmentation, teacher),
    log (the step's metrics line, or None: a resume writes it if a kill came before it was)

The learning-rate schedule is not stored: it is a function of the step and the config,
rebuilt on resume, so that a changed learning rate or length takes effect.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from squeeze_span.errors import CheckpointError
from squeeze_span.fileio import atomic_write, load_torch_file

FORMAT = "squeeze-span-checkpoint"
VERSION = 1


def capture_rng(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every random state this process draws from."""
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    state.update({name: generator.get_state() for name, generator in generators.items()})
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    random.setstate(_as_python_state(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in generators.items():
        try:
            generator.set_state(state[name])
        except RuntimeError:  # a CPU generator's state does not fit a CUDA one, and back
            raise CheckpointError(
                f"the checkpoint's {name} random state comes from another kind of device than {generator.device}; "
                "resume on the kind of device (train.device) the run was trained on"
            ) from None


def _as_python_state(state: Any) -> tuple:
    """random.setstate needs tuples; a round trip through torch.save may give lists."""
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Restore an optimizer's moments and step counts but keep its hyperparameters (lr, momentum, ...),
    which come from this run's config: they may change on resume."""
    hyperparameters = [
        {key: value for key, value in group.items() if key != "params"} for group in optimizer.param_groups
    ]
    optimizer.load_state_dict(state)
    for group, values in zip(optimizer.param_groups, hyperparameters):
        group.update(values)


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` through a temporary file and a rename: a crash leaves the old file intact.

    An OSError (full disk, read-only folder) names ``path``; the old file stays, and no temporary file.
    """
    # Serialised in memory, then written by Python: torch's zip writer, failing on a full disk, raises a
    # RuntimeError of its own over the OSError; Python's write reports the full disk as what it is.
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **state}, buffer)
    with atomic_write(path) as temp:
        temp.write_bytes(buffer.getbuffer())
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a training checkpoint without running pickled code; one-line errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path, or start without resume")
    state = load_torch_file(path, map_location)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a squeeze-span training checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} is checkpoint version {state.get('version')}; this squeeze-span reads {VERSION}")
    return state
