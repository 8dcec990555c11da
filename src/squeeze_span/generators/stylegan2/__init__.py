"""StyleGAN2-ADA networks in pure PyTorch, with NVIDIA's names, shapes and numbers.

``build_network(class_name, init_kwargs)`` builds a network from the class name and
constructor arguments stored in an NVIDIA pickle (as read by
``squeeze_span.generators.safe_pickle``), optionally loading its state dict by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from squeeze_span.errors import CheckpointError
from squeeze_span.generators.stylegan2.layers import MappingNetwork
from squeeze_span.generators.stylegan2.networks import (
    CIFAR10_G_KWARGS,
    Discriminator,
    Generator,
    SynthesisNetwork,
)

__all__ = [
    "CIFAR10_G_KWARGS",
    "NETWORK_CLASSES",
    "Discriminator",
    "Generator",
    "MappingNetwork",
    "SynthesisNetwork",
    "build_network",
]

NETWORK_CLASSES: dict[str, type[nn.Module]] = {
    "Generator": Generator,
    "Discriminator": Discriminator,
    "MappingNetwork": MappingNetwork,
    "SynthesisNetwork": SynthesisNetwork,
}


def build_network(
    class_name: str,
    init_kwargs: Mapping[str, Any],
    init_args: Sequence[Any] = (),
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> nn.Module:
    """Construct ``class_name(*init_args, **init_kwargs)``; load ``state_dict`` strictly if given.

    ``class_name`` may carry NVIDIA's module path (``training.networks.Generator``). The
    network comes back in eval mode; parameters keep ``requires_grad=True`` (freeze them with
    ``requires_grad_(False)`` for a fixed teacher).
    """
    short_name = class_name.rsplit(".", 1)[-1]
    cls = NETWORK_CLASSES.get(short_name)
    if cls is None:
        raise CheckpointError(
            f"unknown StyleGAN2 network class {class_name!r}; expected one of {sorted(NETWORK_CLASSES)} "
            "(a stylegan2-ada-pytorch pickle's 'G', 'G_ema' or 'D')"
        )
    try:
        network = cls(*init_args, **dict(init_kwargs))
    except TypeError as error:
        raise CheckpointError(f"cannot build {short_name} from the pickle's init arguments: {error}") from error
    if state_dict is not None:
        try:
            network.load_state_dict(dict(state_dict), strict=True)
        except RuntimeError as error:
            raise CheckpointError(f"the state dict does not fit {short_name}({dict(init_kwargs)}): {error}") from error
    return network.eval()
