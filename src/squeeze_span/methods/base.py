"""What a method is to the trainer, and the batch assembly the methods share.

A method is an ``nn.Module`` that owns only what makes it different: its heads and its
loss. The trainer owns the rest (devices, precision, DDP, optimizer, schedule,
checkpoints, logging) and knows a method only through this interface:

- it is built as ``Method(config, backbone, context)``;
- ``split(batch_size)`` says how many of a step's images are synthetic and how many real;
- ``forward(real, num_synthetic)`` is one training step on a batch of real images and
  labels (a ``RealBatch``); the method draws its synthetic images from the teacher itself.
  It returns a dict with the total
  ``loss`` and every logged term by name (``loss/span/variance``, ...). It is
  ``forward`` so that DDP sees the step;
- ``parameter_groups()`` says which parameters the optimizer treats alike, and which
  keep a fixed learning rate instead of following the schedule;
- ``backbone`` is the network that is exported and probed.

The methods that learn from generated images draw them, augment them and embed them
through the helpers here (``draw_synthetic``, ``augment``, ``embed``); those on two views
of each image (VICReg, SimSiam) share :class:`TwoViewMethod`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from squeeze_span.config import ModelConfig, bounded, choice
from squeeze_span.data import BatchAugmentation, match_channels
from squeeze_span.errors import ConfigError
from squeeze_span.generators import SampleSource, TeacherSample
from squeeze_span.runtime import conv_memory_format

DATA_SOURCES = ("real", "syn", "mix")


@dataclass
class MethodContext:
    """What the trainer hands every method."""

    device: torch.device
    image_channels: int  # the real data's channels; teacher images are converted to them
    num_classes: int  # classes of the real data's labels (for supervised methods)
    augmentation: BatchAugmentation  # the paper's augmentation, for real and synthetic images
    generator: torch.Generator  # draws augmentation parameters; checkpointed by the trainer
    model: ModelConfig
    teacher: SampleSource | None = None  # a Teacher, or a TeacherPool of its samples
    teacher_path: str | None = None  # where the teacher came from, for a method that needs more of its GAN (D)
    # Concatenates a tensor over all ranks, with gradients (identity on one process), so that
    # batch statistics (variance, covariance) cover the global batch.
    gather: Callable[[torch.Tensor], torch.Tensor] = lambda tensor: tensor


@dataclass
class ParameterGroup:
    """Parameters the optimizer treats alike. A ``fixed_lr`` group keeps the schedule's peak rate at
    every step (SimSiam's predictor); the others follow the warm-up and decay."""

    params: list[nn.Parameter]
    fixed_lr: bool = False


def split_batch(batch_size: int, syn_ratio: float) -> tuple[int, int]:
    """B_s = round(alpha * B) synthetic and B_r = B - B_s real images."""
    if not 0.0 <= syn_ratio <= 1.0:
        raise ValueError(f"syn_ratio must be in [0, 1], got {syn_ratio}")
    synthetic = round(syn_ratio * batch_size)
    return synthetic, batch_size - synthetic


# Each process forwards its share of every kind of image as a batch of its own, and BatchNorm and
# VICReg's variance are undefined over a single image: every kind a batch holds needs this many per process.
MIN_IMAGES_PER_PROCESS = 2
_LARGEST_BATCH_SEARCHED = 1 << 20


def check_batch_split(method: Method, batch_size: int, world_size: int) -> tuple[int, int]:
    """``method.split(batch_size)``, when ``world_size`` processes can share each of its parts evenly, at
    least :data:`MIN_IMAGES_PER_PROCESS` images of every kind each; else a :class:`ConfigError` that names
    the smallest batch size that works for this method, its mix and this number of processes."""

    def works(batch: int, kinds: tuple[bool, bool] | None = None) -> bool:
        parts = method.split(batch)
        return (kinds is None or tuple(part > 0 for part in parts) == kinds) and all(
            part % world_size == 0 and (part == 0 or part >= MIN_IMAGES_PER_PROCESS * world_size) for part in parts
        )

    synthetic, real = method.split(batch_size)
    if works(batch_size):
        return synthetic, real
    kinds = (synthetic > 0, real > 0)  # the smallest batch that works holds the same kinds of image
    smallest = next((batch for batch in range(2, _LARGEST_BATCH_SEARCHED) if works(batch, kinds)), None)
    config = getattr(method, "config", None)
    setting = ", ".join(f"{key}={getattr(config, key)}" for key in ("data", "syn_ratio") if hasattr(config, key))
    described = f"{getattr(config, 'name', '') or type(method).__name__}" + (f" ({setting})" if setting else "")
    processes = f"{world_size} process" + ("es" if world_size > 1 else "")
    fix = f"the smallest that works is train.batch_size={smallest}" if smallest else "change method.syn_ratio"
    raise ConfigError(
        f"train.batch_size={batch_size} gives {described} {synthetic} generated and {real} real images over "
        f"{processes}; each process needs the same number of each kind, and at least {MIN_IMAGES_PER_PROCESS} "
        f"of any kind it gets (BatchNorm and the variance are undefined over one): {fix}"
    )


def require_teacher(context: MethodContext, what: str) -> None:
    """Stop with one line when ``what`` (e.g. 'method vicreg with data=syn') has no teacher to draw from."""
    if context.teacher is None:
        raise ConfigError(f"{what} needs a teacher; set teacher.path=FILE")


class Method(nn.Module):
    """Base class: holds the backbone and the context; subclasses add heads and ``forward``.

    A subclass names itself (``name``, what a config's ``method.name`` says) and the dataclass that
    types its config's ``method`` section (``config_class``), so that the registry
    (``squeeze_span.methods.registry``) needs one line per method.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = object

    def __init__(self, backbone: nn.Module, context: MethodContext) -> None:
        super().__init__()
        self.memory_format = conv_memory_format(backbone, context.device)  # views are made to match
        self.backbone = backbone.to(memory_format=self.memory_format)
        self.context = context

    def split(self, batch_size: int) -> tuple[int, int]:
        """(synthetic, real) images in a batch of ``batch_size``; real only by default."""
        return 0, batch_size

    def parameter_groups(self) -> list[ParameterGroup]:
        """The optimizer's groups: by default one, of every parameter, on the schedule."""
        return [ParameterGroup(list(self.parameters()))]

    def draw_synthetic(self, count: int) -> TeacherSample:
        """``count`` of the teacher's samples, their images (in [-1, 1]) in the real data's channels."""
        sample = self.context.teacher.sample(count)
        return dataclasses.replace(sample, images=match_channels(sample.images, self.context.image_channels))

    def augment(self, images: torch.Tensor) -> torch.Tensor:
        """One augmented view of each image (real uint8 or generated float), drawn from the context's generator."""
        return self.context.augmentation(images, self.context.generator)

    def project(self, views: torch.Tensor) -> torch.Tensor:
        """Z = projector(backbone(views)), for a method with a ``projector``."""
        return self.projector(self.backbone(views.contiguous(memory_format=self.memory_format)))

    def embed(self, views: torch.Tensor) -> torch.Tensor:
        """Z in float32 for the losses, gathered over ranks so that batch statistics cover the global batch."""
        return self.context.gather(self.project(views).float())


@dataclass
class TwoViewConfig:
    """The ``method`` section's keys that every two-view method has."""

    name: str = ""
    data: str = choice("real", DATA_SOURCES)  # the real images, the teacher's (syn), or both in one batch (mix)
    syn_ratio: float = bounded(0.5, above=0, below=1)  # with data=mix: the generated share of the batch


class TwoViewMethod(Method):
    """A method on two augmented views of each image, whose images are real, generated, or both.

    With ``data=mix`` a batch of B holds round(syn_ratio * B) generated and the rest real
    images (:func:`split_batch`), as the authors' vicreg.py and simsiam.py do: each view is
    one batch of both kinds, so that one loss, and its batch statistics, covers them all.
    """

    def __init__(self, config: TwoViewConfig, backbone: nn.Module, context: MethodContext) -> None:
        super().__init__(backbone, context)
        self.config = config
        if config.data != "real":
            require_teacher(context, f"method {config.name} with data={config.data}")

    def split(self, batch_size: int) -> tuple[int, int]:
        if self.config.data == "mix":
            return split_batch(batch_size, self.config.syn_ratio)
        return (batch_size, 0) if self.config.data == "syn" else (0, batch_size)

    def two_views(self, real_images: torch.Tensor, num_synthetic: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Two augmented views of ``num_synthetic`` generated images, then of each real image, one batch per view."""
        sources = [self.draw_synthetic(num_synthetic).images] if num_synthetic else []
        if len(real_images):
            sources.append(real_images)
        pairs = [(self.augment(images), self.augment(images)) for images in sources]
        first, second = (torch.cat(views) for views in zip(*pairs))
        return first, second
