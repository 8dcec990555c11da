"""Training our StyleGAN2 on one of our datasets: ``squeeze-span train-gan CONFIG.yaml``.

The recipe is StyleGAN2's (Karras et al., CVPR 2020) as configured by StyleGAN2-ADA for
CIFAR-10, written from the papers:

- losses: the non-saturating logistic loss for G and D, and R1 on the reals
  (``squeeze_span.losses``), with lazy regularization: every ``r1_interval`` (16) D steps,
  one extra D step on (gamma / 2) * R1 * r1_interval alone. As in StyleGAN2 (appendix C),
  D's Adam then takes lr * c and betas ** c with c = interval / (interval + 1), so that the
  regularized optimizer moves as the unregularized one would. G has no regularizer here
  (the cifar recipe switches path-length regularization and style mixing off), so its
  Adam keeps lr and betas as given;
- Adam for both (lr 0.0025, betas (0, 0.99), eps 1e-8); the mapping network's 0.01
  learning-rate multiplier lives inside the network;
- G_ema, a moving average of G's weights with half-life ``ema_kimg`` thousand images,
  capped at ``ema_rampup`` times the images seen so far (G's buffers are copied);
- optional DiffAugment (``squeeze_span.data.diffaugment``) before every D call.

One step, for a batch of B real images: G renders B fakes (random noise, as StyleGAN2);
D takes a step on the logistic loss of those fakes (detached) and the reals; every
``r1_interval`` steps D takes its R1 step; then G takes a step through the updated D on
the same fakes, with D's weights frozen so that only G's gradients are computed. Reusing
the fakes (the order of PyTorch's DCGAN example) spares the second generator pass that
StyleGAN2-ADA's code runs for D. Throughput is counted in real images: B per step.

Real images are uint8 in [0, 255], mapped to [-1, 1]; images smaller than the generator's
resolution (Fashion-MNIST's 28x28 in a 32x32 generator) are zero-padded in the centre, so the
border is -1 (black), the colour of Fashion-MNIST's own background.

Single process only (a ConfigError under torchrun); CPU or one GPU. bf16 autocast with
channels_last runs the convolutions 3-4x faster on AMX CPUs; the R1 pass runs in float32 by
default (``loss.r1_precision``).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import torch

from squeeze_span.config import GanTrainingConfig
from squeeze_span.data import gan_view, load_dataset
from squeeze_span.data.diffaugment import DiffAugment
from squeeze_span.data.stream import RealBatchStream
from squeeze_span.errors import ConfigError
from squeeze_span.eval.plots import save_image_grid
from squeeze_span.generators import save_network
from squeeze_span.generators.loading import init_kwargs_problem
from squeeze_span.generators.stylegan2 import Discriminator, Generator
from squeeze_span.losses import discriminator_logistic_loss, generator_logistic_loss, r1_penalty
from squeeze_span.runtime import autocast, full_precision, machine_description, resolve_device, resolve_precision
from squeeze_span.train.run import CHANGEABLE_ON_RESUME, ResumableRun, RunFolder, check_finite

# The losses' weights, the run's length and its snapshots may also change on resume (a diverging
# GAN is resumed with a larger r1_gamma); the optimizers take the config's hyperparameters.
CHANGEABLE = CHANGEABLE_ON_RESUME + ("loss", "train.total_kimg", "train.snapshot_kimg", "train.grid_size")


def gan_resolution(image_size: tuple[int, int], resolution: int | None) -> int:
    """The generator's resolution: ``resolution``, or the next power of two >= the larger image side."""
    side = max(image_size)
    if resolution is None:
        return max(4, 2 ** math.ceil(math.log2(side)))
    if resolution < side:
        raise ConfigError(
            f"data.resolution={resolution} is smaller than the {side}px images; "
            f"use {2 ** math.ceil(math.log2(side))} or null"
        )
    return resolution


def real_images_for_gan(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 ``[N, C, H, W]`` to float32 in [-1, 1], zero-padded (to -1) in the centre to ``resolution``."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"real images must be uint8 [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
    return gan_view(images, images.shape[1], resolution)


def snapshot_name(nimg: int) -> str:
    """``network-snapshot-KIMG`` (NVIDIA's name) at whole thousands of images, ``network-snapshot-KIMG.FFF``
    between them: one name per image count, so that snapshots never overwrite each other."""
    kimg, rest = divmod(nimg, 1000)
    return f"network-snapshot-{kimg:06d}" + (f".{rest:03d}" if rest else "")


def ema_beta(batch_size: int, nimg: int, ema_kimg: float, rampup: float | None) -> float:
    """G_ema's decay per step: 0.5 ** (batch / ema_nimg), ema_nimg = min(ema_kimg * 1000, nimg * rampup)."""
    ema_nimg = ema_kimg * 1000
    if rampup is not None:
        ema_nimg = min(ema_nimg, nimg * rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


def build_configured(section: str, network: type[torch.nn.Module], **init_kwargs: Any) -> torch.nn.Module:
    """``network(**init_kwargs)`` from the config section ``section``: a bad value or an unknown key
    in its nested kwargs (``synthesis_kwargs``, ``epilogue_kwargs``, ...) is one ConfigError."""
    problem = init_kwargs_problem(init_kwargs, f"{section}.")
    if problem:
        raise ConfigError(f"{problem}; fix it in the config or on the command line")
    try:
        return network(**init_kwargs)
    except TypeError as error:
        # The kwargs dicts are passed down through several layer classes, so the unknown key is
        # found where a constructor refuses it, not from one signature.
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(error))
        if unknown is None:
            raise
        raise ConfigError(
            f"{section}: {unknown[1]!r} is not a setting of the {network.__name__} or its layers; remove or rename it"
        ) from None


def build_gan(config: GanTrainingConfig, resolution: int, channels: int) -> tuple[Generator, Discriminator]:
    """G and D as the config describes them, for images of ``resolution`` and ``channels``."""
    generator, disc, batch = config.generator, config.discriminator, config.train.batch_size
    G = build_configured(
        "generator",
        Generator,
        z_dim=generator.z_dim,
        c_dim=0,
        w_dim=generator.w_dim,
        img_resolution=resolution,
        img_channels=channels,
        mapping_kwargs=dict(generator.mapping_kwargs),
        synthesis_kwargs=dict(generator.synthesis_kwargs),
    )
    D = build_configured(
        "discriminator",
        Discriminator,
        c_dim=0,
        img_resolution=resolution,
        img_channels=channels,
        architecture=disc.architecture,
        channel_base=disc.channel_base,
        channel_max=disc.channel_max,
        conv_clamp=disc.conv_clamp,
        block_kwargs=dict(disc.block_kwargs),
        epilogue_kwargs=dict(disc.epilogue_kwargs),
    )
    group = disc.epilogue_kwargs.get("mbstd_group_size", 4)
    if group and batch % min(group, batch):
        raise ConfigError(f"train.batch_size={batch} must be a multiple of the minibatch-stddev group {group}")
    return G, D


def build_gan_optimizers(
    config: GanTrainingConfig, G: Generator, D: Discriminator, device: torch.device
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for G, and for D with lazy regularization's correction (StyleGAN2, appendix C)."""
    optimizer, interval = config.optimizer, config.loss.r1_interval
    c = interval / (interval + 1) if interval > 1 else 1.0
    fused = {"fused": True} if device.type in ("cpu", "cuda") else {}
    betas = (optimizer.beta1, optimizer.beta2)
    G_opt = torch.optim.Adam(G.parameters(), lr=optimizer.g_lr, betas=betas, eps=optimizer.eps, **fused)
    D_opt = torch.optim.Adam(
        D.parameters(), lr=optimizer.d_lr * c, betas=(betas[0] ** c, betas[1] ** c), eps=optimizer.eps, **fused
    )
    return G_opt, D_opt


class GanTrainer(ResumableRun):
    changeable = CHANGEABLE
    command_name = "train-gan"

    def __init__(self, config: GanTrainingConfig, command: list[str] | None = None) -> None:
        self.config = config
        train = config.train
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("train-gan runs in a single process; start it with python or squeeze-span, not torchrun")
        self.device = resolve_device(train.device)
        if train.precision == "fp16":
            raise ConfigError(
                "train-gan supports fp32 and bf16 (fp16 would need loss scaling); use train.precision=bf16"
            )
        if self.device.type == "cpu":
            # Denormal floats are up to 100x slower on CPUs; flushing them costs no accuracy here.
            torch.set_flush_denormal(True)
        torch.manual_seed(train.seed)

        data = config.data
        self.dataset = load_dataset(data.dataset, data.root, data.split)
        if train.batch_size > len(self.dataset):
            raise ConfigError(
                f"train.batch_size={train.batch_size} is larger than {data.dataset} ({len(self.dataset)} images)"
            )
        self.resolution = gan_resolution(self.dataset.image_size, data.resolution)
        self.G, self.D = build_gan(config, self.resolution, self.dataset.num_channels)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        for network in (self.G, self.D, self.G_ema):
            network.to(self.device, memory_format=torch.channels_last)
        self.G.train()
        self.D.train()
        self.G_opt, self.D_opt = build_gan_optimizers(config, self.G, self.D, self.device)
        self.augment = DiffAugment(config.augment.diffaugment, config.augment.translation, config.augment.cutout)

        self.stream = RealBatchStream(self.dataset, self.device, seed=train.seed, on_device=data.on_device)
        self.latent_generator = torch.Generator(self.device).manual_seed(train.seed * 104729 + 1)
        self.augment_generator = torch.Generator(self.device).manual_seed(train.seed * 7919 + 2)
        # Fixed latents for the snapshot grids, drawn apart from every training stream.
        grid = torch.Generator().manual_seed(train.seed * 15485863 + 3)
        self.grid_z = torch.randn(train.grid_size, config.generator.z_dim, generator=grid).to(self.device)

        self.step = 0
        self.nimg = 0
        self.total_nimg = round(train.total_kimg * 1000)
        self.run = RunFolder(config.output_dir, config, command or sys.argv)
        self.snapshot_dir = self.run.path / "snapshots"
        self._r1 = torch.zeros((), device=self.device)

    # ------------------------------------------------------------------ one step

    def random_generators(self) -> dict[str, torch.Generator]:
        return {"latent": self.latent_generator, "augmentation": self.augment_generator}

    def _D(self, images: torch.Tensor) -> torch.Tensor:
        return self.D(self.augment(images, self.augment_generator), None)

    def train_step(self) -> dict[str, torch.Tensor]:
        """One D step (plus the R1 step every r1_interval steps) and one G step on a batch; returns the losses."""
        config, train = self.config, self.config.train
        batch = train.batch_size
        real = real_images_for_gan(self.stream.next(batch).images, self.resolution).contiguous(
            memory_format=torch.channels_last
        )
        z = torch.randn(batch, self.G.z_dim, generator=self.latent_generator, device=self.device)

        with autocast(self.device, train.precision):
            fake = self.G(z, None, noise_mode=config.generator.noise_mode)

        self.D.requires_grad_(True)
        with autocast(self.device, train.precision):
            fake_logits = self._D(fake.detach())
            real_logits = self._D(real)
        loss_D = discriminator_logistic_loss(real_logits, fake_logits)
        self.D_opt.zero_grad(set_to_none=True)
        loss_D.backward()
        self.D_opt.step()

        interval = config.loss.r1_interval
        if config.loss.r1_gamma > 0 and self.step % interval == 0:
            self._r1 = self.r1_step(real).detach()

        self.D.requires_grad_(False)
        with autocast(self.device, train.precision):
            loss_G = generator_logistic_loss(self._D(fake))
        self.G_opt.zero_grad(set_to_none=True)
        loss_G.backward()
        self.G_opt.step()

        self.update_ema()
        self.step += 1
        self.nimg += batch
        return {
            "loss": loss_G.detach() + loss_D.detach(),
            "loss/G": loss_G.detach(),
            "loss/D": loss_D.detach(),
            "loss/r1": self._r1,
            "logits/real": real_logits.detach().float().mean(),
            "logits/fake": fake_logits.detach().float().mean(),
        }

    def r1_step(self, real: torch.Tensor) -> torch.Tensor:
        """D's lazy R1 step: (gamma / 2) * R1 * interval; returns R1."""
        loss = self.config.loss
        real = real.detach().requires_grad_(True)
        precision = (
            full_precision(self.device)
            if loss.r1_precision == "fp32"
            else autocast(self.device, self.config.train.precision)
        )
        with precision:
            penalty = r1_penalty(self._D(real), real)
        self.D_opt.zero_grad(set_to_none=True)
        (penalty * (loss.r1_gamma / 2 * loss.r1_interval)).backward()
        self.D_opt.step()
        return penalty

    @torch.no_grad()
    def update_ema(self) -> None:
        loss = self.config.loss
        beta = ema_beta(self.config.train.batch_size, self.nimg, loss.ema_kimg, loss.ema_rampup)
        ema_params, params = list(self.G_ema.parameters()), list(self.G.parameters())
        torch._foreach_lerp_(ema_params, params, 1.0 - beta)  # ema = beta * ema + (1 - beta) * p
        for ema_buffer, buffer in zip(self.G_ema.buffers(), self.G.buffers()):
            ema_buffer.copy_(buffer)

    # ------------------------------------------------------------------ checkpoints and snapshots

    def lower_rates(self) -> list[str]:
        optimizer = self.config.optimizer  # a diverging GAN may also want a larger loss.r1_gamma
        return [f"optimizer.g_lr={optimizer.g_lr / 10:g}", f"optimizer.d_lr={optimizer.d_lr / 10:g}"]

    def networks(self) -> dict[str, torch.nn.Module]:
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"G_opt": self.G_opt, "D_opt": self.D_opt}

    def extra_state(self) -> dict[str, Any]:
        return {"nimg": self.nimg, "r1": self._r1}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.nimg = int(state["nimg"])
        self._r1 = state["r1"].to(self.device)

    def snapshot(self) -> Path:
        """``snapshots/<snapshot_name>/``: G_ema, G and D in our safe format, and a grid of G_ema's samples."""
        folder = self.snapshot_dir / snapshot_name(self.nimg)
        for name in ("G_ema", "G", "D"):
            save_network(getattr(self, name), folder, name)
        with torch.no_grad(), autocast(self.device, self.config.train.precision):
            images = torch.cat([self.G_ema(z, None, noise_mode="const") for z in self.grid_z.split(64)])
        save_image_grid(images.float().clamp(-1, 1), folder / "samples.png")
        info = {"step": self.step, "nimg": self.nimg, "kimg": self.nimg / 1000}
        (folder / "snapshot.json").write_text(json.dumps(info) + "\n")
        return folder

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, Any]:
        """Train to ``total_kimg`` or for ``max_seconds`` (resuming if asked); return the last logged record.

        A run that is already complete is left as it is: the record says ``already_complete``.
        """
        train = self.config.train
        start = time.perf_counter()
        changes, _ = self.resume()
        if self.nimg >= self.total_nimg:
            return {"step": self.step, "kimg": self.nimg / 1000, "already_complete": True}
        self.run.open(self.step, changes, start_over=self.config.overwrite and self.step == 0)
        total_steps = math.ceil(self.total_nimg / train.batch_size)
        bar = self.run.progress(total_steps, self.step, "train-gan", train.progress)
        snapshot_nimg = max(1, round(train.snapshot_kimg * 1000))
        last_time, last_nimg = time.perf_counter(), self.nimg
        record: dict[str, Any] = {"step": self.step, "kimg": self.nimg / 1000}
        try:
            while self.nimg < self.total_nimg:
                before = self.nimg
                logs = self.train_step()
                done = self.nimg >= self.total_nimg
                out_of_time = train.max_seconds is not None and time.perf_counter() - start >= train.max_seconds
                snapshot_now = self.nimg // snapshot_nimg > before // snapshot_nimg or done or out_of_time
                save_now = self.step % train.checkpoint_every == 0 or snapshot_now
                log_now = self.step % train.log_every == 0 or save_now
                if self.device.type == "cpu" or log_now:  # a free check on CPU; a sync on GPUs
                    check_finite(logs, self.step, self.advice)
                if log_now:
                    now = time.perf_counter()
                    record = {
                        "step": self.step,
                        "kimg": self.nimg / 1000,
                        "images_per_s": (self.nimg - last_nimg) / (now - last_time),
                        "seconds": now - start,
                    }
                    record.update({name: value.item() for name, value in logs.items()})
                    self.run.log(record)
                    bar.set_postfix(
                        G=f"{record['loss/G']:.3f}",
                        D=f"{record['loss/D']:.3f}",
                        img_s=f"{record['images_per_s']:.0f}",
                        kimg=f"{record['kimg']:.1f}",
                        refresh=False,
                    )
                bar.update()
                if snapshot_now:
                    self.snapshot()
                if save_now:
                    self.save()
                if log_now:
                    last_time, last_nimg = time.perf_counter(), self.nimg
                if out_of_time:
                    break
        finally:
            bar.close()
            self.run.close()
        record["machine"] = machine_description(self.device)
        record["precision"] = resolve_precision(self.config.train.precision, self.device)
        record["finished"] = self.nimg >= self.total_nimg
        return record
