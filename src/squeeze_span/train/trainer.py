"""The one training loop, shared by every method.

It owns what all methods share: devices and DDP, precision, the optimizer and its
schedule, checkpoints and resume, logs, progress and the kNN monitor. It knows a
method only through :mod:`squeeze_span.methods.base`'s interface, and never imports
one: the caller passes the method's class. What the run is made of (data, augmentation,
teacher, backbone) comes from :mod:`squeeze_span.train.builder`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from squeeze_span.config import OptimizerConfig, TrainingConfig
from squeeze_span.data import load_dataset
from squeeze_span.data.stream import RealBatchStream
from squeeze_span.errors import ConfigError, DatasetError
from squeeze_span.eval import extract_features, knn_accuracy
from squeeze_span.methods.base import Method, MethodContext, check_batch_split
from squeeze_span.runtime import autocast, machine_description, resolve_precision
from squeeze_span.train.builder import build_run
from squeeze_span.train.checkpoint import (
    save_checkpoint,
)
from squeeze_span.train.distributed import (
    any_rank,
    init_distributed,
    max_over_ranks,
)
from squeeze_span.train.run import (
    CHANGEABLE_ON_RESUME,
    ResumableRun,
    RunFolder,
    check_finite,
)
from squeeze_span.train.sync_batchnorm import convert_sync_batchnorm

MethodFactory = Callable[[Any, nn.Module, MethodContext], Method]

# The run's length and its monitor may also change on resume: the learning rate is a function of the
# config's length and the step (or the time spent), so it follows the new length.
CHANGEABLE = CHANGEABLE_ON_RESUME + (
    "train.max_steps",
    "train.epochs",
    "train.budget_seconds",
    "train.snapshot_every",
    "train.knn_every",
    "train.knn_train_samples",
    "train.knn_test_samples",
)


@dataclass(frozen=True)
class LearningRateSchedule:
    """The learning rate of a step: linear warm-up over ``warmup_steps``, then cosine decay from ``peak`` to 0.

    A run of ``total_steps`` decays over its steps. A time-budgeted run (``budget_seconds``)
    decays over its budget: the rate is a function of the fraction of the budget spent, so a
    slow start or a slow patch of the machine costs steps, never the shape of the schedule,
    and the rate reaches 0 when the budget ends.
    """

    peak: float
    warmup_steps: int = 0
    total_steps: int | None = None
    budget_seconds: float | None = None

    def __call__(self, step: int, elapsed_seconds: float) -> float:
        if step < self.warmup_steps:
            return self.peak * (step + 1) / self.warmup_steps
        if self.budget_seconds is not None:
            progress = elapsed_seconds / self.budget_seconds
        else:
            progress = (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps)
        return self.peak * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def build_optimizer(method: Method, config: OptimizerConfig, learning_rate: float) -> torch.optim.SGD:
    """SGD over the method's parameter groups; each group records whether it keeps a fixed rate."""
    return torch.optim.SGD(
        [{"params": group.params, "fixed_lr": group.fixed_lr} for group in method.parameter_groups()],
        lr=learning_rate,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def apply_gradients(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    """Backpropagate ``loss`` and take one optimizer step, through the fp16 loss scaler (a no-op when disabled)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


class Trainer(ResumableRun):
    changeable = CHANGEABLE

    def __init__(self, config: TrainingConfig, method_factory: MethodFactory, command: list[str] | None = None):
        self.config = config
        train = config.train
        self.dist = init_distributed(train.device)
        self.device = self.dist.device
        if train.precision == "fp16" and self.device.type != "cuda":
            raise ConfigError("train.precision=fp16 needs a CUDA device; use train.precision=auto or bf16 on CPU")
        self.precision = resolve_precision(train.precision, self.device)  # what 'auto' means on this device
        if self.device.type == "cpu":
            # Weights and activations of a collapsing representation sink into denormal floats,
            # which CPUs process up to 100x slower; flushing them to zero costs no accuracy.
            torch.set_flush_denormal(True)
        torch.manual_seed(train.seed + self.dist.rank)

        data = config.data
        parts = build_run(config, self.device, self.dist.rank)
        self.dataset, self.augmentation, self.teacher = parts.dataset, parts.augmentation, parts.teacher
        self.augment_generator = parts.augment_generator
        self.method = method_factory(config.method, parts.backbone, parts.context).to(self.device)
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
        if train.budget_seconds is not None and train.max_steps is not None:
            raise ConfigError(
                "train.budget_seconds and train.max_steps both set the run's length; set one of them to null"
            )
        self.total_steps = (
            math.inf
            if train.budget_seconds is not None
            else train.max_steps
            if train.max_steps is not None
            else train.epochs * self.steps_per_epoch
        )
        # The rate is set before every step from the config, never restored from a checkpoint: a
        # resumed run follows the config it is resumed with. A method's fixed_lr groups keep the peak.
        self.learning_rate = LearningRateSchedule(
            peak=config.optimizer.base_lr * train.batch_size / 256,
            warmup_steps=config.optimizer.warmup_steps,
            total_steps=None if train.budget_seconds is not None else self.total_steps,
            budget_seconds=train.budget_seconds,
        )
        self.optimizer = build_optimizer(self.method, config.optimizer, self.learning_rate(0, 0.0))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        self.step = 0
        self.elapsed_seconds = 0.0  # training time of the run so far, over all its invocations
        self.clock = time.perf_counter  # a test may slow it down
        self.run = RunFolder(config.output_dir, config, command or sys.argv, self.dist.is_main)
        self.monitor_data = None

    # ------------------------------------------------------------------ building

    def _split_batch(self) -> tuple[int, int]:
        synthetic, real = check_batch_split(self.method, self.config.train.batch_size, self.dist.world_size)
        if real > len(self.dataset):
            raise ConfigError(f"{real} real images per step, but {self.config.data.dataset} has {len(self.dataset)}")
        return synthetic, real

    # ------------------------------------------------------------------ checkpoints

    def lower_rates(self) -> list[str]:
        return [f"optimizer.base_lr={self.config.optimizer.base_lr / 10:g}"]

    def networks(self) -> dict[str, nn.Module]:
        return {"method": self.method}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"optimizer": self.optimizer}

    def random_generators(self) -> dict[str, torch.Generator]:
        generators = {"augmentation": self.augment_generator}
        if self.teacher is not None:
            generators["teacher"] = self.teacher.latent_generator
        return generators

    def extra_state(self) -> dict[str, Any]:
        return {
            "backbone": self.method.backbone.config,  # what load_backbone builds from a checkpoint
            "elapsed_seconds": self.elapsed_seconds,
            "scaler": self.scaler.state_dict(),
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.elapsed_seconds = float(state.get("elapsed_seconds", 0.0))
        if state["scaler"]:  # empty when written without fp16
            self.scaler.load_state_dict(state["scaler"])

    def check_resumable(self, state: dict[str, Any], path: Path) -> None:
        ranks = len(state["rng"])
        if ranks != self.dist.world_size:
            raise ConfigError(
                f"{path} was written by {ranks} processes; resume it with the same number, not {self.dist.world_size}, "
                "or start a new run in another output_dir"
            )

    def save(self, line: dict[str, Any] | None = None) -> None:
        """The checkpoint (see :meth:`ResumableRun.save`), kept also as a snapshot every ``train.snapshot_every``."""
        state = super().save(line)
        every = self.config.train.snapshot_every
        if state is not None and every and self.step % every == 0:
            save_checkpoint(state, self.checkpoint_dir / f"step_{self.step:07d}.pt")

    # ------------------------------------------------------------------ monitoring

    def log_record(self, logs: dict[str, torch.Tensor], images_per_s: float) -> dict[str, Any]:
        """This step's line of metrics.jsonl: where the run is, its next learning rate, speed and every loss."""
        return {
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "seconds": self.elapsed_seconds,
            "lr": self.learning_rate(self.step, self.elapsed_seconds),  # the next step's
            "images_per_s": images_per_s,
            **{name: value.item() for name, value in logs.items()},
        }

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
            precision=self.precision,
            progress=False,
        )
        bank_x, bank_y = extract_features(self.method.backbone, bank, **view)
        test_x, test_y = extract_features(self.method.backbone, test, **view)
        labeled = bank_y >= 0
        accuracy = knn_accuracy(bank_x[labeled], bank_y[labeled], test_x, test_y, num_classes)
        return {f"knn/{name}": value for name, value in accuracy.items()}

    # ------------------------------------------------------------------ the loop

    def finished(self) -> bool:
        """Whether the run has trained its steps, or spent its time budget."""
        budget = self.config.train.budget_seconds
        return self.step >= self.total_steps or (budget is not None and self.elapsed_seconds >= budget)

    def fit(self) -> dict[str, Any]:
        """Train to ``total_steps`` or to the end of ``train.budget_seconds``, or for ``train.max_seconds``
        (resuming if asked); return the final metrics.

        A run that is already complete is left as it is: the record says ``already_complete``.
        """
        train = self.config.train
        changes, line = self.resume()
        if self.finished():
            return {"step": self.step, "already_complete": True}
        main = self.dist.is_main
        self.run.open(self.step, changes, line, start_over=self.config.overwrite and self.step == 0)
        budgeted = train.budget_seconds is not None
        # The folder tells runs of one method apart (the demo's VICReg is squeeze_span at alpha 0).
        desc = f"train {self.config.method.name}, {self.precision} ({self.config.output_dir})"
        if budgeted:
            bar = self.run.progress(round(train.budget_seconds), round(self.elapsed_seconds), desc, train.progress, "s")
        else:
            bar = self.run.progress(self.total_steps, self.step, desc, train.progress)
        self.model.train()
        local_synthetic = self.synthetic // self.dist.world_size
        started = last_time = self.clock()
        # A teacher pool is rendered anew by every invocation; a time budget pays for it.
        elapsed_before = self.elapsed_seconds + getattr(self.teacher, "render_seconds", 0.0)
        last_step = self.step
        record: dict[str, Any] = {}
        try:
            while not self.finished():
                rate = self.learning_rate(self.step, self.elapsed_seconds)
                for group in self.optimizer.param_groups:
                    group["lr"] = self.learning_rate.peak if group["fixed_lr"] else rate
                real = self.stream.next(self.real)
                with autocast(self.device, self.precision):
                    logs = self.model(real, local_synthetic)
                check_finite(logs, self.step + 1, self.advice)
                apply_gradients(logs["loss"], self.optimizer, self.scaler)
                self.step += 1
                invocation_seconds = self.clock() - started
                # Ranks agree on how much of a budget is spent (the slowest rank's count), so that they
                # take the same learning rate and stop at the same step.
                elapsed = elapsed_before + invocation_seconds
                self.elapsed_seconds = max_over_ranks(elapsed) if budgeted else elapsed
                out_of_time = bool(train.max_seconds) and any_rank(invocation_seconds >= train.max_seconds)
                last = self.finished() or out_of_time

                log_now = self.step % train.log_every == 0 or last
                knn_now = (train.knn_every and self.step % train.knn_every == 0) or last
                if log_now or knn_now:
                    record = self.log_record(
                        logs, images_per_s=(self.step - last_step) * train.batch_size / (self.clock() - last_time)
                    )
                # The checkpoint comes before the kNN monitor, so that a monitor that fails loses no steps;
                # it holds this step's log line, which a resume writes if a kill comes before the line.
                if self.step % train.checkpoint_every == 0 or last:
                    self.save(record if log_now or knn_now else None)
                if log_now or knn_now:
                    if knn_now and main:
                        record.update(self.knn_monitor() or {})
                    last_time, last_step = self.clock(), self.step
                    self.run.log(record)
                    if main:
                        bar.set_postfix(
                            {"step": self.step} if budgeted else None,  # first: the bar itself counts seconds
                            loss=f"{record['loss']:.3f}",
                            img_s=f"{record['images_per_s']:.0f}",
                            refresh=False,
                        )
                bar.update(min(round(self.elapsed_seconds), bar.total) - bar.n if budgeted else 1)
                if out_of_time:
                    break
        finally:
            bar.close()
            self.run.close()
        if main:
            record["machine"] = machine_description(self.device)
            record["precision"] = self.precision
        return record


def _subset(dataset, count: int, seed: int):
    """A fixed random subset of ``count`` images (all of them when count is 0 or larger than the set)."""
    if not count or count >= len(dataset):
        return dataset
    return dataset.subset(
        torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    )
