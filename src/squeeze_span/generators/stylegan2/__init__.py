"""StyleGAN2-ADA networks in pure PyTorch, with NVIDIA's names, shapes and numbers.

``build_network(class_name, init_kwargs)`` builds a network from the class name and
constructor arguments stored in an NVIDIA pickle (as read by
``squeeze_span.generators.safe_pickle``), optionally loading its state dict by name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from squeeze_span.errors import CheckpointError
from squeeze_span.fileio import build_for_weights, weights_misfit
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
    source: str | os.PathLike[str] = "the state dict",
) -> nn.Module:
    """Construct ``class_name(*init_args, **init_kwargs)``; load ``state_dict`` strictly if given.

    ``class_name`` may carry NVIDIA's module path (``training.networks.Generator``). With a
    ``state_dict`` (read from ``source``, which refusals name), the network is compared with it
    on the meta device and given memory only once every key and shape fits: init kwargs within
    their bounds may still describe gigabytes (a 2048 px generator of 4096 channels) that the
    weights cannot fill. The network comes back in eval mode; parameters keep
    ``requires_grad=True`` (freeze them with ``requires_grad_(False)`` for a fixed teacher).
    """
    short_name = class_name.rsplit(".", 1)[-1]
    cls = NETWORK_CLASSES.get(short_name)
    if cls is None:
        raise CheckpointError(
            f"unknown StyleGAN2 network class {class_name!r}; expected one of {sorted(NETWORK_CLASSES)} "
            "(a stylegan2-ada-pytorch pickle's 'G', 'G_ema' or 'D')"
        )

    def build() -> nn.Module:
        try:
            return cls(*init_args, **dict(init_kwargs))
        except TypeError as error:
            raise CheckpointError(f"cannot build {short_name} from the pickle's init arguments: {error}") from error

    if state_dict is None:
        return build().eval()

    def check(network: nn.Module) -> None:
        misfit = weights_misfit(network, state_dict, source, f"{short_name}({dict(init_kwargs)})")
        if misfit:
            raise CheckpointError(
                f"{misfit}; the file's init kwargs and weights disagree, so it was damaged or edited: "
                "use the original file, or convert the pickle again"
            )

    return build_for_weights(build, check, state_dict).eval()
