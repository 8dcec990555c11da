"""VICReg (Bardes, Ponce, LeCun, ICLR 2022): the paper's Table 2 baseline, on real, generated or mixed images.

Two augmented views of each image go through the backbone and the projector, and
L = lambda s(Z1, Z2) + mu (v(Z1) + v(Z2)) + nu (c(Z1) + c(Z2)) (``losses.vicreg_loss``).

- ``data=real``: the real images; the same loss as squeeze_span with syn_ratio 0;
- ``data=syn``: the teacher's images only;
- ``data=mix``: round(syn_ratio B) generated and the rest real images, concatenated in
  each view, so that one loss covers them and its variance and covariance are those of
  the joint batch, as the authors' vicreg.py (not two losses weighted by alpha).

The projector is squeeze_span's (``model.proj_layers``, ``model.proj_dim``); the authors'
scripts/compare_ssl/*_vicreg_*.sh use its 5 layers and the weights 25/25/1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from squeeze_span.config import bounded
from squeeze_span.data.stream import RealBatch
from squeeze_span.losses import vicreg_loss
from squeeze_span.methods.base import MethodContext, TwoViewConfig, TwoViewMethod
from squeeze_span.models.heads import projector
from squeeze_span.runtime import full_precision


@dataclass
class VICRegConfig(TwoViewConfig):
    name: str = "vicreg"
    invariance_weight: float = bounded(25.0, min=0)  # lambda
    variance_weight: float = bounded(25.0, min=0)  # mu
    covariance_weight: float = bounded(1.0, min=0)  # nu


class VICReg(TwoViewMethod):
    name = "vicreg"
    config_class = VICRegConfig

    def __init__(self, config: VICRegConfig, backbone: nn.Module, context: MethodContext) -> None:
        super().__init__(config, backbone, context)
        model = context.model
        self.projector = projector(backbone.feature_dim, model.proj_hidden, model.proj_dim, model.proj_layers)

    def forward(self, real: RealBatch, num_synthetic: int) -> dict[str, torch.Tensor]:
        first, second = self.two_views(real.images, num_synthetic)
        z1, z2 = self.embed(first), self.embed(second)
        config = self.config
        with full_precision(self.context.device):
            terms = vicreg_loss(z1, z2, config.invariance_weight, config.variance_weight, config.covariance_weight)
        logs = {f"loss/{name}": value for name, value in terms.items() if name != "loss"}
        # The std of Z over the batch falls to 0 when the representation collapses.
        return {"loss": terms["loss"], **logs, "std": z1.detach().std(dim=0).mean()}
