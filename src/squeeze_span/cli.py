"""The `squeeze-span` command: parse arguments, build the objects, run.

A `UserError` (a missing file, a bad key or argument, an unsafe pickle) and an `OSError`
(a full disk, a read-only folder, a path through a file) are printed as one line and
exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch

from squeeze_span.allocator import keep_freed_memory
from squeeze_span.errors import ConfigError, UsageError, UserError, describe_os_error
from squeeze_span.validation import argument

POSITIVE_INT = argument(int, min=1)
POSITIVE_FLOAT = argument(float, above=0)
FINITE_FLOAT = argument(float)
DEFAULT_KNN_KS = (20, 200)
DEVICE_HELP = "auto (the first CUDA GPU if there is one, else the CPU), cpu, cuda, cuda:1, ..."
NO_PROGRESS_HELP = "hide progress bars"
PRECISION_HELP = (
    "of the networks' forward passes; auto: bf16 where the hardware computes it (AMX, AVX512-BF16, "
    "Ampere or newer), else fp32; fp16: CUDA only"
)
BACKBONE_HELP = (
    "a run folder (its checkpoints/last.pt), a training checkpoint, an exported backbone (.safetensors) "
    "or asset:NAME (e.g. asset:fashion_mnist_classifier.safetensors)"
)
MODEL_HELP = (
    "a StyleGAN2-ADA .pkl, a convert-gan folder, a train-gan snapshot folder, asset:NAME (the shipped teacher: "
    "asset:fashion_mnist_stylegan2) or package.module:factory"
)


def _probe(args: argparse.Namespace) -> None:
    from squeeze_span.eval.jobs import untrained_backbone
    from squeeze_span.eval.probe import RawPixels, probe_backbone
    from squeeze_span.models import load_backbone
    from squeeze_span.runtime import resolve_device

    device = resolve_device(args.device)
    if args.raw_pixels:
        backbone, name = RawPixels(), "raw pixels"
    elif args.random_init:
        backbone = untrained_backbone(args.random_init, args.dataset, args.data, width=args.width, seed=args.seed)
        name = f"{args.random_init} (width {args.width}, random init)"
    else:
        backbone = load_backbone(args.checkpoint)
        name = args.checkpoint
    result = probe_backbone(
        backbone,
        args.dataset,
        args.data,
        protocol=args.protocol,
        split=args.split,
        **protocol_arguments(args),
        size=args.size,
        device=device,
        precision=args.precision,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    result["backbone"] = name
    _report_probe(result, name, args)


def add_probe_command(commands: argparse._SubParsersAction) -> None:
    from squeeze_span.models import BACKBONES

    probe = commands.add_parser(
        "probe",
        help="linear-probe (and kNN-probe) a frozen backbone on a labeled dataset",
        description="Probe a frozen backbone: features of a center view, then a linear classifier (and kNN).",
        epilog=examples(
            "squeeze-span probe runs/demo/squeeze_span --dataset fashion_mnist --labels-per-class 10",
            "squeeze-span probe --random-init resnet18_cifar --dataset fashion_mnist --knn",
        ),
    )
    which = probe.add_mutually_exclusive_group(required=True)
    which.add_argument("checkpoint", nargs="?", metavar="BACKBONE", help=BACKBONE_HELP)
    which.add_argument("--random-init", metavar="ARCH", choices=sorted(BACKBONES), help="probe an untrained backbone")
    which.add_argument("--raw-pixels", action="store_true", help="probe the view's pixels themselves (a floor)")
    probe.add_argument(
        "--width",
        type=POSITIVE_INT,
        default=16,
        help="base width of --random-init (16: the CPU configs'; the paper's: 64)",
    )
    add_probe_options(
        probe,
        size_help="image size the backbone sees (default: the size it was trained at, if its file records it, "
        "else the dataset's training size)",
    )
    probe.add_argument("--seed", type=int, default=0, help="seed of --random-init's weights")
    probe.set_defaults(handler=_probe)


def _probe_discriminator(args: argparse.Namespace) -> None:
    from squeeze_span.eval.jobs import discriminator_features
    from squeeze_span.eval.probe import probe_backbone
    from squeeze_span.runtime import resolve_device

    features = discriminator_features(args.model, args.features)
    result = probe_backbone(
        features,
        args.dataset,
        args.data,
        protocol=args.protocol,
        split=args.split,
        **protocol_arguments(args),
        size=args.size,
        view="gan",
        device=resolve_device(args.device),
        precision=args.precision,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    result.update(
        model=str(args.model),
        features=args.features,
        taps=features.tap_names,
        feature_dim=features.feature_dim,
        discriminator_resolution=features.discriminator.img_resolution,
    )
    _report_probe(result, f"D of {args.model} ({args.features}: {', '.join(features.tap_names)})", args)


def add_probe_discriminator_command(commands: argparse._SubParsersAction) -> None:
    probe_d = commands.add_parser(
        "probe-discriminator",
        help="linear-probe a GAN's frozen discriminator on a labeled dataset (Table 1's discriminator rows)",
        description="Probe the features of MODEL's discriminator D on real images, as `probe` probes a backbone: "
        "multi: its blocks' outputs bR ... b8 averaged over space and its b4.fc, concatenated; single: b4.fc alone. "
        "D sees the images in [-1, 1] at their own size, padded with -1 to its resolution when smaller (as "
        "train-gan trains it), resized when larger, with its channels (gray copied to RGB, RGB to luma).",
        epilog=examples("squeeze-span probe-discriminator asset:fashion_mnist_stylegan2 --dataset fashion_mnist"),
    )
    probe_d.add_argument(
        "model",
        metavar="MODEL",
        help="a StyleGAN2-ADA .pkl, a convert-gan folder, a train-gan snapshot folder, or asset:NAME, holding a D",
    )
    probe_d.add_argument(
        "--features",
        choices=("multi", "single"),
        default="multi",
        help="multi: every block's output, averaged over space, and b4.fc; single: b4.fc alone",
    )
    add_probe_options(probe_d, size_help="resize the images to this size before D fits them (default: their own)")
    probe_d.set_defaults(handler=_probe_discriminator)


def protocol_arguments(args: argparse.Namespace) -> dict:
    """probe_backbone's protocol arguments from the shared probe options."""
    knn_ks = () if args.knn is None else tuple(args.knn) or DEFAULT_KNN_KS  # a bare --knn: the defaults
    return {"knn_ks": knn_ks, "labels_per_class": tuple(args.labels_per_class or ()), "draws": args.draws}


def _report_probe(result: dict, name: str, args: argparse.Namespace) -> None:
    size = f"{result['image_size']} px ({result['image_size_source']})"
    print(f"\n{name} on {args.dataset} ({args.split} split, {size}, {args.protocol} protocol)")
    print(f"{'probe':<22}{'top-1':>16}{'top-5':>8}")
    print(f"{'linear, every label':<22}{result['linear']['top1']:>16.2f}{result['linear']['top5']:>8.2f}")
    for k, accuracy in result.get("knn", {}).items():
        print(f"{f'kNN, k={k}':<22}{accuracy['top1']:>16.2f}{accuracy['top5']:>8.2f}")
    for n, few in result.get("few_labels", {}).items():
        cell = f"{few['top1']:.2f} ± {few['std']:.2f}"
        print(f"{f'linear, {n} per class':<22}{cell:>16}{'':>8}   ({len(few['draws'])} draws)")
    print(f"{result['seconds']:.0f} s on {result['machine']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


def _train(args: argparse.Namespace) -> None:
    from squeeze_span.config import describe_config
    from squeeze_span.methods import METHODS, load_training_config
    from squeeze_span.train import Trainer

    config = load_training_config(args.config, args.overrides)
    if args.print_config:
        print("\n".join(describe_config(config)))
        return
    trainer = Trainer(
        config, METHODS[config.method.name], command=["squeeze-span", "train", args.config, *args.overrides]
    )
    record = trainer.fit()
    if not trainer.dist.is_main:
        return
    if record.get("already_complete"):
        print(
            f"the run in {config.output_dir} is already complete at step {record['step']}; nothing was changed "
            "(raise train.max_steps or train.epochs to train on)"
        )
        return
    knn = f", kNN top-1 {record['knn/top1']:.2f}" if "knn/top1" in record else ""
    print(f"step {record['step']}: loss {record['loss']:.4f}{knn}; run folder {config.output_dir}")


def add_train_command(commands: argparse._SubParsersAction) -> None:
    add_config_command(
        commands,
        "train",
        _train,
        help="train a method (squeeze and span, ...) from a YAML config with key=value overrides",
        description="Train from CONFIG.yaml; key=value overrides (e.g. teacher.path=G.pkl train.max_steps=30 "
        "output_dir=runs/x resume=auto) change single keys. The resolved config goes to OUTPUT_DIR/config.yaml.",
        epilog=examples(
            "squeeze-span train configs/fashion_mnist/squeeze_span.yaml train.max_steps=30 output_dir=runs/try",
            "squeeze-span train configs/fashion_mnist/vicreg_real.yaml train.budget_seconds=600 --print-config",
        ),
    )


def add_config_command(
    commands: argparse._SubParsersAction, name: str, handler: Callable, *, help: str, description: str, epilog: str
) -> None:
    """A command that runs CONFIG.yaml with key=value overrides (train, train-gan)."""
    command = commands.add_parser(name, help=help, description=description, epilog=epilog)
    command.add_argument("config", metavar="CONFIG.yaml", help="the experiment: what differs from the defaults")
    command.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="change single config keys, after the file (see --print-config)",
    )
    command.add_argument(
        "--print-config",
        action="store_true",
        help="print every key of the resolved config (file and overrides): its value, type and the values it "
        "accepts; then exit without running",
    )
    command.set_defaults(handler=handler)


def _train_gan(args: argparse.Namespace) -> None:
    from squeeze_span.config import GanTrainingConfig, describe_config, load_config
    from squeeze_span.train.gan import GanTrainer

    config = load_config(args.config, args.overrides, GanTrainingConfig)
    if args.print_config:
        print("\n".join(describe_config(config)))
        return
    record = GanTrainer(config, command=["squeeze-span", "train-gan", args.config, *args.overrides]).fit()
    if record.get("already_complete"):
        print(
            f"the run in {config.output_dir} is already complete at kimg {record['kimg']:g} (step {record['step']}); "
            "nothing was changed (raise train.total_kimg to train on)"
        )
        return
    state = "done" if record["finished"] else "stopped (train.max_seconds); run again with resume=auto to go on"
    print(f"kimg {record['kimg']:.1f}, step {record['step']}: {state}; run folder {config.output_dir}")


def add_train_gan_command(commands: argparse._SubParsersAction) -> None:
    add_config_command(
        commands,
        "train-gan",
        _train_gan,
        help="train a StyleGAN2 on a dataset (snapshots G_ema, G, D for teachers), from a YAML config",
        description="Train our StyleGAN2 from CONFIG.yaml (e.g. configs/fashion_mnist/gan.yaml) with key=value "
        "overrides (train.max_seconds=3600 resume=auto ...); snapshots go to OUTPUT_DIR/snapshots/.",
        epilog=examples(
            "squeeze-span train-gan configs/fashion_mnist/gan.yaml train.max_seconds=3600 resume=auto",
            "squeeze-span train-gan configs/fashion_mnist/gan.yaml train.total_kimg=50 --print-config",
        ),
    )


def _export(args: argparse.Namespace) -> None:
    from squeeze_span.models import load_backbone, save_backbone

    backbone = load_backbone(args.run_dir)
    path = save_backbone(backbone, args.out)
    config = backbone.config
    channels = f"{config['in_channels']} input channel" + ("s" if config["in_channels"] > 1 else "")
    print(f"wrote {path}: {backbone.arch}, width {config['width']}, {channels}")
    print(f"  input: {backbone.preprocessing.describe()}")
    print(f"  load it with squeeze_span.models.load_backbone({str(path)!r}); its .preprocessing(images) prepares input")


def add_export_command(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="write a run's backbone as .safetensors (torchvision's resnet18 state-dict names)",
        description="Export the backbone of RUN_DIR (its checkpoints/last.pt) or of a checkpoint file.",
        epilog=examples("squeeze-span export runs/demo/squeeze_span squeeze_span.safetensors"),
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="a run folder or a training checkpoint (.pt)")
    export.add_argument("out", metavar="OUT.safetensors", help="the backbone file to write")
    export.set_defaults(handler=_export)


def _fd(args: argparse.Namespace) -> None:
    from squeeze_span.eval.jobs import GeneratorFD
    from squeeze_span.runtime import resolve_device

    fd = GeneratorFD(
        args.dataset,
        args.data,
        count=args.n,
        device=resolve_device(args.device),
        progress=not args.no_progress,
        classifier=args.classifier,
        inception=args.inception,
    )
    distance, metric = fd(args.model)
    print(f"{metric} of {args.model} against {args.dataset} train ({args.n} images each): {distance:.3f}")


def add_fd_command(commands: argparse._SubParsersAction) -> None:
    from squeeze_span.data import DATASETS

    fd = commands.add_parser(
        "fd",
        help="Frechet distance of a generator's samples to a dataset (FID with Inception weights)",
        description="Frechet distance between MODEL's samples and the dataset's train images, in the features "
        "of a classifier trained on the dataset (FD-<dataset>-classifier) or, with --inception, of "
        "pt_inception-2015-12-05 (FID).",
        epilog=examples("squeeze-span fd asset:fashion_mnist_stylegan2 --dataset fashion_mnist --n 2000"),
    )
    fd.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    fd.add_argument("--dataset", required=True, choices=DATASETS, help="the real images to compare with")
    fd.add_argument("--data", metavar="ROOT", help=data_help())
    extractor = fd.add_mutually_exclusive_group()
    extractor.add_argument(
        "--classifier",
        metavar="BACKBONE",
        help="a classifier: run folder or exported backbone (Fashion-MNIST: the shipped one)",
    )
    extractor.add_argument("--inception", metavar="PT", help="pt_inception-2015-12-05-6726825d.pth: the number is FID")
    fd.add_argument("--n", type=argument(int, min=2), default=10000, help="images of each set (a covariance needs 2)")
    fd.add_argument("--device", default="auto", help=DEVICE_HELP)
    fd.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    fd.set_defaults(handler=_fd)


def _demo(args: argparse.Namespace) -> None:
    from squeeze_span.demo import DemoSettings, run_demo, summary

    budget = {} if args.minutes is None else {"minutes": args.minutes}
    settings = DemoSettings(
        **budget,
        output_dir=args.output_dir,
        data_root=args.data,
        split=args.split,
        overrides=tuple(args.overrides),
        progress=not args.no_progress,
    )
    results = run_demo(settings)
    print(summary(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


def add_demo_command(commands: argparse._SubParsersAction) -> None:
    from squeeze_span.data import dataset_info
    from squeeze_span.demo import DemoSettings

    demo = commands.add_parser(
        "demo",
        help="the embedded default: squeeze and span vs VICReg at equal time on Fashion-MNIST, probed",
        description="Train Squeeze and Span from the shipped StyleGAN2 teacher, and VICReg on real images, each "
        "for the same time budget on real Fashion-MNIST; probe both and an untrained backbone.",
        epilog=examples("squeeze-span demo", "squeeze-span demo --minutes 2 --output-dir runs/quick --json demo.json"),
    )
    demo.add_argument(
        "--minutes", type=POSITIVE_FLOAT, help=f"training budget of each method (default: {DemoSettings.minutes:g})"
    )
    demo.add_argument(
        "--data",
        metavar="ROOT",
        help="the folder of Fashion-MNIST's four IDX files "
        f"(default: {dataset_info('fashion_mnist').root}, Debian's dataset-fashion-mnist)",
    )
    demo.add_argument("--output-dir", default="runs/demo", help="where each method's run folder goes (emptied first)")
    demo.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="validation: probe on a sixth of train held out, for tuning (test is not read)",
    )
    demo.add_argument(
        "overrides", nargs="*", metavar="key=value", help="for both methods' configs, e.g. optimizer.base_lr=0.1"
    )
    demo.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    demo.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    demo.set_defaults(handler=_demo)


def _convert_gan(args: argparse.Namespace) -> None:
    from squeeze_span.generators import load_networks, save_network

    networks = {name: value for name, value in load_networks(args.pickle).items() if isinstance(value, torch.nn.Module)}
    for name, network in networks.items():
        path = save_network(network, args.out_dir, name)
        print(f"{name}: {type(network).__name__} -> {path} (+ {path.with_suffix('.json').name})")


def add_convert_gan_command(commands: argparse._SubParsersAction) -> None:
    convert = commands.add_parser(
        "convert-gan",
        help="convert a StyleGAN2-ADA pickle to safetensors + JSON, loadable without any pickle",
        description="Read a stylegan2-ada-pytorch pickle without running its code; write each network "
        "(G, G_ema, D) as NAME.safetensors plus NAME.json (its init kwargs).",
        epilog=examples("squeeze-span convert-gan network-snapshot-025000.pkl teachers/cifar10"),
    )
    convert.add_argument("pickle", metavar="IN.pkl", help="a stylegan2-ada-pytorch network pickle")
    convert.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write the networks into")
    convert.set_defaults(handler=_convert_gan)


def _sample_gan(args: argparse.Namespace) -> None:
    from squeeze_span.eval.plots import save_image_grid
    from squeeze_span.generators import Teacher, load_generator
    from squeeze_span.runtime import resolve_device

    teacher = Teacher(
        load_generator(args.model),
        None,  # images only: any generator with a (z, c) call samples, with or without StyleGAN's blocks
        device=resolve_device(args.device),
        precision=args.precision,
        truncation_psi=args.truncation,
        noise_mode=args.noise_mode,
        seed=args.seed,
    )
    images = teacher.sample(args.n).images
    path = save_image_grid(images, args.out, args.columns).resolve()  # absolute: --out defaults to the working dir
    print(f"wrote {path}: {args.n} samples of {tuple(images.shape[1:])}")


def add_sample_gan_command(commands: argparse._SubParsersAction) -> None:
    from squeeze_span.config import NOISE_MODES
    from squeeze_span.runtime import PRECISIONS

    sample = commands.add_parser(
        "sample-gan",
        help="write a grid of a generator's samples as PNG, to look at a teacher",
        description="Sample a generator into a PNG grid: grid.png in the working directory unless --out names "
        "another file.",
        epilog=examples(
            "squeeze-span sample-gan asset:fashion_mnist_stylegan2",
            "squeeze-span sample-gan asset:fashion_mnist_stylegan2 --n 16 --truncation 0.7 --out teacher.png",
        ),
    )
    sample.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    sample.add_argument("--n", type=POSITIVE_INT, default=64, help="number of samples")
    sample.add_argument(
        "--out", default="grid.png", help="the PNG to write; a relative path is in the working directory"
    )
    sample.add_argument("--columns", type=POSITIVE_INT, help="images per row (default: a square grid)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the latents (and of random noise)")
    sample.add_argument(
        "--truncation",
        type=FINITE_FLOAT,
        default=1.0,
        help="truncation psi (StyleGAN2; 1: none, below 1: typical images)",
    )
    sample.add_argument(
        "--noise-mode", choices=NOISE_MODES, default="const", help="per-pixel noise: stored, drawn afresh, or none"
    )
    sample.add_argument("--device", default="auto", help=DEVICE_HELP)
    sample.add_argument("--precision", choices=PRECISIONS, default="fp32", help=PRECISION_HELP)
    sample.set_defaults(handler=_sample_gan)


def _sweep(args: argparse.Namespace) -> None:
    from squeeze_span.experiments.sweep import run_sweep

    time_limit = None if args.time_limit is None else args.time_limit * 60
    outcome = run_sweep(
        args.plan, device=args.device, progress=not args.no_progress, only=args.only, time_limit=time_limit
    )
    print(f"sweep: {len(outcome.done)} ran, {len(outcome.skipped)} were finished before, {len(outcome.failed)} failed")
    if outcome.deferred:
        print(f"sweep: {len(outcome.deferred)} left for lack of time; run the same command again to go on")
    for line in outcome.failed:
        print(f"  failed: {line}", file=sys.stderr)
    if outcome.failed:
        raise ConfigError(
            f"{len(outcome.failed)} of the sweep's runs failed (listed above); fix them and run the sweep again: "
            "finished runs are kept"
        )


def add_sweep_command(commands: argparse._SubParsersAction) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="run a plan's training runs and probes in turn; finished runs are skipped, unfinished ones resumed",
        description="Run every (entry, seed) of PLAN.yaml (see squeeze_span.experiments.plan) that has no result "
        "yet: train (resuming) and probe, or probe. Each finished one writes RESULTS_DIR/NAME/seedS.json; "
        "stop the sweep at any point and run the same command again to continue.",
        epilog=examples(
            "squeeze-span sweep results/fashion_mnist/plan.yaml",
            "squeeze-span sweep results/fashion_mnist/plan.yaml --only squeeze_span vicreg_real",
            "squeeze-span sweep results/fashion_mnist/length/plan.yaml --time-limit 170",
        ),
    )
    sweep.add_argument("plan", metavar="PLAN.yaml", help="the plan: its runs, seeds and folders")
    sweep.add_argument("--only", nargs="+", metavar="NAME", help="run only these entries")
    sweep.add_argument(
        "--time-limit",
        type=POSITIVE_FLOAT,
        metavar="MINUTES",
        help="start only the runs expected to finish within MINUTES from now (from the pace of finished runs "
        "with the same settings; a bf16 run on a GPU that emulates bf16 never is), leaving the rest for the next "
        "sweep: for a session or a cluster job's limit",
    )
    sweep.add_argument("--device", default="auto", help=DEVICE_HELP)
    sweep.add_argument("--no-progress", action="store_true", help="hide progress bars (the overall lines stay)")
    sweep.set_defaults(handler=_sweep)


def _bench(args: argparse.Namespace) -> None:
    from squeeze_span.experiments.bench import BenchSettings, format_table, run_bench

    settings = BenchSettings(
        teacher=args.teacher,
        batch=args.batch,
        precision=args.precision,
        device=args.device,
        steps=args.steps,
        warmup=args.warmup,
        overrides=tuple(args.overrides),
    )
    result = run_bench(settings)
    print(format_table(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")


def add_bench_command(commands: argparse._SubParsersAction) -> None:
    from squeeze_span.runtime import PRECISIONS

    bench = commands.add_parser(
        "bench",
        help="images/s of a squeeze and span step beside VICReg's, the bare student step, the teacher and augmentation",
        description="Measure, in one process and in turns, after a warm-up: the bare student step, VICReg on real "
        "images, squeeze and span with the teacher rendering each step and from a teacher pool, the teacher alone "
        "and the augmentation alone, on the embedded default's student (configs/fashion_mnist/squeeze_span.yaml); "
        "print the median images/s of each. Real images: Fashion-MNIST, else random ones of its shape.",
        epilog=examples("squeeze-span bench", "squeeze-span bench --device cpu --batch 64 --steps 5 --json bench.json"),
    )
    bench.add_argument(
        "--teacher",
        default="shipped",
        metavar="MODEL|shipped|cifar10-config",
        help="shipped: asset:fashion_mnist_stylegan2; cifar10-config: a random StyleGAN2 of the paper's CIFAR-10 "
        "generator (32x32 RGB, 512 channels); or a .pkl, a convert-gan folder, asset:NAME",
    )
    bench.add_argument("--batch", type=argument(int, min=2), default=256, help="images per step, B (B_s = alpha B)")
    bench.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    bench.add_argument("--device", default="auto", help=DEVICE_HELP)
    bench.add_argument("--steps", type=POSITIVE_INT, default=10, help="timed steps of each case")
    bench.add_argument("--warmup", type=argument(int, min=0), default=2, help="untimed steps of each case first")
    bench.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    bench.add_argument(
        "overrides", nargs="*", metavar="key=value", help="for the student's config, e.g. model.width=64"
    )
    bench.set_defaults(handler=_bench)


def _report(args: argparse.Namespace) -> None:
    from squeeze_span.experiments.report import build_report, group_title

    summary = build_report(args.results, args.out, args.plan)
    print(f"report of {summary['runs']} runs written to {args.out}/REPORT.md (with results.json and the figures)")
    if summary["pending"]:
        print(f"  {len(summary['pending'])} of the plan's runs have no result yet: run the sweep to add them")
    for claim in summary["claims"]:
        if claim["protocol"] == summary["primary"] and claim["verdict"] != "not measured":
            where = group_title(claim["steps"], claim["variant"])
            print(f"  {where}, claim {claim['number']}: {claim['claim']}: {claim['verdict']}")


def add_report_command(commands: argparse._SubParsersAction) -> None:
    report = commands.add_parser(
        "report",
        help="tables, claims and figures from a sweep's results",
        description="Read RESULTS_DIR/NAME/seedS.json (written by `squeeze-span sweep`) and write OUT/REPORT.md, "
        "OUT/results.json, OUT/table2.png and OUT/figure4.png.",
        epilog=examples(
            "squeeze-span report results/fashion_mnist/runs --plan results/fashion_mnist/plan.yaml "
            "--out results/fashion_mnist"
        ),
    )
    report.add_argument("results", metavar="RESULTS_DIR", help="the sweep's results_dir")
    report.add_argument("--out", required=True, metavar="DIR", help="the folder to write the report into")
    report.add_argument(
        "--plan", metavar="PLAN.yaml", help="the sweep's plan: rows in its order, its missing runs listed"
    )
    report.set_defaults(handler=_report)


def _figure2(args: argparse.Namespace) -> None:
    import time

    from squeeze_span.assets import FASHION_MNIST_CLASSIFIER
    from squeeze_span.eval.embedding import check_embedding
    from squeeze_span.eval.figures import embed_panels, generated_features
    from squeeze_span.eval.plots import scatter_panels
    from squeeze_span.generators import load_gan
    from squeeze_span.models import load_backbone
    from squeeze_span.runtime import resolve_device

    if args.classifier is None and args.dataset != "fashion_mnist":
        raise ConfigError(f"figure2 on {args.dataset} needs --classifier BACKBONE (a classifier trained on it)")
    args.classifier = args.classifier or FASHION_MNIST_CLASSIFIER
    check_embedding(args.embedding)  # before minutes of sampling, not after
    started = time.perf_counter()
    device = resolve_device(args.device)
    generator, discriminator = load_gan(args.model)
    data = generated_features(
        generator,
        load_backbone(args.classifier),
        args.dataset,
        discriminator=discriminator,
        count=args.n,
        device=device,
        seed=args.seed,
        progress=not args.no_progress,
    )
    points = embed_panels(data.features, args.embedding, seed=args.seed, progress=not args.no_progress)
    title = f"{args.n} images generated by {Path(args.model).name}, coloured by predicted class ({args.embedding})"
    path = scatter_panels(points, data.labels, data.class_names, args.out, title)
    dims = ", ".join(f"{name} {values.shape[1]}-d" for name, values in data.features.items())
    print(f"wrote {path}: {args.embedding} maps of {dims} features of {args.n} generated images")
    histogram = data.histogram.tolist()
    width = max(len(name) for name in data.class_names)
    print("pseudo-labels (images per class):")
    for name, images in zip(data.class_names, histogram):
        print(f"  {name:<{width}} {images:>7} {100 * images / args.n:6.1f}%")
    if args.json:
        result = {
            "model": str(args.model),
            "dataset": args.dataset,
            "classifier": str(args.classifier),
            "n": args.n,
            "embedding": args.embedding,
            "seed": args.seed,
            "figure": str(path),
            "class_names": data.class_names,
            "histogram": histogram,
            "feature_dims": {name: values.shape[1] for name, values in data.features.items()},
            "labels": data.labels.tolist(),
            "seconds": round(time.perf_counter() - started, 1),
            "points": {name: [[round(x, 4), round(y, 4)] for x, y in xy.tolist()] for name, xy in points.items()},
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result) + "\n")
        print(f"wrote {args.json}")


def add_figure2_command(commands: argparse._SubParsersAction) -> None:
    from squeeze_span.data import DATASETS
    from squeeze_span.eval.embedding import METHODS

    figure2 = commands.add_parser(
        "figure2",
        help="the paper's Figure 2: maps of generated images by latent, G and D features, coloured by class",
        description="Sample N images from MODEL and draw three 2-D maps of them (UMAP, as the paper, or t-SNE) "
        "side by side: of the latent w, of the generator's block features and, when MODEL holds a discriminator (an "
        "NVIDIA pickle or a "
        "convert-gan folder with D), of its features; each point is coloured by the class a classifier "
        "predicts for the image, and a last panel counts the images per class.",
        epilog=examples("squeeze-span figure2 asset:fashion_mnist_stylegan2 --dataset fashion_mnist --n 2000"),
    )
    figure2.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    figure2.add_argument("--dataset", required=True, choices=DATASETS, help="the dataset the classifier knows")
    figure2.add_argument(
        "--classifier", metavar="BACKBONE", help="a backbone with a classifier head (Fashion-MNIST: the shipped one)"
    )
    figure2.add_argument(
        "--n",
        type=argument(int, min=4),
        default=50_000,
        help="generated images, at least 4 (default: the paper's 50,000)",
    )
    figure2.add_argument(
        "--embedding",
        choices=METHODS,
        default="umap",
        help="umap: umap-learn, as the paper (default); tsne: scikit-learn's Barnes-Hut t-SNE",
    )
    figure2.add_argument("--out", default="figure2.png", help="the figure (.png, .pdf or .svg)")
    figure2.add_argument("--json", metavar="OUT", help="also write the histogram, pseudo-labels and 2-D points as JSON")
    figure2.add_argument("--seed", type=int, default=0, help="seed of the latents and of the embedding")
    figure2.add_argument("--device", default="auto", help=DEVICE_HELP)
    figure2.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)
    figure2.set_defaults(handler=_figure2)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's help, with each option's default after its description and the examples kept as written.

    A default of None or False means "off" or "decided elsewhere", which the description says; it is
    not shown. Indented lines of a description or epilog (the examples) are not re-wrapped.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        help = action.help or ""
        # By identity: a default of 0 (a seed) equals False, yet is worth showing.
        if any(action.default is off for off in (None, False, argparse.SUPPRESS)) or "(default" in help:
            return help
        return f"{help} (default: %(default)s)"

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n".join(
            indent + line if line.startswith(" ") else super(HelpFormatter, self)._fill_text(line, width, indent)
            for line in text.splitlines()
        )


def examples(*commands: str) -> str:
    """A command's epilog: its examples, one command line each."""
    return "examples:\n" + "\n".join(f"  {command}" for command in commands)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes raise UsageError: one line and status 2, like every other user error."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)  # the commands' parsers are made by this class too
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}; see {self.prog} --help")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse's refusal of an unknown command lists all the commands; the closest one says what was meant.
        if isinstance(action, argparse._SubParsersAction) and value not in action.choices:
            close = difflib.get_close_matches(value, action.choices, n=1)
            hint = f"did you mean {close[0]}?" if close else f"see {self.prog} --help for the commands"
            raise UsageError(f"{self.prog}: unknown command {value!r}; {hint}")
        super()._check_value(action, value)


def add_probe_options(parser: argparse.ArgumentParser, *, size_help: str) -> None:
    """The options every probe command shares: the dataset, the protocol and split, and how to run."""
    from squeeze_span.data import DATASETS
    from squeeze_span.runtime import PRECISIONS

    parser.add_argument("--dataset", required=True, choices=DATASETS, help="the labeled dataset to probe on")
    parser.add_argument("--data", metavar="ROOT", help=data_help())
    parser.add_argument(
        "--protocol",
        choices=("fast", "paper"),
        default="fast",
        help="fast: logistic regression on the features, its weight decay chosen on a held-out part of train; "
        "paper: the authors' linear layer trained by SGD on augmented views for 90 epochs",
    )
    parser.add_argument(
        "--split",
        choices=("test", "validation"),
        default="test",
        help="validation: fit on 5/6 of train and score the held-out 1/6, for tuning (test is not read)",
    )
    parser.add_argument(
        "--knn",
        nargs="*",
        type=POSITIVE_INT,
        metavar="K",
        help="also report weighted kNN accuracy (T=0.1) for each K (default, with no K: 20 and 200)",
    )
    parser.add_argument(
        "--labels-per-class",
        nargs="+",
        type=argument(int, min=2),
        metavar="N",
        help="also fit the linear probe on N labelled train images per class (for each N), over --draws fixed "
        "draws shared by every backbone, its weight decay cross-validated inside them; mean ± std on the split",
    )
    parser.add_argument("--draws", type=POSITIVE_INT, default=5, help="draws of labelled images for --labels-per-class")
    parser.add_argument("--size", type=POSITIVE_INT, help=size_help)
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument("--batch-size", type=POSITIVE_INT, default=512, help="images per batch of feature extraction")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--no-progress", action="store_true", help=NO_PROGRESS_HELP)


def data_help() -> str:
    """--data's help: each dataset's default folder, from the dataset registry."""
    from squeeze_span.data import DATASETS, dataset_info

    roots = ", ".join(f"{name}: {dataset_info(name).root}" for name in DATASETS if dataset_info(name).root)
    return f"the dataset's folder (default: {roots}; imagefolder has none)"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="squeeze-span",
        description="Distil a visual backbone from a pretrained GAN generator (Squeeze and Span).",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for add_command in (
        add_demo_command,
        add_probe_command,
        add_probe_discriminator_command,
        add_train_command,
        add_train_gan_command,
        add_export_command,
        add_fd_command,
        add_convert_gan_command,
        add_sample_gan_command,
        add_sweep_command,
        add_bench_command,
        add_report_command,
        add_figure2_command,
    ):
        add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        # Help, since a bare command is how one asks what there is; yet status 2, as for any command
        # line that runs nothing, so that a script which lost its arguments does not pass for done.
        parser.print_help()
        return 2
    try:
        args = parser.parse_args(argv)
        args.handler(args)
    except UserError as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"OSError: {describe_os_error(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
