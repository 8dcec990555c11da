"""Two processes on CPU with gloo: DDP, the global-batch losses and our cross-rank BatchNorm."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from squeeze_span.data import BatchAugmentation
from squeeze_span.errors import ConfigError
from squeeze_span.train.distributed import init_distributed
from tests.conftest import tiny_run_overrides
from tests.train.test_trainer import make_trainer


def deterministic(trainer) -> None:
    """Augmentation without randomness, so that 2 x B/2 and 1 x B see the same views."""
    size, mean, std = trainer.augmentation.size, trainer.augmentation.mean, trainer.augmentation.std
    trainer.method.context.augmentation = BatchAugmentation(
        size, mean, std, scale=(1, 1), ratio=(1, 1), jitter_prob=0, grayscale_prob=0, flip_prob=0
    )


def one_step(overrides, config, out_path) -> None:
    trainer = make_trainer(overrides, config)
    deterministic(trainer)
    trainer.fit()
    torch.save({k: v.detach().clone() for k, v in trainer.method.state_dict().items()}, out_path)


def worker(rank, world_size, port, overrides, config, out_dir) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    one_step(overrides, config, out_dir / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# VICReg's batch statistics over the gathered batch; SimSiam's BatchNorms across ranks and its two optimizer groups.
@pytest.mark.parametrize(
    "name, method, method_settings",
    [("squeeze_span", "squeeze_span", {"method.syn_ratio": 0.0}), ("simsiam_real", "simsiam", {})],
    ids=["squeeze_span-alpha-0", "simsiam"],
)
def test_two_ranks_of_half_a_batch_equal_one_process_of_the_whole(
    learnable_fashion_mnist, tmp_path, name, method, method_settings
):
    config = f"configs/fashion_mnist/{name}.yaml"
    settings = {
        **method_settings,
        "train.max_steps": 1,
        "train.checkpoint_every": 1000,
        "optimizer.base_lr": 10.0,  # a large step, so that a wrong gradient shows in the weights
    }
    overrides = tiny_run_overrides(learnable_fashion_mnist, None, tmp_path / "run", method=method, **settings)
    mp.spawn(worker, args=(2, free_port(), overrides, config, tmp_path), nprocs=2, join=True)
    single_overrides = [
        o if not o.startswith("output_dir=") else f"output_dir={tmp_path / 'single'}" for o in overrides
    ]
    one_step(single_overrides, config, tmp_path / "single.pt")

    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    single = torch.load(tmp_path / "single.pt")
    initial = make_trainer(single_overrides, config).method.state_dict()
    moved = 0
    for name, value in single.items():
        assert torch.equal(rank0[name], rank1[name]), f"{name} differs between the ranks"
        torch.testing.assert_close(rank0[name], value, rtol=1e-3, atol=1e-4, msg=lambda m, name=name: f"{name}: {m}")
        moved += not torch.equal(initial[name], value)
    assert moved > 10  # the step changed the weights, so the comparison means something


def test_a_local_rank_beyond_the_gpus_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    with pytest.raises(ConfigError, match=r"^device 'cuda:3' names GPU 3, but torch sees 2"):
        init_distributed("cuda")
