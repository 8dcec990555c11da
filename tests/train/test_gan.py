"""train-gan: a tiny run writes loadable snapshots; resume continues exactly, with changed settings or
refusing them; DiffAugment; padding."""

import json

import pytest
import torch

from squeeze_span.cli import main
from squeeze_span.config import GanTrainingConfig, load_config
from squeeze_span.data.diffaugment import DiffAugment, cutout, translate
from squeeze_span.errors import ConfigError
from squeeze_span.generators import load_generator, load_networks
from squeeze_span.train.checkpoint import load_checkpoint
from squeeze_span.train.gan import (
    GanTrainer,
    ema_beta,
    gan_resolution,
    real_images_for_gan,
    snapshot_name,
)

CONFIG = "configs/fashion_mnist/gan.yaml"


def tiny_overrides(data, output_dir, **extra):
    """Shrink configs/fashion_mnist/gan.yaml to a 16x16 run of seconds (28x28 data: resolution 32 -> 16 not allowed)."""
    settings = {
        "data.root": data,
        "output_dir": output_dir,
        "generator.z_dim": 8,
        "generator.w_dim": 8,
        "generator.synthesis_kwargs.channel_base": 64,
        "generator.synthesis_kwargs.channel_max": 8,
        "discriminator.channel_base": 64,
        "discriminator.channel_max": 8,
        "train.batch_size": 4,
        "train.total_kimg": 0.032,
        "train.precision": "fp32",
        "train.device": "cpu",
        "train.progress": False,
        "train.log_every": 1,
        "train.checkpoint_every": 3,
        "train.snapshot_kimg": 0.016,
        "train.grid_size": 4,
        "loss.r1_interval": 2,
        "loss.r1_gamma": 1.0,
        "augment.diffaugment": True,
    }
    settings.update(extra)
    return [f"{key}={'null' if value is None else value}" for key, value in settings.items()]


def make_trainer(overrides):
    return GanTrainer(load_config(CONFIG, overrides, GanTrainingConfig), command=["test"])


def test_a_tiny_run_writes_loadable_snapshots_and_finite_losses(learnable_fashion_mnist, tmp_path):
    run = tmp_path / "run"
    record = make_trainer(tiny_overrides(learnable_fashion_mnist, run)).fit()
    assert record["finished"] and record["step"] == 8 and record["kimg"] == pytest.approx(0.032)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == list(range(1, 9))
    for line in lines:
        for name in ("loss/G", "loss/D", "loss/r1", "images_per_s"):
            assert torch.isfinite(torch.tensor(line[name])), (name, line)
    assert lines[0]["loss/r1"] > 0  # the R1 step ran at step 0
    assert sorted(path.name for path in (run / "snapshots").iterdir()) == [
        "network-snapshot-000000.016",
        "network-snapshot-000000.032",
    ]
    snapshot = run / "snapshots" / "network-snapshot-000000.032"
    assert {"G_ema.safetensors", "G.json", "D.safetensors", "samples.png", "snapshot.json"} <= {
        p.name for p in snapshot.iterdir()
    }
    networks = load_networks(snapshot)
    assert set(networks) == {"G_ema", "G", "D"}
    generator = load_generator(snapshot)
    assert generator.img_resolution == 32 and generator.img_channels == 1  # 28x28 data in a 32x32 generator
    with torch.no_grad():
        images = generator(torch.randn(3, generator.z_dim), None)
        logits = networks["D"](images, None)
    assert images.shape == (3, 1, 32, 32) and logits.shape == (3, 1)
    assert images.abs().max() < 10  # the tiny generator's output sits around [-1, 1]
    state = load_checkpoint(run / "checkpoints" / "last.pt")  # weights_only=True
    assert state["step"] == 8 and state["nimg"] == 32
    assert {"G", "D", "G_ema", "G_opt", "D_opt", "stream"} <= set(state)
    assert set(state["rng"][0]) == {"python", "numpy", "torch", "cuda", "latent", "augmentation"}


def test_resume_in_two_invocations_equals_one_run(learnable_fashion_mnist, tmp_path):
    pieces = tmp_path / "pieces"
    first = make_trainer(
        tiny_overrides(learnable_fashion_mnist, pieces, **{"train.total_kimg": 0.02, "resume": "auto"})
    )
    assert first.fit()["step"] == 5  # stops between checkpoints: the last step is saved anyway
    second = make_trainer(tiny_overrides(learnable_fashion_mnist, pieces, resume="auto"))
    second.fit()
    straight = make_trainer(tiny_overrides(learnable_fashion_mnist, tmp_path / "straight"))
    straight.fit()
    for name in ("G", "D", "G_ema"):
        expected = getattr(straight, name).state_dict()
        for key, value in getattr(second, name).state_dict().items():
            assert torch.equal(value, expected[key]), f"{name}.{key} differs after resuming"
    steps = [json.loads(line)["step"] for line in (pieces / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
    files = {path: path.read_bytes() for path in pieces.rglob("*") if path.is_file()}
    again = make_trainer(tiny_overrides(learnable_fashion_mnist, pieces, resume="auto")).fit()
    assert again == {"step": 8, "kimg": 0.032, "already_complete": True}
    assert {path: path.read_bytes() for path in pieces.rglob("*") if path.is_file()} == files


def test_resume_takes_a_new_learning_rate_and_refuses_a_new_batch_size(learnable_fashion_mnist, tmp_path):
    run = tmp_path / "run"
    make_trainer(tiny_overrides(learnable_fashion_mnist, run, **{"train.total_kimg": 0.02})).fit()
    changed = {"optimizer.g_lr": 0.001, "loss.r1_interval": 4, "resume": "auto"}
    resumed = make_trainer(tiny_overrides(learnable_fashion_mnist, run, **changed))
    resumed.fit()
    c = 4 / 5  # lazy regularization's factor for D
    assert resumed.G_opt.param_groups[0]["lr"] == 0.001
    assert resumed.D_opt.param_groups[0]["lr"] == pytest.approx(0.0025 * c)
    assert resumed.D_opt.param_groups[0]["betas"] == pytest.approx((0.0, 0.99**c))
    assert (run / "changes.txt").read_text() == (
        "step 5: optimizer.g_lr 0.0025 -> 0.001, loss.r1_interval 2 -> 4, train.total_kimg 0.02 -> 0.032\n"
    )
    with pytest.raises(ConfigError, match="trained with train.batch_size=4, which cannot change on resume"):
        make_trainer(tiny_overrides(learnable_fashion_mnist, run, **{"train.batch_size": 8, "resume": "auto"})).fit()


def test_a_second_run_in_a_busy_folder_is_refused(learnable_fashion_mnist, tmp_path):
    first = make_trainer(tiny_overrides(learnable_fashion_mnist, tmp_path / "run"))
    first.run.open(step=0)
    first.run.log({"step": 1, "loss": 1.0})  # a folder that holds a run, and a run going on in it
    with pytest.raises(ConfigError, match="is in use by another run"):
        make_trainer(tiny_overrides(learnable_fashion_mnist, tmp_path / "run")).fit()
    first.run.close()


def test_snapshot_names_never_collide_and_sort_in_order():
    counts = [0, 16, 32, 999, 1000, 1016, 50_000]
    names = [snapshot_name(nimg) for nimg in counts]
    assert names == [
        "network-snapshot-000000",
        "network-snapshot-000000.016",
        "network-snapshot-000000.032",
        "network-snapshot-000000.999",
        "network-snapshot-000001",
        "network-snapshot-000001.016",
        "network-snapshot-000050",
    ]
    assert sorted(names) == names


def test_max_seconds_stops_with_a_checkpoint_and_a_snapshot(learnable_fashion_mnist, tmp_path, capsys):
    run = tmp_path / "run"
    overrides = tiny_overrides(learnable_fashion_mnist, run, **{"train.max_seconds": 1e-9, "train.snapshot_kimg": 100})
    assert main(["train-gan", CONFIG, *overrides]) == 0
    assert "stopped (train.max_seconds)" in capsys.readouterr().out
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 1
    assert (run / "snapshots" / "network-snapshot-000000.004" / "G_ema.safetensors").exists()


def test_unknown_key_and_torchrun_are_config_errors(learnable_fashion_mnist, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="did you mean 'loss.r1_gamma'"):
        load_config(CONFIG, ["loss.r1_gama=1"], GanTrainingConfig)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="single process"):
        make_trainer(tiny_overrides(learnable_fashion_mnist, tmp_path / "run"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("generator.synthesis_kwargs.channel_bse=3", "generator: 'channel_bse' is not a setting of the Generator"),
        ("discriminator.block_kwargs.foo=1", "discriminator: 'foo' is not a setting of the Discriminator"),
        ("generator.mapping_kwargs.num_layers=0", r"generator.mapping_kwargs.num_layers=0 is out of range"),
        ("discriminator.epilogue_kwargs.mbstd_group_size=-1", r"mbstd_group_size=-1 is out of range; it must be"),
    ],
)
def test_a_bad_key_or_value_in_the_networks_kwargs_is_one_config_error(
    learnable_fashion_mnist, tmp_path, override, message
):
    with pytest.raises(ConfigError, match=message):
        make_trainer(tiny_overrides(learnable_fashion_mnist, tmp_path / "run") + [override])


def test_ema_beta_ramps_up_then_follows_the_half_life():
    assert ema_beta(32, 0, 10.0, 0.05) == 0.0  # at the start G_ema is G
    assert ema_beta(32, 100_000, 10.0, 0.05) == pytest.approx(0.5 ** (32 / 5000))
    assert ema_beta(32, 10_000_000, 10.0, 0.05) == pytest.approx(0.5 ** (32 / 10_000))
    assert ema_beta(32, 0, 10.0, None) == pytest.approx(0.5 ** (32 / 10_000))


def test_fashion_mnist_28_is_padded_to_32_in_the_centre_with_minus_one():
    images = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    images[1] = 0
    assert gan_resolution((28, 28), None) == 32
    padded = real_images_for_gan(images, 32)
    assert padded.shape == (2, 1, 32, 32) and padded.dtype == torch.float32
    assert torch.equal(padded[0, 0, 2:30, 2:30], torch.ones(28, 28))
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert torch.equal(padded[:, :, border], torch.full((2, 1, 32 * 32 - 28 * 28), -1.0))
    assert padded[1].eq(-1).all()
    with pytest.raises(ConfigError, match="smaller than the 28px"):
        gan_resolution((28, 28), 16)


def test_diffaugment_shapes_identity_when_off_and_independent_per_image():
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(64, 3, 16, 16)
    assert DiffAugment(enabled=False)(images, generator) is images
    out = DiffAugment()(images, generator)
    assert out.shape == images.shape and out.dtype == images.dtype
    # Translation: every image is its own shift of the input, |dy|, |dx| <= 2 for 16 px at 1/8.
    ones = torch.ones(64, 1, 16, 16)
    shifted = translate(ones, 0.125, generator)
    kept_rows = shifted[:, 0, :, 8].sum(dim=1)  # 16 - |dy| rows survive
    assert kept_rows.min() >= 14 and kept_rows.unique().numel() > 1
    # Cutout: an 8x8 square (clipped at the border) zeroed, at a different place per image.
    cut = cutout(ones, 0.5, generator)
    zeros = (cut == 0).sum(dim=[1, 2, 3])
    assert zeros.max() == 64 and zeros.min() >= 16
    assert len({tuple(m.flatten().tolist()) for m in (cut == 0)}) > 32
    # Differentiable: gradients reach the input.
    source = torch.randn(4, 1, 16, 16, requires_grad=True)
    DiffAugment()(source, generator).sum().backward()
    assert source.grad is not None and source.grad.abs().sum() > 0


def test_translate_moves_pixels_and_fills_with_zeros():
    image = torch.arange(1.0, 17.0).view(1, 1, 4, 4)
    generator = torch.Generator().manual_seed(3)
    state = generator.get_state()
    out = translate(image, 0.25, generator)  # shifts of at most 1 pixel
    generator.set_state(state)
    dy = int(torch.randint(-1, 2, (1, 1, 1), generator=generator))
    dx = int(torch.randint(-1, 2, (1, 1, 1), generator=generator))
    expected = torch.zeros(4, 4)
    for y in range(4):
        for x in range(4):
            if 0 <= y - dy < 4 and 0 <= x - dx < 4:
                expected[y, x] = image[0, 0, y - dy, x - dx]
    assert torch.equal(out[0, 0], expected)


def test_a_gan_run_is_never_replaced_without_overwrite(learnable_fashion_mnist, tmp_path, capsys):
    from squeeze_span.cli import main

    run = tmp_path / "run"
    args = ["train-gan", CONFIG, *tiny_overrides(learnable_fashion_mnist, run)]
    assert main(args) == 0
    snapshots = sorted(path.name for path in (run / "snapshots").iterdir())
    capsys.readouterr()
    assert main(args) == 2
    assert f"output_dir {run} already holds a run" in capsys.readouterr().err
    assert main([*args, "overwrite=true", "train.total_kimg=0.016"]) == 0
    assert sorted(path.name for path in (run / "snapshots").iterdir()) == snapshots[:1]  # the old ones are gone
