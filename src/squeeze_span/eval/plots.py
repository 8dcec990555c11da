"""Pictures: image grids of samples, 2-D maps of features coloured by class (Figure 2),
accuracy against FD (Figure 4), claims' differences against training length."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from squeeze_span.data import to_unit_range
from squeeze_span.errors import ConfigError
from squeeze_span.fileio import atomic_write


def image_grid(images: torch.Tensor, columns: int | None = None, padding: int = 2) -> np.ndarray:
    """Tile [N, C, H, W] images (uint8, or float in [-1, 1]) into one uint8 [rows*H, columns*W, C] array."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"image_grid needs [N, 1 or 3, H, W] images, got {tuple(images.shape)}")
    count, channels, height, width = images.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    pixels = (to_unit_range(images.detach().cpu()) * 255).round().to(torch.uint8)
    # Pad each image on its right and bottom, fill the last row with blanks, then tile by reshaping.
    pixels = F.pad(pixels, (0, padding, 0, padding))
    pixels = torch.cat([pixels, pixels.new_zeros(rows * columns - count, *pixels.shape[1:])])
    tiles = pixels.view(rows, columns, channels, height + padding, width + padding)
    grid = tiles.permute(2, 0, 3, 1, 4).reshape(channels, rows * (height + padding), columns * (width + padding))
    grid = F.pad(grid, (padding, 0, padding, 0))
    return grid.permute(1, 2, 0).numpy()


def save_image_grid(images: torch.Tensor, path: str | os.PathLike[str], columns: int | None = None) -> Path:
    """Write ``image_grid(images)`` as a PNG, atomically."""
    from PIL import Image

    grid = image_grid(images, columns)
    path = Path(path)
    with atomic_write(path) as temp:
        Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid).save(temp, format="PNG")
    return path


def _class_colors(count: int) -> list[tuple[float, float, float, float]]:
    """One colour per class: tab10 or tab20 where they suffice, else evenly spaced along turbo."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](index) for index in range(count)]
    if count <= 20:
        return [colormaps["tab20"](index) for index in range(count)]
    return [colormaps["turbo"](index / (count - 1)) for index in range(count)]


def scatter_panels(
    panels: dict[str, torch.Tensor],
    labels: torch.Tensor,
    class_names: list[str],
    path: str | os.PathLike[str],
    title: str = "",
) -> Path:
    """Side-by-side 2-D maps, points coloured by class, then a bar panel of images per class; written atomically.

    ``panels`` maps a panel's title to ``[N, 2]`` coordinates of the same N points, whose
    classes are ``labels`` ([N], indices into ``class_names``). The format follows the
    path's suffix (.png, .pdf, .svg); drawing uses matplotlib's Agg canvas, never a window.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    labels = labels.detach().cpu().long()
    for name, points in panels.items():
        if points.dim() != 2 or points.shape[1] != 2 or points.shape[0] != labels.shape[0]:
            raise ValueError(f"panel {name!r} must be [{labels.shape[0]}, 2] points, got {tuple(points.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= len(class_names)):
        raise ValueError(f"labels must lie in [0, {len(class_names)}), got {labels.min()}..{labels.max()}")
    count = labels.shape[0]
    colors = _class_colors(len(class_names))
    point_colors = np.array(colors)[labels.numpy()] if count else np.zeros((0, 4))
    # Small points for many images, so that dense clusters still show their colour mix.
    size = float(np.clip(4000.0 / max(count, 1), 0.3, 12.0))

    figure = Figure(figsize=(3.6 * len(panels) + 3.4, 4.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels) + 1, width_ratios=[1.0] * len(panels) + [0.85], squeeze=False)[0]
    for axis, (name, points) in zip(axes, panels.items()):
        xy = points.detach().cpu().float().numpy()
        axis.scatter(xy[:, 0], xy[:, 1], c=point_colors, s=size, linewidths=0, alpha=0.8, rasterized=True)
        axis.set_title(name)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_aspect("equal", adjustable="box")
    histogram = torch.bincount(labels, minlength=len(class_names)).numpy()
    bars = axes[-1]
    bars.bar(range(len(class_names)), histogram, color=colors)
    bars.set_title("images per class")
    bars.set_xticks(
        range(len(class_names)),
        class_names if len(class_names) <= 20 else [""] * len(class_names),
        rotation=90,
        fontsize=7,
    )
    bars.tick_params(axis="y", labelsize=7)
    if len(class_names) <= 20:  # a legend of more classes would hide the maps
        handles = [
            Line2D([], [], marker="o", linestyle="", color=color, label=name)
            for color, name in zip(colors, class_names)
        ]
        figure.legend(
            handles=handles, loc="outside lower center", ncols=min(len(class_names), 10), fontsize=8, frameon=False
        )
    if title:
        figure.suptitle(title)
    return _save_figure(figure, path)


def accuracy_against_fd(
    points: list[tuple[float, float, str]],
    path: str | os.PathLike[str],
    *,
    metric: str,
    baselines: Sequence[tuple[float, str]] = (),
    errors: Sequence[float] | None = None,
    title: str = "",
) -> Path:
    """The paper's Figure 4: top-1 of students distilled from each snapshot against its FD (log scale).

    ``points`` are ``(fd, top1, label)``, e.g. a snapshot's kimg; ``errors``, one per point, are
    drawn as error bars (a seed std), so that a reader sees which steps of the curve are noise;
    each of ``baselines`` is ``(top1, label)`` of a method to compare with, drawn as a horizontal
    line. Written atomically.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FormatStrFormatter

    if not points:
        raise ValueError("Figure 4 needs at least one (fd, top1, label) point")
    if errors is not None and len(errors) != len(points):
        raise ValueError(f"Figure 4 got {len(errors)} errors for {len(points)} points")
    figure = Figure(figsize=(5.2, 3.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    ordered = sorted(zip(points, errors or [0.0] * len(points)))
    fds, top1s, labels = zip(*(point for point, _ in ordered))
    axes.errorbar(
        fds,
        top1s,
        yerr=[error for _, error in ordered] if errors is not None else None,
        marker="o",
        capsize=2,
        label="Squeeze and Span",
    )
    for index, (fd, top1, label) in enumerate(zip(fds, top1s, labels)):
        # Neighbours in FD alternate above and below, so that close snapshots' labels do not overlap.
        offset = (4, 5) if index % 2 else (4, -11)
        axes.annotate(label, (fd, top1), textcoords="offset points", xytext=offset, fontsize=6)
    for (top1, label), style in zip(baselines, ("-.", ":", "--")):
        axes.axhline(top1, linestyle=style, color="gray", label=label)
    axes.set_xscale("log")
    for axis in (axes.xaxis.set_major_formatter, axes.xaxis.set_minor_formatter):
        axis(FormatStrFormatter("%g"))
    axes.set_xlabel(f"{metric} of the teacher (log scale)")
    axes.set_ylabel("top-1 (%)")
    axes.legend(fontsize=8)
    if title:
        axes.set_title(title, fontsize=9)
    return _save_figure(figure, path)


def bars_with_errors(
    rows: Sequence[tuple[str, float, float]], path: str | os.PathLike[str], *, title: str = "", floor: float = 0.0
) -> Path:
    """A horizontal bar per ``(label, mean, std)`` (std 0: one seed), with its std as an error bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows:
        raise ValueError("a bar chart needs at least one (label, mean, std) row")
    figure = Figure(figsize=(6.0, 0.35 * len(rows) + 1.2), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    labels, means, stds = zip(*rows)
    positions = list(range(len(rows)))[::-1]  # the first row on top
    axes.barh(positions, [mean - floor for mean in means], left=floor, xerr=stds, capsize=3, color="#4c72b0")
    for position, mean in zip(positions, means):
        axes.annotate(f"{mean:.2f}", (mean, position), textcoords="offset points", xytext=(6, -3), fontsize=7)
    axes.set_yticks(positions, labels, fontsize=8)
    axes.set_xlabel("linear-probe top-1 (%)")
    if title:
        axes.set_title(title, fontsize=9)
    return _save_figure(figure, path)


# A variant's line ("fp32", "width 32") is open-marked, with a marker and dash of its own, so that each
# variant reads apart from the default's solid line and from the other variants.
VARIANT_STYLES = (("--", "o"), (":", "s"), ("-.", "^"), ((0, (5, 1, 1, 1)), "D"))


def differences_against_length(
    curves: dict[str, dict[tuple[str, str], Sequence[tuple[float, float, float]]]], path: str | os.PathLike[str]
) -> Path:
    """Write :func:`length_figure` of ``curves`` to ``path``, atomically."""
    return _save_figure(length_figure(curves), path)


def length_figure(curves: dict[str, dict[tuple[str, str], Sequence[tuple[float, float, float]]]]):
    """One panel per comparison: its difference (method minus baseline) against training steps,
    one line per probe protocol, with the difference's standard error as error bars. A protocol
    keeps its colour in every panel; a variant's lines ("fp32") keep a style of their own. Two
    legends, in the last panel, name the colours and the styles of every panel.

    ``curves`` maps a panel's title to {(protocol label, variant or ""): [(steps, difference, standard error)]}.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    if not curves:
        raise ValueError("the length figure needs at least one comparison")
    figure = Figure(figsize=(4.2 * len(curves), 3.6), layout="constrained")
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, len(curves), squeeze=False, sharey=True)[0]
    protocols = list(dict.fromkeys(label for lines in curves.values() for label, _ in lines))
    colours = {label: f"C{index}" for index, label in enumerate(protocols)}
    variants = [variant for variant in dict.fromkeys(v for lines in curves.values() for _, v in lines) if variant]
    if len(variants) > len(VARIANT_STYLES):
        raise ConfigError(
            f"the length figure draws at most {len(VARIANT_STYLES)} variants beside the default, the plan has "
            f"{len(variants)} ({', '.join(variants)}): "
            f"use at most {len(VARIANT_STYLES)} distinct `variant:` values in it"
        )
    styles = {"": {"linestyle": "-", "marker": "o"}} | {
        variant: {"linestyle": dash, "marker": marker, "markerfacecolor": "white"}
        for variant, (dash, marker) in zip(variants, VARIANT_STYLES)
    }
    for axes, (title, lines) in zip(panels, curves.items()):
        for index, ((label, variant), points) in enumerate(lines.items()):
            steps, differences, errors = zip(*sorted(points))
            # Lines side by side at each length, so that their error bars do not hide each other.
            shifted = [step * 1.04 ** (index - (len(lines) - 1) / 2) for step in steps]
            axes.errorbar(shifted, differences, yerr=errors, capsize=2, color=colours[label], **styles[variant])
        axes.axhline(0.0, color="gray", linewidth=0.8)
        axes.set_xscale("log")
        all_steps = sorted({point[0] for points in lines.values() for point in points})
        axes.set_xticks(all_steps, [f"{step:g}" for step in all_steps])
        axes.minorticks_off()
        axes.set_xlabel("training steps (log scale)")
        axes.set_title(title, fontsize=9)
    panels[0].set_ylabel("difference in top-1 (points, ± SE)")
    last = panels[-1]
    protocol_keys = [Line2D([], [], color=colours[label], marker="o") for label in protocols]
    last.add_artist(last.legend(protocol_keys, protocols, fontsize=6, loc="upper left"))
    if variants:
        variant_keys = [Line2D([], [], color="black", **styles[variant]) for variant in ["", *variants]]
        last.legend(variant_keys, ["default", *variants], fontsize=6, loc="upper right")
    return figure


def _save_figure(figure, path: str | os.PathLike[str]) -> Path:
    """Write a matplotlib figure atomically, in the format its suffix names (.png, .pdf, .svg)."""
    path = Path(path)
    with atomic_write(path) as temp:
        figure.savefig(temp, format=path.suffix.lstrip(".").lower() or "png", dpi=150)
    return path
