"""Heads on top of a backbone: the projector, and T_phi, the squeeze module on the teacher's features.

Shapes follow the authors' code (``src/models/extractor.py`` and
``src/models/squeeze_module.py`` of the original project).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def mlp(
    in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, *, last_bias: bool = True, last_bn: bool = False
) -> nn.Sequential:
    """``num_layers`` linear layers: (Linear-BN-ReLU) x (num_layers - 1), then a last Linear.

    ``last_bn`` appends an affine-free BatchNorm after the last layer (SimSiam's projector).
    """
    if num_layers < 1:
        raise ValueError(f"an MLP needs at least one layer, got num_layers={num_layers}")
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(width, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        width = hidden_dim
    layers.append(nn.Linear(width, out_dim, bias=last_bias))
    if last_bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*layers)


def projector(feature_dim: int, hidden_dim: int | None, out_dim: int, num_layers: int) -> nn.Sequential:
    """The student's projector; its hidden width defaults to the backbone's feature width (512 for ResNet-18)."""
    return mlp(feature_dim, hidden_dim or feature_dim, out_dim, num_layers, last_bias=False)


def global_pool(feature: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, C] by averaging; [N, D] stays as it is (a latent w)."""
    return feature.flatten(2).mean(dim=2) if feature.dim() > 2 else feature


class SqueezeModule(nn.Module):
    """T_phi: squeezes the generator's features h^g(w) into the target representation Z_g.

    Each feature is global-average-pooled and mapped by its own linear lateral to
    ``hidden_dim``; the laterals are summed and fed to an MLP of ``depth`` linear
    layers, (Linear-BN-ReLU) x (depth - 1) then Linear to ``out_dim``.

    ``depth = 0`` is the parameter-free concatenation of the pooled features (the
    paper's "vanilla distillation"): ``out_dim`` is then their total width.
    """

    def __init__(self, feature_dims: Sequence[int], depth: int = 3, hidden_dim: int = 2048, out_dim: int = 2048):
        super().__init__()
        if depth < 0:
            raise ValueError(f"the squeeze module's depth must be >= 0, got {depth}")
        self.depth = depth
        self.feature_dims = list(feature_dims)
        if depth == 0:
            self.out_dim = sum(self.feature_dims)
            return
        self.out_dim = out_dim
        self.laterals = nn.ModuleList(nn.Linear(dim, hidden_dim) for dim in self.feature_dims)
        self.mlp = mlp(hidden_dim, hidden_dim, out_dim, depth)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != len(self.feature_dims):
            raise ValueError(f"the squeeze module was built for {len(self.feature_dims)} features, got {len(features)}")
        pooled = [global_pool(feature) for feature in features]
        if self.depth == 0:
            return torch.cat(pooled, dim=1)
        return self.mlp(sum(lateral(x) for lateral, x in zip(self.laterals, pooled)))
