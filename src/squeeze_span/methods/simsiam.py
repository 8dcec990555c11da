"""SimSiam (Chen and He, CVPR 2021): the paper's Table 2 baseline, on real, generated or mixed images.

Two augmented views of each image give z = projector(backbone(x)) and p = predictor(z);
L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2 (``losses.simsiam_loss``).
``data`` picks the images as for VICReg: ``mix`` concatenates the generated and the real
views into one batch, as the authors' simsiam.py.

As the authors' ``src/models/simsiam.py``:

- the projector is ``model.proj_layers`` linear layers (Linear-BN-ReLU, then Linear), its
  last one followed by an affine-free BatchNorm, which makes the last linear's bias moot;
  the scripts use 2 layers on CIFAR and 3 on STL-10, with ``model.proj_dim`` 2048;
- the predictor is Linear-BN-ReLU to a ``pred_hidden`` (512) bottleneck, then Linear;
- the predictor's learning rate is fixed at the schedule's peak (their ``--fix-pred-lr``,
  which every script sets; SimSiam, section 4.2, found it slightly better than decaying it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from squeeze_span.config import bounded
from squeeze_span.data.stream import RealBatch
from squeeze_span.losses import simsiam_loss
from squeeze_span.methods.base import MethodContext, ParameterGroup, TwoViewConfig, TwoViewMethod
from squeeze_span.models.heads import mlp
from squeeze_span.runtime import full_precision


@dataclass
class SimSiamConfig(TwoViewConfig):
    name: str = "simsiam"
    pred_hidden: int = bounded(512, min=1)  # the predictor's bottleneck width
    fixed_predictor_lr: bool = True  # the predictor keeps the peak learning rate instead of the schedule


class SimSiam(TwoViewMethod):
    name = "simsiam"
    config_class = SimSiamConfig

    def __init__(self, config: SimSiamConfig, backbone: nn.Module, context: MethodContext) -> None:
        super().__init__(config, backbone, context)
        model = context.model
        hidden = model.proj_hidden or backbone.feature_dim
        self.projector = mlp(
            backbone.feature_dim, hidden, model.proj_dim, model.proj_layers, last_bias=False, last_bn=True
        )
        self.predictor = mlp(model.proj_dim, config.pred_hidden, model.proj_dim, 2)

    def parameter_groups(self) -> list[ParameterGroup]:
        predictor = list(self.predictor.parameters())
        in_predictor = {id(parameter) for parameter in predictor}
        rest = [parameter for parameter in self.parameters() if id(parameter) not in in_predictor]
        return [ParameterGroup(rest), ParameterGroup(predictor, fixed_lr=self.config.fixed_predictor_lr)]

    def forward(self, real: RealBatch, num_synthetic: int) -> dict[str, torch.Tensor]:
        first, second = self.two_views(real.images, num_synthetic)
        z1, z2 = self.project(first), self.project(second)
        p1, p2 = self.predictor(z1), self.predictor(z2)
        with full_precision(self.context.device):
            loss = simsiam_loss(p1.float(), p2.float(), z1.float(), z2.float())
        # SimSiam's collapse monitor (its Figure 2): the std of the l2-normalized z, about 1/sqrt(dim)
        # while the outputs spread over the sphere, 0 when they collapse to a point.
        std = F.normalize(z1.detach().float(), dim=1).std(dim=0).mean()
        return {"loss": loss, "std": std}
