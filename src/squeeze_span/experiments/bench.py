"""`squeeze-span bench`: what a Squeeze and Span step costs beside VICReg's, measured in one process.

Six cases at one batch B and precision, on the embedded default's student
(configs/fashion_mnist/squeeze_span.yaml: ResNet-18 CIFAR stem, width 16, projector 512):

- ``student``: the bare student step, forward and backward of backbone and projector on B
  views and an SGD update: what any method pays at least;
- ``vicreg``: VICReg on B real images (squeeze_span with alpha = 0: two views of each);
- ``step``: squeeze and span, the teacher rendering B_s = alpha B images at every step;
- ``pool_step``: the same, drawing from a :class:`TeacherPool` of the teacher's samples;
- ``teacher``: the teacher alone, B_s images with their features;
- ``augment``: the batched augmentation alone, one view of each of B real images.

Beside them, the student step's arithmetic rate: its FLOPs (convolutions and matmuls, forward
and backward, counted by torch's FlopCounterMode) times its images/s, as a share of the
machine's matmul peak (a 2048-cube matmul, measured here in fp32 and in the bench's precision,
whichever is faster).

The training cases run the trainer's own step (its optimizer, autocast and loss scaler).
The cases take turns, so that load from other processes on a shared machine falls on every
case alike; each reports the median images/s of its timed steps, after a warm-up.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from squeeze_span.assets import FASHION_MNIST_TEACHER
from squeeze_span.config import TrainingConfig
from squeeze_span.data import ImageDataset, dataset_info, load_dataset
from squeeze_span.data.stream import RealBatchStream
from squeeze_span.errors import ConfigError, DatasetError
from squeeze_span.generators import SampleSource, TeacherPool, load_generator
from squeeze_span.generators.stylegan2 import CIFAR10_G_KWARGS, Generator
from squeeze_span.methods import DEFAULT_CONFIG, load_training_config
from squeeze_span.methods.squeeze_span import SqueezeSpan
from squeeze_span.runtime import autocast, machine_info, resolve_device, resolve_precision
from squeeze_span.train.builder import assemble_run, build_teacher
from squeeze_span.train.trainer import apply_gradients, build_optimizer

CASES = {
    "student": "bare student step",
    "vicreg": "VICReg on real images (alpha 0)",
    "step": "squeeze and span, teacher each step",
    "pool_step": "squeeze and span, teacher pool",
    "teacher": "teacher alone (images + features)",
    "augment": "augmentation alone (one view each)",
}
TEACHERS = ("shipped", "cifar10-config")  # or the path of a MODEL
CIFAR10_CONFIG_TEACHER = "random StyleGAN2 of the paper's CIFAR-10 config (32x32 RGB, 512 channels, 2 mapping layers)"


@dataclass(frozen=True)
class BenchSettings:
    teacher: str = "shipped"  # shipped, cifar10-config, or a MODEL that load_generator reads
    batch: int = 256
    precision: str = "auto"  # bf16 where the hardware computes it, else fp32
    device: str = "auto"
    steps: int = 10  # timed steps of each case
    warmup: int = 2  # untimed steps of each case first: kernel selection, allocator growth
    overrides: tuple[str, ...] = ()  # key=value for the student's config, e.g. model.width=64


def interleave(
    cases: Mapping[str, Callable[[], object]],
    steps: int,
    warmup: int,
    synchronize: Callable[[], None] = lambda: None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds of each of ``steps`` calls of every case, after ``warmup`` untimed calls of each.

    The cases take turns, one call each per round, and round r starts at the (r mod n)-th
    case, so that no case always runs right after the same other one (a case that leaves
    the caches cold, or the allocator fragmented). ``synchronize`` waits for queued device
    work, before and after each call.
    """
    names = list(cases)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(warmup + steps):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize()
            start = clock()
            cases[name]()
            synchronize()
            if round_index >= warmup:
                seconds[name].append(clock() - start)
    return seconds


def synchronizer(device: torch.device) -> Callable[[], None]:
    """What waits for ``device``'s queued work, so that a clock read after it counts the work: a no-op on a CPU."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def matmul_peak(device: torch.device, precision: str, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a ``size``-cube matmul under ``precision``'s autocast: what the machine's matrix units give."""
    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    synchronize = synchronizer(device)

    def matmul() -> None:
        with autocast(device, precision):
            torch.mm(a, b)

    seconds = interleave({"matmul": matmul}, repeats, 2, synchronize)["matmul"]
    return 2 * size**3 / statistics.median(seconds)


def step_flops(step: Callable[[], None]) -> float:
    """The FLOPs of one call of ``step`` (convolutions and matmuls, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def bench_generator(spec: str) -> tuple[nn.Module, str]:
    """The generator ``--teacher`` names, and where it came from, for the results."""
    if spec == "cifar10-config":
        return Generator(**CIFAR10_G_KWARGS), CIFAR10_CONFIG_TEACHER
    path = FASHION_MNIST_TEACHER if spec == "shipped" else spec
    return load_generator(path), path


def real_images(config: TrainingConfig, count: int) -> tuple[ImageDataset, str]:
    """The config's real training images and what they are.

    Where the dataset's default folder lacks them, ``count`` random uint8 images of their
    shape stand in, so that the bench runs on any machine (augmentation and networks cost
    the same on any pixels). A folder named by ``data.root`` must hold them.
    """
    data = config.data
    try:
        dataset = load_dataset(data.dataset, data.root, data.split)
        return dataset, f"{data.dataset} {data.split} ({len(dataset)} images)"
    except DatasetError:
        info = dataset_info(data.dataset)
        if data.root is not None or info.image_side is None:
            raise
    side = info.image_side
    images = np.random.default_rng(0).integers(0, 256, (count, info.channels, side, side), dtype=np.uint8)
    classes = info.class_names or [str(label) for label in range(info.num_classes)]
    dataset = ImageDataset(images, np.zeros(count, dtype=np.int64), classes, f"synthetic {data.dataset}")
    return dataset, f"synthetic uint8 {info.channels}x{side}x{side} ({info.root} holds no {data.dataset})"


def load_bench_config(settings: BenchSettings) -> TrainingConfig:
    """The student's config: the embedded default's, with the overrides, and ``batch`` and ``precision`` last."""
    overrides = [
        *settings.overrides,
        f"train.batch_size={settings.batch}",
        f"train.precision={settings.precision}",
    ]
    return load_training_config(DEFAULT_CONFIG, overrides)


class Student:
    """One method on its own backbone, with the trainer's optimizer and loss scaler."""

    def __init__(
        self,
        config: TrainingConfig,
        syn_ratio: float,
        dataset: ImageDataset,
        teacher: SampleSource | None,
        device: torch.device,
    ) -> None:
        parts = assemble_run(config, dataset, teacher, device)
        self.context = parts.context
        self.method = SqueezeSpan(
            dataclasses.replace(config.method, syn_ratio=syn_ratio), parts.backbone, parts.context
        )
        self.method.to(device)
        self.synthetic, self.real = self.method.split(config.train.batch_size)
        peak_rate = config.optimizer.base_lr * config.train.batch_size / 256  # the trainer's, after warm-up
        self.optimizer = build_optimizer(self.method, config.optimizer, peak_rate)
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.train.precision == "fp16")
        self.precision = config.train.precision

    def training_step(self, stream: RealBatchStream) -> Callable[[], None]:
        """The trainer's step: a batch of real images, the method's loss under autocast, an SGD update."""
        device = self.context.device

        def step() -> None:
            real = stream.next(self.real)
            with autocast(device, self.precision):
                loss = self.method(real, self.synthetic)["loss"]
            apply_gradients(loss, self.optimizer, self.scaler)

        return step

    def bare_step(self, batch: int) -> Callable[[], None]:
        """Backbone and projector forward and backward on ``batch`` fixed views, and an SGD update."""
        method, context = self.method, self.context
        size = context.augmentation.size
        views = torch.randn(batch, context.image_channels, size, size, device=context.device)
        views = views.contiguous(memory_format=method.memory_format)
        # A fixed target: the loss then has a non-zero optimum, so the weights never shrink to denormals.
        target = torch.randn(batch, method.projector[-1].out_features, device=context.device)

        def step() -> None:
            with autocast(context.device, self.precision):
                z = method.project(views).float()
            apply_gradients((z - target).square().mean(), self.optimizer, self.scaler)

        return step


def run_bench(settings: BenchSettings) -> dict[str, Any]:
    """Measure the six cases (see the module's docstring); the results as ``--json`` writes them."""
    device = resolve_device(settings.device)
    autocast(device, settings.precision)  # refuses fp16 on a CPU before minutes of building
    # 'auto' becomes what it means here, so that the results name the precision that was measured
    config = load_bench_config(dataclasses.replace(settings, precision=resolve_precision(settings.precision, device)))
    batch = config.train.batch_size
    generator, teacher_source = bench_generator(settings.teacher)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # as the trainer does
    torch.manual_seed(config.train.seed)
    dataset, data_source = real_images(config, count=4 * batch)
    stream = RealBatchStream(dataset, device, seed=config.train.seed, on_device=config.data.on_device)
    renderer = build_teacher(config, generator, device)
    alpha = config.method.syn_ratio
    on_the_fly = Student(config, alpha, dataset, renderer, device)
    if on_the_fly.synthetic == 0:
        raise ConfigError(
            f"method.syn_ratio={alpha} leaves no generated image in a batch of {batch}; raise it or --batch"
        )
    pool = TeacherPool(renderer, config.teacher.pool_size or on_the_fly.synthetic)
    vicreg = Student(config, 0.0, dataset, None, device)
    student = Student(config, 0.0, dataset, None, device)
    augmentation, augment_generator = on_the_fly.context.augmentation, on_the_fly.context.generator
    real_batch = stream.next(batch).images

    def augment() -> None:
        with autocast(device, config.train.precision):
            augmentation(real_batch, augment_generator)

    cases = {
        "student": student.bare_step(batch),
        "vicreg": vicreg.training_step(stream),
        "step": on_the_fly.training_step(stream),
        "pool_step": Student(config, alpha, dataset, pool, device).training_step(stream),
        "teacher": lambda: renderer.sample(on_the_fly.synthetic),
        "augment": augment,
    }
    images = {name: batch for name in cases} | {"teacher": on_the_fly.synthetic}
    seconds = interleave(cases, settings.steps, settings.warmup, synchronizer(device))

    result: dict[str, Any] = {f"{name}_img_s": images[name] / statistics.median(seconds[name]) for name in cases}
    result["student_flop_per_image"] = step_flops(cases["student"]) / batch
    # The peak is the faster of fp32 and the measured precision: where bf16 is emulated, its own matmul
    # is slower than the student's step (whose convolutions run in fp32 inside), and no ceiling.
    peaks = {precision: matmul_peak(device, precision) for precision in dict.fromkeys(("fp32", config.train.precision))}
    result["matmul_peak_precision"] = max(peaks, key=peaks.__getitem__)
    result["matmul_peak_flop_s"] = peaks[result["matmul_peak_precision"]]
    result["student_peak_fraction"] = (
        result["student_img_s"] * result["student_flop_per_image"] / result["matmul_peak_flop_s"]
    )
    result["ratio_vs_vicreg"] = result["step_img_s"] / result["vicreg_img_s"]
    result["ratio_pool_vs_vicreg"] = result["pool_step_img_s"] / result["vicreg_img_s"]
    model = config.model
    result["settings"] = {
        "teacher": settings.teacher,
        "teacher_source": teacher_source,
        "real_images": data_source,
        "batch": batch,
        "synthetic": on_the_fly.synthetic,
        "real": on_the_fly.real,
        "pool_size": len(pool),
        "precision": config.train.precision,
        "device": str(device),
        "steps": settings.steps,
        "warmup": settings.warmup,
        "student": f"{model.backbone} width {model.width}, projector {model.proj_layers} x {model.proj_dim}",
        "config": str(DEFAULT_CONFIG),
        "overrides": list(settings.overrides),
    }
    result["seconds_per_step"] = seconds
    result["machine"] = machine_info(device)
    return result


def format_table(result: Mapping[str, Any]) -> str:
    """The cases' images/s and the two ratios, with what was measured and where."""
    settings, machine = result["settings"], result["machine"]
    lines = [f"{'case':<38}{'images/s':>10}{'ms/step':>10}"]
    for name, description in CASES.items():
        milliseconds = 1000 * statistics.median(result["seconds_per_step"][name])
        lines.append(f"{description:<38}{result[f'{name}_img_s']:>10.1f}{milliseconds:>10.1f}")
    student_rate = result["student_img_s"] * result["student_flop_per_image"]
    lines += [
        f"bare student step: {student_rate / 1e9:.0f} GFLOP/s, {100 * result['student_peak_fraction']:.1f}% of "
        f"the machine's matmul peak ({result['matmul_peak_flop_s'] / 1e9:.0f} GFLOP/s, 2048-cube, "
        f"{result.get('matmul_peak_precision', settings['precision'])})",
        f"squeeze and span / VICReg (images/s): {result['ratio_vs_vicreg']:.3f} on the fly, "
        f"{result['ratio_pool_vs_vicreg']:.3f} from a pool of {settings['pool_size']}",
        f"batch {settings['batch']} ({settings['synthetic']} generated + {settings['real']} real), "
        f"{settings['precision']} on {settings['device']}, median of {settings['steps']} steps after "
        f"{settings['warmup']}; student {settings['student']}",
        f"teacher: {settings['teacher_source']}; real images: {settings['real_images']}",
        f"machine: {machine['cpu']} ({machine['cores']} cores; {' '.join(machine['cpu_flags']) or 'no AVX flags'}), "
        f"torch {machine['torch']}" + (f", {machine['gpu']}" if "gpu" in machine else ""),
    ]
    return "\n".join(lines)
