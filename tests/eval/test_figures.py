import json
import math
import sys

import pytest
import torch
from PIL import Image

from squeeze_span.cli import main
from squeeze_span.errors import ConfigError
from squeeze_span.eval.embedding import embed_2d, pca, tsne
from squeeze_span.eval.figures import DISCRIMINATOR_PANEL, GENERATOR_PANEL, LATENT_PANEL, generated_features
from squeeze_span.generators import load_gan, save_network
from squeeze_span.generators.stylegan2 import Discriminator
from squeeze_span.models import build_backbone, save_backbone


def two_blobs(per_blob: int = 60, dims: int = 20) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    blobs = torch.randn(2, per_blob, dims, generator=generator)
    blobs[1] += 6.0  # centres 6 * sqrt(20) ~ 27 apart; each blob's radius is about sqrt(20) ~ 4.5
    return blobs.reshape(2 * per_blob, dims)


def separates_the_blobs(points: torch.Tensor) -> bool:
    """Whether every point's nearest neighbour in a map of :func:`two_blobs` is in its own blob."""
    distances = torch.cdist(points, points).fill_diagonal_(math.inf)
    return torch.equal(distances.argmin(dim=1) // 60, torch.arange(120) // 60)


def test_tsne_keeps_two_blobs_apart_and_is_seeded():
    features = two_blobs()
    points = embed_2d(features, "tsne", seed=3)
    assert points.shape == (120, 2) and points.dtype == torch.float32
    first, second = points[:60], points[60:]
    within = max(first.std(dim=0).norm(), second.std(dim=0).norm())
    assert (first.mean(dim=0) - second.mean(dim=0)).norm() > 5 * within
    assert separates_the_blobs(points)
    assert torch.equal(tsne(features, seed=3), points)


def test_pca_keeps_the_distances_of_low_rank_features_and_tsne_maps_wide_ones():
    generator = torch.Generator().manual_seed(0)
    wide = torch.randn(120, 3, generator=generator) @ torch.randn(3, 80, generator=generator)  # rank 3 in 80-D
    reduced = pca(wide)
    assert reduced.shape == (120, 50)
    distances = torch.cdist(wide.double(), wide.double())  # float64: cdist in float32 loses 1e-2 at this scale
    assert torch.allclose(torch.cdist(reduced.double(), reduced.double()), distances, atol=1e-3)
    points = tsne(wide, dims=3)
    assert points.shape == (120, 3) and torch.isfinite(points).all()


@pytest.mark.slow  # umap-learn's numba compiles for 10-45 s in each new process, whatever the number of points
def test_umap_keeps_two_blobs_apart_and_is_seeded():
    points = embed_2d(two_blobs(), seed=3)
    assert points.shape == (120, 2) and points.dtype == torch.float32
    assert separates_the_blobs(points)
    assert torch.equal(embed_2d(two_blobs(), seed=3), points)


def test_umap_without_umap_learn_says_how_to_install_it_or_use_tsne(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap now raises ImportError, as when it is missing
    with pytest.raises(ConfigError) as error:
        embed_2d(two_blobs())
    message = str(error.value)
    assert message.startswith("the UMAP embedding needs umap-learn, which does not import (")
    assert message.endswith("); pip install umap-learn, or use the t-SNE embedding (--embedding tsne)")
    assert "\n" not in message


def test_an_unknown_embedding_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown embedding 'pca'; choose one of umap, tsne"):
        embed_2d(two_blobs(), "pca")


@pytest.fixture
def tiny_gan(tiny_teacher):
    """The tiny teacher's folder with a tiny discriminator beside its G_ema, as convert-gan writes it."""
    torch.manual_seed(1)
    discriminator = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
    save_network(discriminator, tiny_teacher, "D")
    return tiny_teacher


@pytest.fixture
def tiny_classifier(tmp_path):
    """A random grayscale ResNet-18 (width 4) with a 10-class head, as a Fashion-MNIST classifier."""
    torch.manual_seed(0)
    classifier = build_backbone("resnet18_cifar", in_channels=1, width=4)
    classifier.reset_classifier(10)
    return save_backbone(classifier, tmp_path / "classifier.safetensors")


def test_generated_features_have_one_row_per_image_in_every_panel(tiny_gan, tiny_classifier):
    from squeeze_span.models import load_backbone

    generator, discriminator = load_gan(tiny_gan)
    data = generated_features(
        generator,
        load_backbone(tiny_classifier),
        "fashion_mnist",
        discriminator=discriminator,
        count=10,
        batch_size=4,
        progress=False,
    )
    # w is 8-d; G blocks b4, b8, b16 have min(128 / R, 16) = 16, 16, 8 channels; D's b16, b8 output
    # 16 channels each (those of the next block), and b4.fc 16.
    assert {name: tuple(values.shape) for name, values in data.features.items()} == {
        LATENT_PANEL: (10, 8),
        GENERATOR_PANEL: (10, 40),
        DISCRIMINATOR_PANEL: (10, 48),
    }
    assert data.labels.shape == (10,) and data.class_names[0] == "T-shirt/top"
    assert data.histogram.sum() == 10 and data.histogram.shape == (10,)
    # Without a discriminator there is no D panel; the same seed gives the same latents. The two calls
    # map them in batches of 4 and of 500, whose matmul kernels differ (by about 1e-6 on AMX), so the
    # latents agree to float32 rounding, not bit for bit.
    alone = generated_features(generator, load_backbone(tiny_classifier), "fashion_mnist", count=10, progress=False)
    assert list(alone.features) == [LATENT_PANEL, GENERATOR_PANEL]
    torch.testing.assert_close(alone.features[LATENT_PANEL], data.features[LATENT_PANEL], rtol=1e-5, atol=1e-5)
    assert torch.equal(alone.labels, data.labels)


def test_a_classifier_without_a_head_is_refused(tiny_teacher):
    from squeeze_span.generators import load_generator

    backbone = build_backbone("resnet18_cifar", in_channels=1, width=4)
    with pytest.raises(ConfigError, match="the classifier has no classification head"):
        generated_features(load_generator(tiny_teacher), backbone, "fashion_mnist", count=8, progress=False)


@pytest.mark.parametrize(
    "embedding, chosen",
    [
        # umap-learn's numba compiles for 10-45 s in each new process, whatever the number of points.
        pytest.param("umap", [], marks=pytest.mark.slow, id="umap-by-default"),
        pytest.param("tsne", ["--embedding", "tsne"], id="tsne"),
    ],
)
def test_figure2_command_writes_the_figure_and_the_histogram(
    embedding, chosen, tiny_gan, tiny_classifier, tmp_path, capsys
):
    out, report = tmp_path / "figure2.png", tmp_path / "figure2.json"
    args = [
        "figure2",
        str(tiny_gan),
        "--dataset",
        "fashion_mnist",
        "--classifier",
        str(tiny_classifier),
        "--n",
        "64",
        "--out",
        str(out),
        "--json",
        str(report),
        "--device",
        "cpu",
        "--no-progress",
    ]
    assert main(args + chosen) == 0
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > image.height > 100
    result = json.loads(report.read_text())
    assert sum(result["histogram"]) == 64 and len(result["histogram"]) == 10
    assert result["feature_dims"] == {LATENT_PANEL: 8, GENERATOR_PANEL: 40, DISCRIMINATOR_PANEL: 48}
    assert {name: len(points) for name, points in result["points"].items()} == {
        LATENT_PANEL: 64,
        GENERATOR_PANEL: 64,
        DISCRIMINATOR_PANEL: 64,
    }
    assert all(len(point) == 2 for point in result["points"][GENERATOR_PANEL])
    printed = capsys.readouterr().out
    assert printed.startswith(f"wrote {out}: {embedding} maps of Latent 8-d, G features 40-d, D features 48-d")
    assert "Ankle boot" in printed
    assert result["embedding"] == embedding


def test_figure2_without_umap_learn_says_so_in_one_line_before_sampling(tiny_teacher, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "umap", None)  # import umap now raises ImportError, as when it is missing
    monkeypatch.setattr("squeeze_span.eval.figures.generated_features", None)  # sampling would fail: not reached
    assert main(["figure2", str(tiny_teacher), "--dataset", "fashion_mnist", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("ConfigError: the UMAP embedding needs umap-learn, which does not import (")
    assert error.endswith("); pip install umap-learn, or use the t-SNE embedding (--embedding tsne)\n")
    assert error.count("\n") == 1


def test_figure2_on_cifar10_needs_a_classifier(tiny_teacher, capsys):
    assert main(["figure2", str(tiny_teacher), "--dataset", "cifar10", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error == "ConfigError: figure2 on cifar10 needs --classifier BACKBONE (a classifier trained on it)\n"


def test_figure4_draws_accuracy_against_fd(tmp_path):
    from PIL import Image

    from squeeze_span.eval.plots import accuracy_against_fd

    path = accuracy_against_fd(
        [(11.4, 85.1, "50 kimg"), (2.8, 86.7, "500 kimg")],
        tmp_path / "figure4.png",
        metric="FD-fashion_mnist-classifier",
        baselines=[(87.3, "VICReg on real images"), (86.9, "VICReg on the mix")],
        errors=[0.7, 0.46],
    )
    with Image.open(path) as image:
        assert image.size[0] > 400 and image.size[1] > 300
    with pytest.raises(ValueError, match="at least one"):
        accuracy_against_fd([], tmp_path / "empty.png", metric="FD")
    with pytest.raises(ValueError, match="1 errors for 2 points"):
        accuracy_against_fd([(11.4, 85.1, "a"), (2.8, 86.7, "b")], tmp_path / "bad.png", metric="FD", errors=[0.7])


def test_the_bar_chart_has_a_bar_per_row_and_refuses_none(tmp_path):
    from PIL import Image

    from squeeze_span.eval.plots import bars_with_errors

    path = bars_with_errors([("VICReg, real", 86.1, 0.3), ("squeeze and span", 86.6, 0.0)], tmp_path / "bars.png")
    with Image.open(path) as image:
        assert image.size[0] > 600 and image.size[1] > 200
    with pytest.raises(ValueError, match="at least one"):
        bars_with_errors([], tmp_path / "none.png")


def test_the_length_figure_names_every_protocol_and_every_variant_in_its_legends():
    from matplotlib.legend import Legend

    from squeeze_span.eval.plots import length_figure

    curves = {
        "claim 1": {
            ("linear", ""): [(500, 1.3, 0.2), (2000, 0.8, 0.2)],
            ("kNN", ""): [(500, 2.2, 0.3), (2000, 1.9, 0.3)],
            ("linear", "fp32"): [(500, 0.8, 0.2)],
            ("linear", "width 32"): [(2000, 1.6, 0.5)],
        },
        "claim 3": {("linear", ""): [(500, 0.9, 0.2), (2000, 0.5, 0.2)], ("kNN", "fp32"): [(500, 0.3, 0.3)]},
    }
    figure = length_figure(curves)
    legends = [[text.get_text() for text in legend.get_texts()] for legend in figure.axes[-1].findobj(Legend)]
    assert sorted(legends) == [["default", "fp32", "width 32"], ["linear", "kNN"]]
    # each variant's line in its own style: the default's solid, the others' dashed apart
    styles = {
        (line.get_linestyle(), line.get_marker())
        for line in figure.axes[0].get_lines()
        if line.get_marker() not in ("None", "", None, "_")
    }
    assert len(styles) == 3
    with pytest.raises(ValueError, match="at least one comparison"):
        length_figure({})
    too_many = {"claim 1": {("linear", f"variant {index}"): [(500, 0.1, 0.1)] for index in range(5)}}
    with pytest.raises(ConfigError, match="at most 4 variants beside the default, the plan has 5 "):
        length_figure(too_many)
