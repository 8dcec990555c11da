"""On a CUDA GPU: training, GAN training, the teacher, the probe and the bench run there, agree with
the CPU where they should, and what they write loads on a machine without a GPU.

Skipped without a GPU (CI has none). `scripts/device_check.sh` runs them on a GPU machine, with the
GPU benchmarks; the CPU suite covers the same code paths on the CPU.
"""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from squeeze_span.cli import main
from squeeze_span.generators import load_generator
from squeeze_span.models import load_backbone
from squeeze_span.train.checkpoint import load_checkpoint
from tests.conftest import tiny_run_overrides
from tests.train.test_gan import CONFIG as GAN_CONFIG
from tests.train.test_gan import tiny_overrides as tiny_gan_overrides

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

CONFIG = "configs/fashion_mnist/squeeze_span.yaml"


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_run_trains_on_the_gpu_resumes_there_and_its_files_load_on_a_cpu(
    learnable_fashion_mnist, tiny_teacher, tmp_path, precision
):
    run = tmp_path / "run"
    settings = {"train.device": "cuda", "train.precision": precision, "train.max_steps": 4, "resume": "auto"}
    overrides = tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run, **settings)
    assert main(["train", CONFIG, *overrides]) == 0
    assert main(["train", CONFIG, *overrides, "train.max_steps=8"]) == 0  # resumes at step 4
    lines = metrics(run)
    assert [line["step"] for line in lines] == list(range(1, 9))
    assert all(torch.isfinite(torch.tensor(line["loss"])) for line in lines), lines
    state = load_checkpoint(run / "checkpoints" / "last.pt")  # onto the CPU
    assert state["step"] == 8
    assert all(value.device.type == "cpu" for value in state["method"].values() if isinstance(value, torch.Tensor))
    backbone = load_backbone(run)
    assert backbone(torch.randn(2, 1, 32, 32)).shape[0] == 2


def test_the_teacher_renders_the_same_images_on_the_gpu_as_on_the_cpu(tiny_teacher):
    generator = load_generator(tiny_teacher).eval()
    z = torch.randn(4, generator.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cpu = generator(z, None, noise_mode="const")
        gpu = generator.cuda()(z.cuda(), None, noise_mode="const").cpu()
    # cuDNN may run float32 convolutions in TF32 (10-bit mantissa): agreement to about 1e-3 of the range; 1e-2 allowed.
    assert (gpu - cpu).abs().max() <= 1e-2 * cpu.abs().max()


def test_the_probe_on_the_gpu_scores_as_the_cpu_does(learnable_fashion_mnist, tmp_path):
    scores = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / f"{device}.json"
        args = ["probe", "--random-init", "resnet18_cifar", "--width", "4", "--dataset", "fashion_mnist"]
        args += ["--data", str(learnable_fashion_mnist), "--device", device, "--knn", "--json", str(out)]
        assert main([*args, "--no-progress"]) == 0
        result = json.loads(out.read_text())
        scores[device] = (result["linear"]["top1"], result["knn"]["200"]["top1"])
    assert scores["cuda"][0] > 90.0 and scores["cuda"][1] > 90.0  # the two classes differ in brightness
    assert abs(scores["cuda"][1] - scores["cpu"][1]) <= 2.5  # kNN: at most 2 of the 80 test images differ


def test_a_gan_trains_on_the_gpu_and_its_snapshot_renders_on_a_cpu(learnable_fashion_mnist, tmp_path):
    run = tmp_path / "gan"
    overrides = tiny_gan_overrides(learnable_fashion_mnist, run, **{"train.device": "cuda", "train.precision": "bf16"})
    assert main(["train-gan", GAN_CONFIG, *overrides]) == 0
    lines = metrics(run)
    assert len(lines) == 8 and lines[0]["loss/r1"] > 0
    assert all(torch.isfinite(torch.tensor([line["loss/G"], line["loss/D"]])).all() for line in lines), lines
    generator = load_generator(run / "snapshots" / "network-snapshot-000000.032")
    with torch.no_grad():
        images = generator(torch.randn(2, generator.z_dim), None)
    assert images.shape == (2, 1, 32, 32) and torch.isfinite(images).all()


def test_bench_on_the_gpu_names_it_and_times_every_case(learnable_fashion_mnist, tiny_teacher, tmp_path):
    out = tmp_path / "bench.json"
    args = ["bench", "--teacher", str(tiny_teacher), "--batch", "16", "--device", "cuda", "--steps", "3"]
    args += ["--json", str(out), "model.width=4", "model.proj_dim=16", "method.a_hidden=16"]
    assert main([*args, f"data.root={learnable_fashion_mnist}"]) == 0
    result = json.loads(out.read_text())
    assert result["machine"]["gpu"] == torch.cuda.get_device_name(0)
    assert all(result[key] > 0 for key in result if key.endswith("_img_s"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _nccl_worker(rank, port, overrides):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    assert main(["train", CONFIG, *overrides]) == 0
    torch.distributed.destroy_process_group()


# NCCL refuses two ranks on one GPU, so this needs two.
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_ranks_on_two_gpus_train_with_nccl(learnable_fashion_mnist, tiny_teacher, tmp_path):
    run = tmp_path / "ddp"
    overrides = tiny_run_overrides(
        learnable_fashion_mnist, tiny_teacher, run, **{"train.device": "cuda", "train.precision": "bf16"}
    )
    mp.spawn(_nccl_worker, args=(_free_port(), overrides), nprocs=2, join=True)
    lines = metrics(run)
    assert [line["step"] for line in lines] == [1, 2, 3, 4]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
