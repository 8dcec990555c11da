"""The methods by name, and the training config typed by the method it names.

Adding a method is one new file, ``methods/<name>.py``, whose :class:`Method` subclass sets
``name`` and ``config_class``, plus its class in ``METHODS`` below. The CLI, the demo, the
bench and the sweep all load training configs through :func:`load_training_config`.
"""

from __future__ import annotations

import os
from pathlib import Path

from squeeze_span.config import TrainingConfig, load_config
from squeeze_span.methods.base import Method
from squeeze_span.methods.encode import Encode
from squeeze_span.methods.simsiam import SimSiam
from squeeze_span.methods.squeeze_span import SqueezeSpan
from squeeze_span.methods.supervised import Supervised
from squeeze_span.methods.vicreg import VICReg

METHODS: dict[str, type[Method]] = {
    method.name: method for method in (SqueezeSpan, VICReg, SimSiam, Supervised, Encode)
}

# The configs ship inside the package (configs/ at the repository's root links here), so that an
# installed squeeze-span finds the demo's default without a checkout.
PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = PACKAGED_CONFIGS / "fashion_mnist" / "squeeze_span.yaml"  # the demo's and the bench's


def method_configs() -> dict[str, type]:
    """``method.name`` -> the dataclass that types the ``method`` section."""
    return {name: method.config_class for name, method in METHODS.items()}


def load_training_config(path: str | os.PathLike[str] | None, overrides: list[str]) -> TrainingConfig:
    """The training config in ``path`` with ``overrides``, its ``method`` section typed by its method."""
    return load_config(path, overrides, TrainingConfig, {"method": method_configs()})
