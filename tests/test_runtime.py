import pytest
import torch

from squeeze_span.cli import main
from squeeze_span.errors import ConfigError
from squeeze_span.runtime import resolve_device


def pretend_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_auto_and_cpu_resolve_on_any_machine(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    pretend_gpus(monkeypatch, 0)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")
    assert not torch.backends.cudnn.benchmark
    pretend_gpus(monkeypatch, 2)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda", 1)
    assert torch.backends.cudnn.benchmark  # a GPU's loops repeat their shapes: cuDNN picks its fastest kernels


@pytest.mark.parametrize(
    ("device", "gpus", "message"),
    [
        ("tpu", 0, "device 'tpu' is unknown; use auto, cpu, cuda, cuda:N or mps"),
        ("meta", 0, "device 'meta' is unknown; use auto, cpu, cuda, cuda:N or mps"),
        ("cuda:x", 0, "device 'cuda:x' is unknown; use auto, cpu, cuda, cuda:N or mps"),
        ("cuda", 0, "device 'cuda' needs a CUDA GPU, and torch sees none; use device=cpu or auto"),
        ("cuda:0", 0, "device 'cuda:0' needs a CUDA GPU, and torch sees none; use device=cpu or auto"),
        ("cuda:2", 2, "device 'cuda:2' names GPU 2, but torch sees 2; use device=cuda:0 to cuda:1, cpu or auto"),
    ],
)
def test_a_device_this_machine_lacks_is_a_config_error(device, gpus, message, monkeypatch):
    pretend_gpus(monkeypatch, gpus)
    with pytest.raises(ConfigError) as error:
        resolve_device(device)
    assert str(error.value) == message


def test_mps_where_absent_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="^device 'mps' needs Apple's MPS, which this machine lacks; use device=cpu"):
        resolve_device("mps")


def test_train_on_cuda_without_a_gpu_is_one_line_and_status_2(monkeypatch, tmp_path, capsys):
    pretend_gpus(monkeypatch, 0)
    args = ["configs/fashion_mnist/squeeze_span.yaml", "train.device=cuda", f"output_dir={tmp_path / 'run'}"]
    assert main(["train", *args]) == 2
    assert capsys.readouterr().err == (
        "ConfigError: device 'cuda' needs a CUDA GPU, and torch sees none; use device=cpu or auto\n"
    )


def test_probe_on_a_gpu_beyond_the_count_is_one_line_and_status_2(monkeypatch, capsys):
    pretend_gpus(monkeypatch, 1)
    assert main(["probe", "--random-init", "resnet18_cifar", "--dataset", "fashion_mnist", "--device", "cuda:3"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("ConfigError: device 'cuda:3' names GPU 3, but torch sees 1")
