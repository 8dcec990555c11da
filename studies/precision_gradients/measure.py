"""How faithful is a bf16-autocast gradient to the fp32 one, for squeeze and for VICReg on generated images?

For each method's 500-step checkpoints (trained in bf16, runs/length/fashion_mnist/<name>_500/seed*/), this
script rebuilds the method as the trainer does (config + the length sweep's overrides, ``build_run``, the
method's class, the checkpoint's ``method`` state), puts it in train mode, and on a few batches computes the
loss and the gradient of every trainable parameter twice:

  (a) in fp32 (no autocast), and
  (b) under ``squeeze_span.runtime.autocast(device, "bf16")``, exactly the trainer's forward context;
      backward runs outside it, as in ``Trainer.fit`` / ``apply_gradients``.

Both passes see the same generated images, the same teacher features and the same augmentation draws:
the teacher samples of each batch are rendered once (latents, StyleGAN2 noise and all from fixed seeds)
and handed to the method through a fixed sample source, and the augmentation generator and torch's global
generator are reseeded identically before each pass. BatchNorm buffers are restored before each pass, so
that the passes start from the same module state (train-mode BatchNorm normalises by batch statistics, so
the buffers do not enter the loss anyway).

The teacher renders at the run's precision (bf16) for both passes, as in the bf16 training runs, so the
main comparison varies only the student's precision. With ``--teacher-fp32`` an extra fp32 pass uses the
same latents rendered by an fp32 teacher (the whole fp32 pipeline, as the fp32 runs train).

Gradients are taken per loss term (invariance, variance, covariance; each multiplied by its weight), by
``torch.autograd.grad`` with the graph retained, so that the total gradient is their sum and each term's
distortion is measured alike. Metrics, per batch, for the backbone's parameters and for all parameters:

  cos      cosine between the flattened bf16 and fp32 gradients
  rel_err  ||g_bf16 - g_fp32|| / ||g_fp32||
  loss     |L_bf16 - L_fp32| / |L_fp32|  (and per term)

Noise reference: the same two numbers between the fp32 gradients of two different batches (consecutive
batches: different images and augmentations), i.e. ordinary minibatch noise at this batch size. A sanity
pass repeats the fp32 pass of the first batch; its cosine with the first must be 1 (same randomness).

Run (one thread; the two background sweeps keep the cores busy):
    OMP_NUM_THREADS=1 .venv/bin/python studies/precision_gradients/measure.py
writes studies/precision_gradients/results/gradients.json.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch

from squeeze_span.config import to_dict
from squeeze_span.data.stream import RealBatch
from squeeze_span.generators import TeacherSample, load_generator
from squeeze_span.generators.teacher import Teacher
from squeeze_span.methods import METHODS, load_training_config
from squeeze_span.runtime import autocast, machine_info
from squeeze_span.train.builder import build_run, build_teacher
from squeeze_span.train.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
RUNS = ROOT / "runs/length/fashion_mnist"
# The length sweep's overrides (results/fashion_mnist/length/plan.yaml: the plan's and the entry's;
# progress=false is the sweep's --no-progress).
OVERRIDES = ["train.knn_every=0", "train.max_steps=500", "train.checkpoint_every=100", "train.progress=false"]
METHOD_RUNS = {
    "squeeze": ("configs/fashion_mnist/squeeze.yaml", "squeeze_500"),
    "vicreg_syn": ("configs/fashion_mnist/vicreg_syn.yaml", "vicreg_syn_500"),
}
TERMS = ("invariance", "variance", "covariance")


class FixedSource:
    """A SampleSource that hands out one pre-rendered sample (images and pooled features), whatever is asked.

    T_phi global-average-pools each feature before anything else (``SqueezeModule.forward``), and pooling
    an already pooled [N, C] feature is the identity, so pooled features give the same Z_g as the maps.
    """

    def __init__(self, teacher: Teacher) -> None:
        self.device = teacher.device
        self.latent_generator = teacher.latent_generator
        self._feature_shapes = [(shape[0],) for shape in teacher.feature_shapes]
        self._image_shape = teacher.image_shape
        self.current: TeacherSample | None = None

    def sample(self, n: int, generator: torch.Generator | None = None) -> TeacherSample:
        assert self.current is not None and len(self.current.images) == n
        return TeacherSample(self.current.images.clone(), [f.clone() for f in self.current.features])

    @property
    def feature_shapes(self):
        return self._feature_shapes

    @property
    def image_shape(self):
        return self._image_shape


def render(teacher: Teacher, n: int, seed: int) -> TeacherSample:
    """``n`` teacher samples from fixed seeds (latents from the teacher's generator, StyleGAN2's random
    noise from torch's global generator), features pooled over space."""
    teacher.latent_generator.manual_seed(seed)
    torch.manual_seed(seed)
    sample = teacher.sample(n)
    pooled = [f.flatten(2).mean(dim=2) if f.dim() > 2 else f for f in sample.features]
    return TeacherSample(sample.images, pooled)


def term_names(method_name: str) -> list[str]:
    """The keys of the method's forward() logs holding the unweighted loss terms."""
    prefix = "loss/squeeze/" if method_name == "squeeze_span" else "loss/"
    return [prefix + term for term in TERMS]


def one_pass(method, precision: str, sample: TeacherSample, batch_size: int, seed: int, buffers, params):
    """Loss, its terms and their gradients (flattened, float64, per term weighted) for one precision."""
    context = method.context
    context.teacher.current = sample
    method.load_state_dict(buffers, strict=False)  # BatchNorm's running stats and counters as loaded
    context.generator.manual_seed(seed)  # the augmentation's draws
    torch.manual_seed(seed)
    real = RealBatch(torch.empty(0, 1, 28, 28, dtype=torch.uint8), torch.empty(0, dtype=torch.long))
    with autocast(context.device, precision):
        logs = method(real, batch_size)
    config = method.config
    weights = {
        "invariance": config.invariance_weight,
        "variance": config.variance_weight,
        "covariance": config.covariance_weight,
    }
    # squeeze_span's total is alpha * L_squeeze, with alpha = syn_ratio (1 for squeeze alone).
    scale = getattr(config, "syn_ratio", 1.0) if method.name == "squeeze_span" else 1.0
    out = {"loss": logs["loss"].item(), "terms": {}, "grads": {}}
    for term, key in zip(TERMS, term_names(method.name)):
        value = logs[key]
        out["terms"][term] = value.item()
        grads = torch.autograd.grad(scale * weights[term] * value, params, retain_graph=True, allow_unused=True)
        out["grads"][term] = torch.cat(
            [(g if g is not None else torch.zeros_like(p)).detach().double().flatten() for g, p in zip(grads, params)]
        )
    total = sum(scale * weights[t] * out["terms"][t] for t in TERMS)
    assert math.isclose(total, out["loss"], rel_tol=1e-4, abs_tol=1e-6), (total, out["loss"])
    out["grads"]["total"] = sum(out["grads"][t] for t in TERMS)
    return out


def compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    """cos(a, b) and ||a - b|| / ||b|| (b the reference)."""
    nb = b.norm().item()
    return {
        "cos": torch.nn.functional.cosine_similarity(a, b, dim=0).item() if nb > 0 and a.norm() > 0 else float("nan"),
        "rel_err": (a - b).norm().item() / nb if nb > 0 else float("nan"),
        "norm_ref": nb,
    }


def measure_checkpoint(method_key: str, seed: int, samples, args) -> dict:
    config_path, run_name = METHOD_RUNS[method_key]
    run_dir = RUNS / run_name / f"seed{seed}"
    state = load_checkpoint(run_dir / "checkpoints/last.pt")
    config = load_training_config(ROOT / config_path, OVERRIDES + [f"train.seed={seed}", f"output_dir={run_dir}"])
    # The rebuilt config must be the one the run trained with (resume/overwrite flags aside).
    saved, rebuilt = state["config"], to_dict(config)
    for section in ("method", "data", "teacher", "model", "optimizer", "train"):
        assert saved[section] == rebuilt[section], (section, saved[section], rebuilt[section])
    assert config.train.precision == "bf16"

    device = torch.device("cpu")
    torch.set_flush_denormal(True)  # as the trainer does on a CPU
    torch.manual_seed(seed)
    parts = build_run(config, device)  # dataset, augmentation, augmentation generator, teacher, backbone
    method = METHODS[config.method.name](config.method, parts.backbone, parts.context).to(device)
    method.load_state_dict(state["method"])
    method.context.teacher = FixedSource(parts.teacher)  # built with the real teacher's feature shapes
    method.train()
    params = [p for p in method.parameters() if p.requires_grad]
    names = [n for n, p in method.named_parameters() if p.requires_grad]
    sizes = [p.numel() for p in params]
    backbone_mask = torch.cat(
        [torch.full((s,), n.startswith("backbone."), dtype=torch.bool) for n, s in zip(names, sizes)]
    )
    buffers = {k: v.clone() for k, v in method.state_dict().items() if k not in dict(method.named_parameters())}

    def groups(g: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"all": g, "backbone": g[backbone_mask]}

    per_batch, fp32_totals, errors = [], [], []
    for b, (bf16_teacher, fp32_teacher) in enumerate(samples):
        aug_seed = 10_000 + b
        started = time.perf_counter()
        ref = one_pass(method, "fp32", bf16_teacher, args.batch_size, aug_seed, buffers, params)
        low = one_pass(method, "bf16", bf16_teacher, args.batch_size, aug_seed, buffers, params)
        record = {"batch": b, "loss_fp32": ref["loss"], "loss_bf16": low["loss"]}
        record["loss_rel_diff"] = abs(low["loss"] - ref["loss"]) / abs(ref["loss"])
        record["term_values_fp32"] = ref["terms"]
        record["term_values_bf16"] = low["terms"]
        record["term_rel_diff"] = {
            t: abs(low["terms"][t] - ref["terms"][t]) / abs(ref["terms"][t]) if ref["terms"][t] else float("nan")
            for t in TERMS
        }
        record["grad"] = {
            part: {
                term: compare(groups(low["grads"][term])[part], groups(ref["grads"][term])[part])
                for term in ("total", *TERMS)
            }
            for part in ("all", "backbone")
        }
        # Each term's share of the total fp32 gradient's norm, to weigh its distortion.
        record["term_norm_share"] = {
            t: ref["grads"][t].norm().item() / ref["grads"]["total"].norm().item() for t in TERMS
        }
        if fp32_teacher is not None:  # the fp32 pipeline: the teacher, too, renders in fp32
            full = one_pass(method, "fp32", fp32_teacher, args.batch_size, aug_seed, buffers, params)
            record["full_pipeline"] = {
                "loss_rel_diff": abs(low["loss"] - full["loss"]) / abs(full["loss"]),
                "grad": {
                    part: compare(groups(low["grads"]["total"])[part], groups(full["grads"]["total"])[part])
                    for part in ("all", "backbone")
                },
                # the teacher's precision alone: fp32 student on a bf16 vs an fp32 teacher
                "teacher_only_grad": {
                    part: compare(groups(ref["grads"]["total"])[part], groups(full["grads"]["total"])[part])
                    for part in ("all", "backbone")
                },
            }
        if b == 0:  # sanity: the same fp32 pass again must give the same gradient
            again = one_pass(method, "fp32", bf16_teacher, args.batch_size, aug_seed, buffers, params)
            record["sanity_fp32_repeat"] = compare(again["grads"]["total"], ref["grads"]["total"])
        fp32_totals.append(ref["grads"]["total"])
        errors.append(low["grads"]["total"] - ref["grads"]["total"])
        # Is the bf16 error along the gradient (a rescaling) or across it?
        record["error_vs_grad_cos"] = {
            part: compare(groups(errors[-1])[part], groups(ref["grads"]["total"])[part])["cos"]
            for part in ("all", "backbone")
        }
        record["seconds"] = time.perf_counter() - started
        per_batch.append(record)
        print(
            f"{method_key} seed{seed} batch {b}: loss rel diff {record['loss_rel_diff']:.2e}, "
            f"cos all {record['grad']['all']['total']['cos']:.5f}, "
            f"rel err all {record['grad']['all']['total']['rel_err']:.4f} ({record['seconds']:.0f} s)",
            flush=True,
        )
    # Minibatch noise: fp32 gradients of consecutive batches (different images and augmentations).
    noise = [
        {part: compare(groups(fp32_totals[i + 1])[part], groups(fp32_totals[i])[part]) for part in ("all", "backbone")}
        for i in range(len(fp32_totals) - 1)
    ]
    # Is the bf16 error systematic? The cosine between the errors of two different batches (pairs of
    # consecutive batches, as the noise reference): near the gradients' own cross-batch cosine, it
    # averages out over steps like minibatch noise; well above it, it is a bias that accumulates.
    error_correlation = [
        {part: compare(groups(errors[i + 1])[part], groups(errors[i])[part])["cos"] for part in ("all", "backbone")}
        for i in range(len(errors) - 1)
    ]
    return {
        "method": method_key,
        "error_cross_batch_cos": error_correlation,
        "seed": seed,
        "checkpoint": str((run_dir / "checkpoints/last.pt").relative_to(ROOT)),
        "step": int(state["step"]),
        "num_parameters": {"all": sum(sizes), "backbone": int(backbone_mask.sum())},
        "batches": per_batch,
        "minibatch_noise": noise,
    }


def mean_std(values: list[float]) -> dict[str, float]:
    values = [v for v in values if not math.isnan(v)]
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def summarize(results: list[dict]) -> dict:
    """Mean and std over all batches of all checkpoints of a method."""
    summary = {}
    for method_key in METHOD_RUNS:
        runs = [r for r in results if r["method"] == method_key]
        if not runs:
            continue
        batches = [b for r in runs for b in r["batches"]]
        entry = {
            "checkpoints": len(runs),
            "batches": len(batches),
            "loss_rel_diff": mean_std([b["loss_rel_diff"] for b in batches]),
            "term_rel_diff": {t: mean_std([b["term_rel_diff"][t] for b in batches]) for t in TERMS},
            "term_norm_share": {t: mean_std([b["term_norm_share"][t] for b in batches]) for t in TERMS},
        }
        for part in ("all", "backbone"):
            for term in ("total", *TERMS):
                for metric in ("cos", "rel_err"):
                    entry[f"{part}/{term}/{metric}"] = mean_std([b["grad"][part][term][metric] for b in batches])
            for metric in ("cos", "rel_err"):
                entry[f"{part}/minibatch_noise/{metric}"] = mean_std(
                    [n[part][metric] for r in runs for n in r["minibatch_noise"]]
                )
                if "full_pipeline" in batches[0]:
                    entry[f"{part}/full_pipeline/{metric}"] = mean_std(
                        [b["full_pipeline"]["grad"][part][metric] for b in batches]
                    )
                    entry[f"{part}/teacher_only/{metric}"] = mean_std(
                        [b["full_pipeline"]["teacher_only_grad"][part][metric] for b in batches]
                    )
            entry[f"{part}/error_vs_grad_cos"] = mean_std([b["error_vs_grad_cos"][part] for b in batches])
            entry[f"{part}/error_cross_batch_cos"] = mean_std(
                [e[part] for r in runs for e in r["error_cross_batch_cos"]]
            )
        entry["sanity_fp32_repeat_cos"] = [b["sanity_fp32_repeat"]["cos"] for b in batches if "sanity_fp32_repeat" in b]
        summary[method_key] = entry
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=256, help="the configs' batch size")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHOD_RUNS))
    parser.add_argument("--teacher-fp32", action="store_true", help="also an fp32 pass on an fp32-rendered teacher")
    parser.add_argument("--out", type=Path, default=HERE / "results/gradients.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()

    # The teacher samples, one per batch, shared by both methods and all checkpoints: the configs' teacher
    # (asset:fashion_mnist_stylegan2, noise_mode random, psi 1), rendered at the runs' precision (bf16).
    base = load_training_config(ROOT / METHOD_RUNS["squeeze"][0], OVERRIDES)
    device = torch.device("cpu")
    generator = load_generator(base.teacher.path)
    teacher_bf16 = build_teacher(base, generator, device)
    samples = []
    for b in range(args.batches):
        bf16_sample = render(teacher_bf16, args.batch_size, 20_000 + b)
        fp32_sample = None
        if args.teacher_fp32:
            teacher_bf16.precision = "fp32"
            fp32_sample = render(teacher_bf16, args.batch_size, 20_000 + b)
            teacher_bf16.precision = "bf16"
        samples.append((bf16_sample, fp32_sample))
    teacher_bf16.taps.remove()
    print(f"rendered {args.batches} teacher batches in {time.perf_counter() - started:.0f} s", flush=True)

    results = []
    for method_key in args.methods:
        for seed in args.seeds:
            if not (RUNS / METHOD_RUNS[method_key][1] / f"seed{seed}/checkpoints/last.pt").is_file():
                print(f"{method_key} seed{seed}: no checkpoint, skipped")
                continue
            results.append(measure_checkpoint(method_key, seed, samples, args))
    report = {
        "settings": {
            "batches": args.batches,
            "batch_size": args.batch_size,
            "seeds": args.seeds,
            "teacher_precision": "bf16 (both passes)"
            + (", plus an fp32-teacher fp32 pass" if args.teacher_fp32 else ""),
            "overrides": OVERRIDES,
        },
        "machine": machine_info(device),
        "seconds": time.perf_counter() - started,
        "summary": summarize(results),
        "runs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report["summary"], indent=1))
    print(f"wrote {args.out} in {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
