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
from collections.abc import Callable
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
        if name not in state:
            raise CheckpointError(
                f"the checkpoint holds no {name} random state, which this run draws from; it was written by "
                "another kind of run: resume with the config in its run folder, or start a new run"
            )
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
    try:
        optimizer.load_state_dict(state)
    except ValueError as error:  # torch's one line: its groups, or their sizes, differ from this run's
        raise CheckpointError(
            f"the checkpoint's optimizer state does not fit this run's optimizer ({error}); "
            "resume with the config the checkpoint was saved with"
        ) from None
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
    problem = checkpoint_problem(state)
    if problem:
        raise CheckpointError(f"{path} is not a checkpoint squeeze-span wrote: {problem}; resume from another")
    return state


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _tensor_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(key, str) and torch.is_tensor(v) for key, v in value.items())


def _optimizer(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("state"), dict)
        and isinstance(value.get("param_groups"), list)
        and all(isinstance(group, dict) and isinstance(group.get("params"), list) for group in value["param_groups"])
    )


def _stream(value: Any) -> bool:
    return isinstance(value, dict) and _count(value.get("epoch")) and _count(value.get("position"))


def _bytes_tensor(value: Any) -> bool:
    return torch.is_tensor(value) and value.dtype == torch.uint8 and value.dim() == 1


def _python_rng(value: Any) -> bool:
    """random.getstate()'s (3, 624 words and a position, gauss), as tuples or lists: what random.setstate takes."""
    if not isinstance(value, (tuple, list)) or len(value) != 3 or value[0] != 3:
        return False
    internal, gauss = value[1], value[2]
    return (
        isinstance(internal, (tuple, list))
        and len(internal) == 625
        and all(type(word) is int and 0 <= word < 2**32 for word in internal)
        and internal[-1] <= 624
        and (gauss is None or type(gauss) is float)
    )


def _numpy_rng(value: Any) -> bool:
    """What capture_rng keeps of np.random.get_state(): its name, 624 words as a tensor, position, gauss."""
    return (
        isinstance(value, list)
        and len(value) == 5
        and value[0] == "MT19937"
        and torch.is_tensor(value[1])
        and value[1].shape == (624,)
        and value[1].dtype == torch.int64
        and type(value[2]) is int
        and 0 <= value[2] <= 624
        and type(value[3]) is int
        and type(value[4]) is float
    )


def _rng(value: Any) -> bool:
    """One random state per rank, as :func:`capture_rng` writes them."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(ranked, dict)
            and _python_rng(ranked.get("python"))
            and _numpy_rng(ranked.get("numpy"))
            and _bytes_tensor(ranked.get("torch"))
            and ranked["torch"].numel() == torch.get_rng_state().numel()
            and isinstance(ranked.get("cuda"), list)
            and all(_bytes_tensor(state) for state in ranked["cuda"])
            and all(_bytes_tensor(state) for name, state in ranked.items() if name not in ("python", "numpy", "cuda"))
            for ranked in value
        )
    )


# What a trainer reads on resume, entry by entry, and what each must be; each field is checked where
# the checkpoint holds it, and the first trainer's or the GAN trainer's set of entries must be there
# whole: a wrong type would otherwise surface as a traceback deep in a state-dict loader.
CHECKPOINT_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "step": (_count, "a count of steps"),
    "config": (lambda value: isinstance(value, dict), "a mapping"),
    "stream": (_stream, "a mapping of the epoch and position"),
    "rng": (_rng, "a list of each rank's random states, as capture_rng writes them"),
    "method": (_tensor_dict, "a state dict of tensors"),
    "optimizer": (_optimizer, "an optimizer's state dict"),
    "scaler": (lambda value: isinstance(value, dict), "a mapping"),
    "elapsed_seconds": (lambda value: type(value) in (int, float), "a number"),
    "G": (_tensor_dict, "a state dict of tensors"),
    "D": (_tensor_dict, "a state dict of tensors"),
    "G_ema": (_tensor_dict, "a state dict of tensors"),
    "G_opt": (_optimizer, "an optimizer's state dict"),
    "D_opt": (_optimizer, "an optimizer's state dict"),
    "nimg": (_count, "a count of images"),
    "r1": (torch.is_tensor, "a tensor"),
    "log": (lambda value: value is None or isinstance(value, dict), "a mapping or None"),
    "health": (lambda value: value is None or isinstance(value, dict), "a mapping or None"),
}
_SHARED_ENTRIES = ("step", "config", "stream", "rng")
_TRAINER_ENTRIES = (("method", "optimizer", "scaler"), ("G", "D", "G_ema", "G_opt", "D_opt", "nimg", "r1"))


def checkpoint_problem(state: dict[str, Any]) -> str | None:
    """What in ``state`` is not as :data:`CHECKPOINT_FIELDS` says a trainer wrote it, or None."""
    present = set(state)
    wanted = next((entries for entries in _TRAINER_ENTRIES if entries[0] in present), _TRAINER_ENTRIES[0])
    for key in (*_SHARED_ENTRIES, *wanted):
        if key not in present:
            return f"it has no {key!r} entry"
    for key, (admits, description) in CHECKPOINT_FIELDS.items():
        if key in present and not admits(state[key]):
            return f"its {key!r} entry is a {type(state[key]).__name__}, not {description}"
    return None
