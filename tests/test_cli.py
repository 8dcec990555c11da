import errno
import json
import os
from pathlib import Path

import pytest
import torch

from squeeze_span.cli import main
from squeeze_span.models import resnet18_cifar, save_backbone
from squeeze_span.models.preprocessing import Preprocessing
from tests.conftest import tiny_run_overrides

CONFIG = "configs/fashion_mnist/squeeze_span.yaml"


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "probe" in capsys.readouterr().out


def test_probe_random_init_on_real_format_data(learnable_fashion_mnist, tmp_path, capsys):
    out = tmp_path / "probe.json"
    args = ["probe", "--random-init", "resnet18_cifar", "--width", "4", "--dataset", "fashion_mnist"]
    code = main([*args, "--data", str(learnable_fashion_mnist), "--knn", "--json", str(out), "--no-progress"])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["linear"]["top1"] > 95.0
    assert set(result["knn"]) == {"20", "200"} and result["knn"]["200"]["top1"] > 95.0
    assert result["image_size"] == 32 and result["protocol"] == "fast"
    printed = capsys.readouterr().out
    assert "linear" in printed and f"{result['linear']['top1']:.2f}" in printed


def test_probe_raw_pixels_the_floor_of_table_2(learnable_fashion_mnist, tmp_path):
    out = tmp_path / "probe.json"
    args = ["probe", "--raw-pixels", "--dataset", "fashion_mnist", "--data", str(learnable_fashion_mnist)]
    assert main([*args, "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["backbone"] == "raw pixels" and result["linear"]["top1"] > 95.0  # brightness tells the classes apart
    assert main(["probe", "--raw-pixels", "--random-init", "resnet18_cifar", "--dataset", "fashion_mnist"]) == 2


def test_the_fast_probe_shows_its_fitting_unless_told_not_to(learnable_fashion_mnist, capsys):
    args = ["probe", "--raw-pixels", "--dataset", "fashion_mnist", "--data", str(learnable_fashion_mnist)]
    assert main(args) == 0
    assert "linear probe (fast): 100%" in capsys.readouterr().err
    assert main([*args, "--no-progress"]) == 0
    assert "linear probe (fast)" not in capsys.readouterr().err


def test_probe_an_exported_backbone(learnable_fashion_mnist, tmp_path):
    torch.manual_seed(0)
    path = save_backbone(resnet18_cifar(in_channels=1, width=4), tmp_path / "backbone.safetensors")
    out = tmp_path / "probe.json"
    args = ["probe", str(path), "--dataset", "fashion_mnist", "--data", str(learnable_fashion_mnist)]
    assert main([*args, "--json", str(out), "--no-progress", "--precision", "fp32"]) == 0
    assert json.loads(out.read_text())["linear"]["top1"] > 95.0


def test_missing_dataset_is_one_line_and_status_2(tmp_path, capsys):
    args = ["probe", "--random-init", "resnet18_cifar", "--dataset", "cifar10", "--data", str(tmp_path / "nowhere")]
    assert main(args) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith(f"DatasetError: {tmp_path}/nowhere/cifar-10-batches-py is missing; download CIFAR-10")


def test_missing_checkpoint_is_one_line_and_status_2(tmp_path, capsys):
    assert main(["probe", str(tmp_path / "none.safetensors"), "--dataset", "fashion_mnist"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("CheckpointError:")


def test_convert_gan_then_sample_gan_writes_a_grid(stylegan2_fixture, tmp_path, capsys):
    out_dir = tmp_path / "teacher"
    assert main(["convert-gan", str(stylegan2_fixture / "tiny_uncond.pkl"), str(out_dir)]) == 0
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "D.json",
        "D.safetensors",
        "G.json",
        "G.safetensors",
        "G_ema.json",
        "G_ema.safetensors",
    ]
    grid = tmp_path / "grid.png"
    assert main(["sample-gan", str(out_dir), "--n", "6", "--columns", "3", "--out", str(grid)]) == 0
    from PIL import Image

    with Image.open(grid) as image:
        assert image.size == (3 * 34 + 2, 2 * 34 + 2) and image.mode == "RGB"


def test_convert_gan_refuses_an_unsafe_pickle_in_one_line(tmp_path, capsys):
    import os
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"G": Payload()}))
    assert main(["convert-gan", str(evil), str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("UnsafePickleError:") and "posix.system" in error and error.count("\n") == 1
    assert not (tmp_path / "pwned").exists()


def test_train_then_export_a_backbone_with_torchvision_names(learnable_fashion_mnist, tiny_teacher, tmp_path, capsys):
    from squeeze_span.models import load_backbone

    run = tmp_path / "run"
    assert main(["train", CONFIG, *tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run)]) == 0
    assert "step 4: loss" in capsys.readouterr().out
    out = tmp_path / "backbone.safetensors"
    assert main(["export", str(run), str(out)]) == 0
    exported = load_backbone(out)
    assert "layer4.1.bn2.running_var" in exported.state_dict() and exported.config["in_channels"] == 1
    for name, value in load_backbone(run).state_dict().items():
        assert torch.equal(value, exported.state_dict()[name])
    # The run trained on Fashion-MNIST's 32x32 views, normalised by its statistics: the export says so.
    assert exported.preprocessing == Preprocessing(mean=(0.286,), std=(0.353,), image_size=32)
    assert capsys.readouterr().out.splitlines() == [
        f"wrote {out}: resnet18_cifar, width 4, 1 input channel",
        "  input: 32x32 images, normalised by mean (0.2860) and std (0.3530)",
        f"  load it with squeeze_span.models.load_backbone({str(out)!r}); its .preprocessing(images) prepares input",
    ]


def test_export_of_a_run_folder_with_no_checkpoint_yet_says_so(tmp_path, capsys):
    from squeeze_span.config import to_yaml
    from squeeze_span.methods import load_training_config

    run = tmp_path / "run"
    run.mkdir()  # as a run stopped before its first checkpoint leaves it
    (run / "config.yaml").write_text(to_yaml(load_training_config(CONFIG, [f"output_dir={run}"])))
    assert main(["export", str(run), str(tmp_path / "b.safetensors")]) == 2
    assert capsys.readouterr().err == (
        f"CheckpointError: {run} is a run folder with no checkpoint yet, not a backbone; train it, or resume it "
        f"(`squeeze-span train {run}/config.yaml resume=auto`), then pass it\n"
    )


def test_fd_names_its_metric_honestly(learnable_fashion_mnist, tiny_teacher, tmp_path, capsys):
    torch.manual_seed(0)
    classifier = save_backbone(resnet18_cifar(in_channels=1, width=4), tmp_path / "classifier.safetensors")
    args = [
        "fd",
        str(tiny_teacher),
        "--dataset",
        "fashion_mnist",
        "--data",
        str(learnable_fashion_mnist),
        "--classifier",
        str(classifier),
        "--n",
        "40",
        "--no-progress",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert (
        out.startswith(f"FD-fashion_mnist-classifier of {tiny_teacher} against fashion_mnist train")
        and "FID" not in out
    )
    assert main([*args[:-5], "--inception", str(tmp_path / "missing.pth"), "--no-progress"]) == 2
    assert "missing.pth is missing; FID needs pt_inception-2015-12-05" in capsys.readouterr().err


PROBE = ["probe", "--random-init", "resnet18_cifar", "--dataset", "fashion_mnist"]


@pytest.mark.parametrize(
    ("args", "flag", "refusal"),
    [
        (["sample-gan", "G.pkl", "--n", "0"], "--n", "0 is out of range; it must be an integer >= 1"),
        (["sample-gan", "G.pkl", "--columns", "0"], "--columns", "0 is out of range; it must be an integer >= 1"),
        (
            ["sample-gan", "G.pkl", "--truncation", "nan"],
            "--truncation",
            "nan is out of range; it must be a finite number",
        ),
        ([*PROBE, "--batch-size", "0"], "--batch-size", "0 is out of range; it must be an integer >= 1"),
        ([*PROBE, "--width", "0"], "--width", "0 is out of range; it must be an integer >= 1"),
        ([*PROBE, "--size", "0"], "--size", "0 is out of range; it must be an integer >= 1"),
        ([*PROBE, "--size", "big"], "--size", "'big' is not an integer >= 1"),
        (
            ["figure2", "G.pkl", "--dataset", "fashion_mnist", "--n", "3"],
            "--n",
            "3 is out of range; it must be an integer >= 4",
        ),
        (
            ["fd", "G.pkl", "--dataset", "fashion_mnist", "--n", "1"],
            "--n",
            "1 is out of range; it must be an integer >= 2",
        ),
        (["demo", "--minutes", "0"], "--minutes", "0 is out of range; it must be a finite number > 0"),
        (["demo", "--minutes", "-1"], "--minutes", "-1 is out of range; it must be a finite number > 0"),
    ],
)
def test_a_bad_argument_is_one_line_and_status_2(args, flag, refusal, capsys):
    assert main(args) == 2
    prog = f"squeeze-span {args[0]}"
    assert capsys.readouterr().err == f"UsageError: {prog}: argument {flag}: {refusal}; see {prog} --help\n"


def test_a_bare_command_prints_the_help_to_stdout_and_exits_2(capsys):
    assert main([]) == 2
    printed = capsys.readouterr()
    assert printed.out.startswith("usage: squeeze-span [-h] COMMAND ...") and "probe-discriminator" in printed.out
    assert printed.err == ""


@pytest.mark.parametrize(
    ("command", "hint"),
    [
        ("prob", "did you mean probe?"),
        ("train_gan", "did you mean train-gan?"),
        ("figure", "did you mean figure2?"),
        ("xyzzy", "see squeeze-span --help for the commands"),
    ],
)
def test_a_misspelt_command_names_the_closest_in_one_line(command, hint, capsys):
    assert main([command, "--dataset", "fashion_mnist"]) == 2
    assert capsys.readouterr().err == f"UsageError: squeeze-span: unknown command {command!r}; {hint}\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "run"], "squeeze-span export: the following arguments are required: OUT.safetensors"),
        (["sweep", "plan.yaml", "--onyl", "a"], "squeeze-span: unrecognized arguments: --onyl a"),
        (["--version"], "squeeze-span: the following arguments are required: COMMAND"),
    ],
)
def test_argparse_refusals_are_usage_errors_in_one_line(args, message, capsys):
    assert main(args) == 2
    prog = message.split(":")[0]
    assert capsys.readouterr().err == f"UsageError: {message}; see {prog} --help\n"


def test_an_output_dir_that_is_a_file_is_one_line_and_keeps_the_file(
    learnable_fashion_mnist, tiny_teacher, tmp_path, capsys
):
    blocker = tmp_path / "run"
    blocker.write_text("my notes")
    assert main(["train", CONFIG, *tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, blocker)]) == 2
    assert capsys.readouterr().err == (
        f"OSError: {blocker}: File exists; a folder is needed there; move what is there, or choose another path\n"
    )
    assert blocker.read_text() == "my notes"


@pytest.mark.parametrize(
    ("code", "fix"),
    [
        (errno.EROFS, "choose a writable output_dir or output path"),
        (errno.ENOSPC, "free space on that disk, or choose an output_dir or output path on another"),
    ],
    ids=["read-only", "full"],
)
def test_a_read_only_or_full_disk_names_the_file_in_one_line(
    code, fix, learnable_fashion_mnist, tiny_teacher, tmp_path, monkeypatch, capsys
):
    # Tests run as root, whom chmod does not stop: the file system's refusal is simulated at the first write.
    def refuse(path, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(Path, "write_text", refuse)
    run = tmp_path / "run"
    assert main(["train", CONFIG, *tiny_run_overrides(learnable_fashion_mnist, tiny_teacher, run)]) == 2
    error = capsys.readouterr().err
    # A full disk also says how much was written and how much is free: "... device (nothing fit; 9.0 MiB free); fix"
    assert error.startswith(f"OSError: {run / 'config.yaml'}: {os.strerror(code)}") and error.endswith(f"; {fix}\n")
    assert error.count("\n") == 1


@pytest.fixture
def exported(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_backbone(resnet18_cifar(in_channels=1, width=4), tmp_path / "backbone.safetensors")


def test_export_onto_a_folder_is_one_line_and_leaves_the_folder_alone(exported, tmp_path, capsys):
    folder = tmp_path / "out.safetensors"
    folder.mkdir()
    assert main(["export", str(exported), str(folder)]) == 2
    assert capsys.readouterr().err == f"OSError: {folder}: Is a directory; pass a file path, not a folder\n"
    assert list(folder.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == [exported.name, folder.name]


def test_a_full_disk_during_export_keeps_the_previous_file(exported, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"the previous export")

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)  # tests/test_full_disk.py does it on a real full disk
    assert main(["export", str(exported), str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"OSError: {out}: No space left on device (nothing fit;")
    assert out.read_bytes() == b"the previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == [exported.name, out.name]  # no temporary file left


@pytest.mark.parametrize("name", ["b.pt", "backbone.bin", "backbone"])
def test_an_export_under_another_suffix_than_safetensors_is_refused(exported, tmp_path, capsys, name):
    """probe reads a .pt as a torch checkpoint, so safetensors under that name would be refused there."""
    out = tmp_path / name
    assert main(["export", str(exported), str(out)]) == 2
    stem = name.split(".")[0]
    assert capsys.readouterr().err == (
        f"CheckpointError: {out}: a backbone is written as safetensors, which readers know by its suffix; "
        f"name it {stem}.safetensors\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [exported.name]


def test_a_convert_gan_folder_with_a_bad_init_kwarg_is_one_line(tiny_teacher, tmp_path, capsys):
    description_path = tiny_teacher / "G_ema.json"
    description = json.loads(description_path.read_text())
    description["init_kwargs"]["img_channels"] = -3
    description_path.write_text(json.dumps(description))
    assert main(["sample-gan", str(tiny_teacher), "--out", str(tmp_path / "grid.png")]) == 2
    assert capsys.readouterr().err == (
        f"CheckpointError: {description_path}: init kwarg img_channels=-3 is out of range; "
        "it must be an integer in [1, 16]; fix the file, or convert the pickle again\n"
    )


FACTORY_MODULE = """
import torch
from torch import nn


class ImagesOnly(nn.Module):
    \"\"\"A generator with StyleGAN's call and attributes, but none of its modules.\"\"\"

    z_dim, c_dim, img_channels, img_resolution = 4, 0, 3, 8

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3 * 8 * 8)

    def forward(self, z, c):
        return torch.tanh(self.fc(z)).view(-1, 3, 8, 8)


class WithMapping(ImagesOnly):
    def __init__(self):
        super().__init__()
        self.mapping = nn.Identity()


def images_only():
    torch.manual_seed(0)
    return ImagesOnly()


def with_mapping():
    return WithMapping()
"""


@pytest.fixture
def factory_module(tmp_path, monkeypatch) -> str:
    (tmp_path / "tiny_factory_generators.py").write_text(FACTORY_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "tiny_factory_generators"


def test_sample_gan_samples_a_factory_generator(factory_module, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    assert main(["sample-gan", f"{factory_module}:images_only", "--n", "4", "--columns", "2", "--out", str(grid)]) == 0
    assert capsys.readouterr().out == f"wrote {grid}: 4 samples of (3, 8, 8)\n"
    from PIL import Image

    with Image.open(grid) as image:
        assert image.size == (2 * 10 + 2, 2 * 10 + 2)


def test_sample_gan_writes_grid_png_in_the_working_directory_and_says_where(
    factory_module, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    assert main(["sample-gan", f"{factory_module}:images_only", "--n", "4"]) == 0
    assert capsys.readouterr().out == f"wrote {tmp_path.resolve() / 'grid.png'}: 4 samples of (3, 8, 8)\n"


@pytest.mark.parametrize(
    ("factory", "missing"),
    [
        (
            "images_only",
            "a 'mapping' module (for the latent panel) and 'synthesis.b<R>' blocks (for the G-features panel)",
        ),
        ("with_mapping", "'synthesis.b<R>' blocks (for the G-features panel)"),
    ],
)
def test_figure2_names_the_taps_a_factory_generator_lacks(factory_module, factory, missing, tmp_path, capsys):
    args = [
        "figure2",
        f"{factory_module}:{factory}",
        "--dataset",
        "fashion_mnist",
        "--n",
        "8",
        "--out",
        str(tmp_path / "f.png"),
    ]
    assert main([*args, "--no-progress"]) == 2
    assert capsys.readouterr().err == (
        f"ConfigError: figure 2 taps StyleGAN's modules, and this {factory.title().replace('_', '')} lacks {missing}; "
        "use a StyleGAN2 generator (a .pkl, a convert-gan folder or a factory returning one)\n"
    )


def test_probe_with_few_labels_and_both_knn_sizes(learnable_fashion_mnist, tmp_path, capsys):
    out = tmp_path / "probe.json"
    args = ["probe", "--random-init", "resnet18_cifar", "--width", "4", "--dataset", "fashion_mnist"]
    args += ["--data", str(learnable_fashion_mnist), "--labels-per-class", "10", "--draws", "3", "--knn", "20"]
    assert main([*args, "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    few = result["few_labels"]["10"]
    assert len(few["draws"]) == 3 and few["top1"] > 90  # brightness separates the two classes from 10 labels
    assert set(result["knn"]) == {"20"}
    assert "linear, 10 per class" in capsys.readouterr().out


def test_few_labels_need_two_per_class(learnable_fashion_mnist, capsys):
    args = ["probe", "--raw-pixels", "--dataset", "fashion_mnist", "--data", str(learnable_fashion_mnist)]
    assert main([*args, "--labels-per-class", "1"]) == 2
    assert "--labels-per-class" in capsys.readouterr().err


def commands() -> dict:
    """Each command's name and parser, as build_parser makes them."""
    from squeeze_span.cli import build_parser

    parser = build_parser()
    (action,) = (action for action in parser._actions if action.dest == "==SUPPRESS==" and action.choices)
    return dict(action.choices)


@pytest.mark.parametrize("name", sorted(commands()))
def test_every_option_has_help_and_every_command_examples_that_parse(name):
    from squeeze_span.cli import build_parser

    parser = commands()[name]
    assert [action.dest for action in parser._actions if not action.help] == []
    assert parser.epilog.startswith("examples:\n  squeeze-span ")
    for line in parser.epilog.splitlines()[1:]:
        words = line.split()
        assert words[:2] == ["squeeze-span", name]
        build_parser().parse_args(words[1:])  # a UsageError here is an example that does not run


@pytest.mark.parametrize(
    ("command", "config", "override", "line"),
    [
        ("train", CONFIG, "train.max_steps=7", "train.max_steps=7  int or null  an integer >= 1 or null"),
        (
            "train-gan",
            "configs/fashion_mnist/gan.yaml",
            "train.total_kimg=7",
            "train.total_kimg=7.0  float  a finite number > 0",
        ),
    ],
)
def test_print_config_lists_the_resolved_keys_and_runs_nothing(command, config, override, line, tmp_path, capsys):
    run = tmp_path / "run"
    assert main([command, config, f"output_dir={run}", override, "--print-config"]) == 0
    rows = [" ".join(row.split()) for row in capsys.readouterr().out.splitlines()]
    assert not run.exists()
    assert rows[0] == "key=value type accepts"
    assert " ".join(line.split()) in rows and f"output_dir={run} str -" in rows
    assert "train.precision=auto str one of auto, fp32, bf16, fp16" in rows


def test_help_shows_defaults_but_not_the_off_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["sample-gan", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_info.value.code == 0
    assert "seed of the latents (and of random noise) (default: 0)" in text  # 0 == False, yet shown
    assert "(default: grid.png)" in text and "the working directory" in text
    assert "(default: None)" not in text and "(default: False)" not in text
