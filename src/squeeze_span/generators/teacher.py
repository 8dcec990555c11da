"""A teacher: a frozen generator that renders images and records its intermediate features.

Features are taken by forward hooks on the modules whose names match a regex, so any
generator works, not only StyleGAN2:

- ``synthesis\\.b\\d+$`` (default): the feature map x of each synthesis block's
  ``(x, img)`` output, b4 ... bR;
- ``mapping$``: the latent w, once (the mapping network broadcasts it to every ws row).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from squeeze_span.errors import ConfigError
from squeeze_span.generators.stylegan2 import Generator
from squeeze_span.runtime import autocast

DEFAULT_FEATURES = r"synthesis\.b\d+$"
LATENT_FEATURES = r"mapping$"


@dataclass
class TeacherSample:
    images: torch.Tensor  # [N, C, H, W] float32 in [-1, 1]
    features: list[torch.Tensor]  # one float32 tensor per tapped module, in execution order
    labels: torch.Tensor | None = None  # [N] class indices for a conditional generator


def _feature_of(output: object) -> torch.Tensor:
    """The tensor a hook records: x of a block's (x, img) pair, and w once for broadcast ws."""
    tensor = output[0] if isinstance(output, (tuple, list)) else output
    if not isinstance(tensor, torch.Tensor):
        raise ConfigError(f"a tapped module returned {type(tensor).__name__}, not a tensor; tap another module")
    if tensor.dim() == 3 and torch.equal(tensor, tensor[:, :1].expand_as(tensor)):
        return tensor[:, 0]
    return tensor


class FeatureTaps:
    """Forward hooks that record what ``network``'s modules matching ``regex`` output, in execution order.

    ``take()`` returns the recorded features and clears them; ``remove()`` takes the hooks
    off, for a network that outlives its taps.
    """

    def __init__(self, network: nn.Module, regex: str) -> None:
        try:
            pattern = re.compile(regex)
        except re.error as error:
            raise ConfigError(f"feature regex {regex!r} is invalid ({error})") from None
        self.names = [name for name, _ in network.named_modules() if name and pattern.search(name)]
        if not self.names:
            shallow = [name for name, _ in network.named_modules() if name and name.count(".") < 2]
            raise ConfigError(
                f"feature regex {regex!r} matches no module of the {type(network).__name__}; "
                f"some names: {', '.join(shallow[:12])}"
            )
        self._recorded: dict[str, torch.Tensor] = {}
        modules = dict(network.named_modules())
        self._handles = [modules[name].register_forward_hook(self._recorder(name)) for name in self.names]

    def _recorder(self, name: str):
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            self._recorded[name] = _feature_of(output)

        return hook

    def take(self) -> list[torch.Tensor]:
        """The features of the last forward pass, as float32, and forget them."""
        features = [self._recorded[name].float() for name in self.names]
        self._recorded.clear()
        return features

    def clear(self) -> None:
        """Forget the recorded features (and the autograd graph they may hold) unread."""
        self._recorded.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def pooled(features: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each tapped tensor as ``[N, D]``: feature maps averaged over space, anything else flattened."""
    return [(f.mean(dim=(2, 3)) if f.dim() == 4 else f).flatten(start_dim=1) for f in features]


class Teacher:
    """Samples ``(images, features)`` from a frozen generator under no_grad, on its device.

    ``truncation_psi`` and ``noise_mode`` are passed to StyleGAN2 generators only. The
    latents come from ``self.latent_generator`` (seeded by ``seed``) unless a
    ``generator`` is given, so a run can checkpoint and restore the teacher's stream.
    """

    def __init__(
        self,
        generator: nn.Module,
        feature_regex: str | None = DEFAULT_FEATURES,
        *,
        device: torch.device | str = "cpu",
        precision: str = "fp32",
        truncation_psi: float = 1.0,
        noise_mode: str = "const",
        seed: int = 0,
    ) -> None:
        self.device = torch.device(device)
        self.network = generator.eval().requires_grad_(False).to(self.device)
        self.precision = precision
        self.z_dim = int(generator.z_dim)
        self.c_dim = int(getattr(generator, "c_dim", 0))
        self.call_kwargs = (
            {"truncation_psi": truncation_psi, "noise_mode": noise_mode} if isinstance(generator, Generator) else {}
        )
        self.taps = FeatureTaps(generator, feature_regex) if feature_regex is not None else None
        self.feature_names = self.taps.names if self.taps is not None else []
        self.latent_generator = torch.Generator(self.device).manual_seed(seed)
        self._shapes: tuple[tuple[int, ...], list[tuple[int, ...]]] | None = None

    def _inputs(
        self, n: int, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``n`` latents z, one-hot classes c (drawn uniformly for a conditional generator) and their labels."""
        generator = generator or self.latent_generator
        z = torch.randn(n, self.z_dim, generator=generator, device=self.device)
        labels = None
        c = torch.zeros(n, self.c_dim, device=self.device)
        if self.c_dim:
            labels = torch.randint(self.c_dim, (n,), generator=generator, device=self.device)
            c[torch.arange(n, device=self.device), labels] = 1.0
        return z, c, labels

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, *, return_labels: bool = False) -> TeacherSample:
        """Render ``n`` images and their features; conditional generators draw classes uniformly."""
        z, c, labels = self._inputs(n, generator)
        with autocast(self.device, self.precision):
            images = self.network(z, c, **self.call_kwargs)
        features = self.taps.take() if self.taps is not None else []
        return TeacherSample(images.float().clamp(-1.0, 1.0), features, labels if return_labels else None)

    @property
    def latent_shape(self) -> tuple[int, int] | None:
        """``(num_ws, w_dim)`` of a StyleGAN2 teacher's w+, which :meth:`synthesize` renders; None for others."""
        return (self.network.num_ws, self.network.w_dim) if isinstance(self.network, Generator) else None

    @torch.no_grad()
    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` of a StyleGAN2 teacher's w+ = G.mapping(z, c), ``[n, num_ws, w_dim]``, and their images
        :meth:`synthesize` (w+), drawn as :meth:`sample` draws its latents."""
        z, c, _ = self._inputs(n, generator)
        with autocast(self.device, self.precision):
            ws = self.network.mapping(z, c, truncation_psi=self.call_kwargs["truncation_psi"])
        return ws.float(), self.synthesize(ws)

    def synthesize(self, ws: torch.Tensor) -> torch.Tensor:
        """G.synthesis(ws) as float32, not clamped: differentiable in ``ws``, while G stays frozen.

        The gradient of a loss on the images reaches ``ws`` (and what computed them), never G's
        parameters, which do not require grad.
        """
        with autocast(self.device, self.precision):
            images = self.network.synthesis(ws, noise_mode=self.call_kwargs["noise_mode"])
        if self.taps is not None:
            self.taps.clear()  # these renders are no sample: their features would only hold memory
        return images.float()

    def _probe_shapes(self) -> tuple[tuple[int, ...], list[tuple[int, ...]]]:
        """Per-sample image and feature shapes, from one forward pass at batch 1 (cached)."""
        if self._shapes is None:
            state = self.latent_generator.get_state()
            sample = self.sample(1)
            self.latent_generator.set_state(state)  # looking at shapes must not shift the latent stream
            self._shapes = (tuple(sample.images.shape[1:]), [tuple(f.shape[1:]) for f in sample.features])
        return self._shapes

    @property
    def feature_shapes(self) -> list[tuple[int, ...]]:
        """Per-sample shape of each feature, e.g. [(512, 4, 4), (512, 8, 8), ...]."""
        return self._probe_shapes()[1]

    @property
    def image_shape(self) -> tuple[int, ...]:
        """Per-sample image shape (C, H, W)."""
        return self._probe_shapes()[0]


@runtime_checkable
class SampleSource(Protocol):
    """What a method draws generated samples from: a ``Teacher`` rendering them, or a ``TeacherPool``
    of its samples. ``latent_generator`` drives the draws; the trainer checkpoints it."""

    latent_generator: torch.Generator
    device: torch.device

    def sample(self, n: int, generator: torch.Generator | None = None) -> TeacherSample: ...

    @property
    def feature_shapes(self) -> list[tuple[int, ...]]: ...

    @property
    def image_shape(self) -> tuple[int, ...]: ...


class TeacherPool:
    """``size`` of a teacher's samples, rendered once; each draw picks from them at random.

    When rendering costs as much as a student step, a pool re-used with fresh augmentation
    buys more student steps in the same time, at the price of ``size`` distinct images
    instead of new ones at every draw. The features are kept global-average-pooled, which
    is all T_phi reads, so a sample costs its image plus one number per channel. Draws use
    the teacher's ``latent_generator``, which a run checkpoints, so a resumed run draws on.
    """

    def __init__(self, teacher: Teacher, size: int, *, batch_size: int = 500, progress: bool = False) -> None:
        from tqdm.auto import tqdm

        if size < 1:
            raise ConfigError(f"teacher.pool_size must be positive to pool samples, got {size}")
        self.latent_generator = teacher.latent_generator
        self.device = teacher.device
        started = time.perf_counter()
        images, features = [], []
        for start in tqdm(range(0, size, batch_size), desc="teacher pool", unit="batch", disable=not progress):
            sample = teacher.sample(min(batch_size, size - start))
            images.append(sample.images.half())  # in [-1, 1], where half precision errs by < 1e-3
            features.append([f.flatten(2).mean(dim=2) if f.dim() > 2 else f for f in sample.features])
        self.images = torch.cat(images)
        self.features = [torch.cat(parts) for parts in zip(*features)]
        self.render_seconds = time.perf_counter() - started

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, n: int, generator: torch.Generator | None = None) -> TeacherSample:
        """``n`` samples drawn uniformly, with replacement, from the pool."""
        index = torch.randint(len(self), (n,), generator=generator or self.latent_generator, device=self.device)
        return TeacherSample(self.images[index].float(), [f[index] for f in self.features])

    @property
    def feature_shapes(self) -> list[tuple[int, ...]]:
        return [tuple(f.shape[1:]) for f in self.features]

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])
