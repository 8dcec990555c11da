"""The one training loop, shared by every method.

It owns what all methods share: devices and DDP, precision, the optimizer and its
schedule, checkpoints and resume, logs, progress and the kNN monitor. It knows a
method only through :mod:`squeeze_span.methods.base`'s interface, and never imports
one: the caller passes the method's class.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from squeeze_span.config import TrainingConfig, to_dict
from squeeze_span.data import augmentation_for, load_dataset
from squeeze_span.data.augment import DEFAULT_SIZES
from squeeze_span.data.stream import RealBatchStream
from squeeze_span.errors import ConfigError, DatasetError
from squeeze_span.eval import extract_features, knn_accuracy
from squeeze_span.generators import Teacher, TeacherPool, load_generator
from squeeze_span.methods.base import Method, MethodContext
from squeeze_span.models import build_backbone
from squeeze_span.runtime import PRECISIONS, autocast, machine_description
from squeeze_span.train.checkpoint import (
    capture_rng,
    load_checkpoint,
    load_optimizer_state,
    restore_rng,
    save_checkpoint,
)
from squeeze_span.train.distributed import (
    all_gather_objects,
    any_rank,
    barrier,
    gather_with_grad,
    init_distributed,
)
from squeeze_span.train.run import (
    CHANGEABLE_ON_RESUME,
    RunFolder,
    check_finite,
    check_finite_weights,
    resume_changes,
    resume_path,
)
from squeeze_span.train.sync_batchnorm import convert_sync_batchnorm

MethodFactory = Callable[[Any, nn.Module, MethodContext], Method]

# The run's length and its monitor may also change on resume; the schedule is rebuilt for the new length.
CHANGEABLE = CHANGEABLE_ON_RESUME + (
    "train.max_steps",
    "train.epochs",
    "train.snapshot_every",
    "train.knn_every",
    "train.knn_train_samples",
    "train.knn_test_samples",
)
DIVERGED_FIX = "Lower optimizer.base_lr, or try train.precision=fp32"


def cosine_schedule(total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """The learning-rate factor at a step: linear warm-up, then cosine decay to 0 over the rest."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


class Trainer:
    def __init__(self, config: TrainingConfig, method_factory: MethodFactory, command: list[str] | None = None):
        self.config = config
        train = config.train
        if train.precision not in PRECISIONS:
            raise ConfigError(f"train.precision={train.precision!r} is unknown; use one of {', '.join(PRECISIONS)}")
        self.dist = init_distributed(train.device)
        self.device = self.dist.device
        if train.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.precision=fp16 needs a CUDA device; use train.precision=bf16 on CPU")
        if self.device.type == "cpu":
            # Weights and activations of a collapsing representation sink into denormal floats,
            # which CPUs process up to 100x slower; flushing them to zero costs no accuracy.
            torch.set_flush_denormal(True)
        torch.manual_seed(train.seed + self.dist.rank)

        data = config.data
        self.dataset = load_dataset(data.dataset, data.root, data.split)
        size = data.image_size or DEFAULT_SIZES.get(data.dataset) or self.dataset.image_size[0]
        self.augmentation = augmentation_for(data.dataset, size)
        self.augment_generator = torch.Generator(self.device).manual_seed(train.seed * 7919 + self.dist.rank)

        self.teacher = self._build_teacher()
        backbone = build_backbone(
            config.model.backbone,
            in_channels=self.dataset.num_channels,
            width=config.model.width,
            zero_init_residual=config.model.zero_init_residual,
        ).to(memory_format=torch.channels_last)
        context = MethodContext(
            device=self.device,
            image_channels=self.dataset.num_channels,
            num_classes=len(self.dataset.classes),
            augmentation=self.augmentation,
            generator=self.augment_generator,
            model=config.model,
            teacher=self.teacher,
            gather=gather_with_grad,
        )
        self.method = method_factory(config.method, backbone, context).to(self.device)
        self.synthetic, self.real = self._split_batch()
        self.model: nn.Module = self.method
        if self.dist.world_size > 1:
            self.method = convert_sync_batchnorm(self.method, self.device)
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.method, device_ids=device_ids)

        self.stream = RealBatchStream(
            self.dataset,
            self.device,
            seed=train.seed,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            on_device=data.on_device,
        )
        self.steps_per_epoch = max(1, len(self.dataset) // train.batch_size)
        self.total_steps = train.max_steps or train.epochs * self.steps_per_epoch
        lr = config.optimizer.base_lr * train.batch_size / 256
        self.optimizer = torch.optim.SGD(
            self.method.parameters(),
            lr=lr,
            momentum=config.optimizer.momentum,
            weight_decay=config.optimizer.weight_decay,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, cosine_schedule(self.total_steps, config.optimizer.warmup_steps)
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=train.precision == "fp16")
        self.step = 0
        self.run = RunFolder(config.output_dir, config, command or sys.argv, self.dist.is_main)
        self.checkpoint_dir = self.run.checkpoints
        self.monitor_data = None

    # ------------------------------------------------------------------ building

    def _build_teacher(self) -> Teacher | TeacherPool | None:
        teacher = self.config.teacher
        if teacher.path is None:
            return None
        renderer = Teacher(
            load_generator(teacher.path),
            teacher.features,
            device=self.device,
            precision=self.config.train.precision,
            truncation_psi=teacher.truncation_psi,
            noise_mode=teacher.noise_mode,
            seed=self.config.train.seed * 104729 + self.dist.rank,  # each rank draws its own latents
        )
        if teacher.pool_size:
            return TeacherPool(renderer, teacher.pool_size, progress=self.config.train.progress and self.dist.is_main)
        return renderer

    def _split_batch(self) -> tuple[int, int]:
        batch, world = self.config.train.batch_size, self.dist.world_size
        synthetic, real = self.method.split(batch)
        if synthetic % world or real % world:
            raise ConfigError(
                f"train.batch_size={batch} splits into {synthetic} synthetic and {real} real images, which "
                f"{world} processes cannot share evenly; pick a batch size whose parts divide by {world}"
            )
        if real > len(self.dataset):
            raise ConfigError(f"{real} real images per step, but {self.config.data.dataset} has {len(self.dataset)}")
        return synthetic, real

    def _generators(self) -> dict[str, torch.Generator]:
        generators = {"augmentation": self.augment_generator}
        if self.teacher is not None:
            generators["teacher"] = self.teacher.latent_generator
        return generators

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": to_dict(self.config),
            "method": self.method.state_dict(),
            "backbone": self.method.backbone.config,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "stream": self.stream.state_dict(),
            "rng": all_gather_objects(capture_rng(self._generators())),
        }

    def save(self, line: dict[str, Any] | None = None) -> None:
        """Checkpoint this step with its log line (None if it logs none), which a resume writes if a kill
        came between the checkpoint and the line."""
        check_finite_weights({"method": self.method}, self.step, self.run, DIVERGED_FIX)
        state = {**self.state_dict(), "log": line}  # every rank joins the RNG gather
        if self.dist.is_main:
            save_checkpoint(state, self.checkpoint_dir / "last.pt")
            every = self.config.train.snapshot_every
            if every and self.step % every == 0:
                save_checkpoint(state, self.checkpoint_dir / f"step_{self.step:07d}.pt")
        barrier()

    def resume(self) -> tuple[list[str], dict[str, Any] | None]:
        """Continue from the checkpoint ``resume`` names, if any; return the settings this config changes
        and the checkpoint's log line."""
        path = resume_path(self.config.resume, self.checkpoint_dir)
        if path is None:
            return [], None
        state = load_checkpoint(path, map_location=self.device)
        ranks = len(state["rng"])
        if ranks != self.dist.world_size:
            raise ConfigError(
                f"{path} was written by {ranks} processes; resume it with the same number, not {self.dist.world_size}, "
                "or start a new run in another output_dir"
            )
        changes = resume_changes(state["config"], self.config, CHANGEABLE, path)
        try:
            self.method.load_state_dict(state["method"])
        except RuntimeError as error:
            raise ConfigError(
                f"{path} does not fit this config's model ({str(error).splitlines()[0]}); "
                f"resume with the config in {path.parent.parent / 'config.yaml'}"
            ) from None
        load_optimizer_state(self.optimizer, state["optimizer"])
        if state["scaler"]:  # empty when written without fp16
            self.scaler.load_state_dict(state["scaler"])
        self.stream.load_state_dict(state["stream"])
        restore_rng(state["rng"][self.dist.rank], self._generators())
        self.step = int(state["step"])
        # The schedule of this config (its learning rate and length), at the checkpoint's step.
        schedule = self.scheduler.lr_lambdas[0]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule, last_epoch=self.step - 1)
        return changes, state.get("log")

    # ------------------------------------------------------------------ monitoring

    def knn_monitor(self) -> dict[str, float] | None:
        """Weighted kNN accuracy of the backbone on (a fixed subset of) the labeled test split."""
        train = self.config.train
        if self.monitor_data is None:
            try:
                bank = load_dataset(self.config.data.dataset, self.config.data.root, "train")
                test = load_dataset(self.config.data.dataset, self.config.data.root, "test")
            except DatasetError as error:
                self.monitor_data = False
                tqdm.write(f"kNN monitor off: {error}")
                return None
            self.monitor_data = (
                _subset(bank, train.knn_train_samples, 1),
                _subset(test, train.knn_test_samples, 2),
                len(bank.classes),
            )
        if self.monitor_data is False:
            return None
        bank, test, num_classes = self.monitor_data
        mean, std = self.augmentation.mean, self.augmentation.std
        view = dict(
            size=self.augmentation.size,
            mean=mean,
            std=std,
            device=self.device,
            precision=train.precision,
            progress=False,
        )
        bank_x, bank_y = extract_features(self.method.backbone, bank, **view)
        test_x, test_y = extract_features(self.method.backbone, test, **view)
        labeled = bank_y >= 0
        accuracy = knn_accuracy(bank_x[labeled], bank_y[labeled], test_x, test_y, num_classes)
        return {f"knn/{name}": value for name, value in accuracy.items()}

    # ------------------------------------------------------------------ the loop

    def fit(self) -> dict[str, Any]:
        """Train to ``total_steps``, or for ``train.max_seconds`` (resuming if asked); return the final metrics.

        A run that is already complete is left as it is: the record says ``already_complete``.
        """
        train = self.config.train
        changes, line = self.resume()
        if self.step >= self.total_steps:
            return {"step": self.step, "already_complete": True}
        main = self.dist.is_main
        self.run.open(self.step, changes, line)
        bar = self.run.progress(self.total_steps, self.step, f"train {self.config.method.name}", train.progress)
        self.model.train()
        local_synthetic = self.synthetic // self.dist.world_size
        started = last_time = time.perf_counter()
        last_step = self.step
        record: dict[str, Any] = {}
        try:
            while self.step < self.total_steps:
                real = self.stream.next(self.real)
                with autocast(self.device, train.precision):
                    logs = self.model(real, local_synthetic)
                check_finite(logs, self.step + 1, self.run, DIVERGED_FIX)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(logs["loss"]).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                self.step += 1
                out_of_time = bool(train.max_seconds) and any_rank(time.perf_counter() - started >= train.max_seconds)
                last = self.step == self.total_steps or out_of_time

                log_now = self.step % train.log_every == 0 or last
                knn_now = (train.knn_every and self.step % train.knn_every == 0) or last
                if log_now or knn_now:
                    now = time.perf_counter()
                    record = {
                        "step": self.step,
                        "epoch": self.step / self.steps_per_epoch,
                        "lr": self.scheduler.get_last_lr()[0],
                        "images_per_s": (self.step - last_step) * train.batch_size / (now - last_time),
                    }
                    record.update({name: value.item() for name, value in logs.items()})
                # The checkpoint comes before the kNN monitor, so that a monitor that fails loses no steps;
                # it holds this step's log line, which a resume writes if a kill comes before the line.
                if self.step % train.checkpoint_every == 0 or last:
                    self.save(record if log_now or knn_now else None)
                if log_now or knn_now:
                    if knn_now and main:
                        record.update(self.knn_monitor() or {})
                    last_time, last_step = time.perf_counter(), self.step
                    self.run.log(record)
                    if main:
                        bar.set_postfix(
                            loss=f"{record['loss']:.3f}", img_s=f"{record['images_per_s']:.0f}", refresh=False
                        )
                bar.update()
                if out_of_time:
                    break
        finally:
            bar.close()
            self.run.close()
        if main:
            record["machine"] = machine_description(self.device)
        return record


def _subset(dataset, count: int, seed: int):
    """A fixed random subset of ``count`` images (all of them when count is 0 or larger than the set)."""
    if not count or count >= len(dataset):
        return dataset
    return dataset.subset(
        torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    )
