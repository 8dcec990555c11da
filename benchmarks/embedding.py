"""Figure 2's 2-D maps: our exact t-SNE against scikit-learn's and openTSNE's, with UMAP beside them.

All maps are made from the same features: the shipped Fashion-MNIST teacher's generator
features ("G features", Figure 2's middle panel) of N generated images, reduced to 50
dimensions by the same PCA, so every method sees identical input. Each runs on one thread
(torch, OpenMP, numba and the libraries' own ``n_jobs``), as figure 2 runs beside other jobs.

Quality is measured against the 50-d input, on all N points, with k = 10:
- trustworthiness (Venna and Kaski, 2001; ``sklearn.manifold.trustworthiness``): 1 when no
  map neighbour is a stranger in the input;
- kNN preservation: the fraction of each point's k input neighbours that are among its k map
  neighbours;
- label agreement: how often a point's k map neighbours' majority pseudo-label is its own,
  i.e. how well the map groups the classes, which is what the figure is read for.

Writes benchmarks/results/embedding.json. openTSNE is no dependency of ours: ``pip install openTSNE``
to rerun it.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 .venv/bin/python benchmarks/embedding.py [--n 5000] [--methods ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from squeeze_span.runtime import machine_info

ROOT = Path(__file__).resolve().parents[1]
NEIGHBOURS = 10
FORMER_TSNE = "fe514b2:src/squeeze_span/eval/embedding.py"  # our exact t-SNE, before it gave way to scikit-learn's


def generator_features(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The shipped teacher's G features of ``count`` images, PCA-reduced to 50-d, and their pseudo-labels."""
    from squeeze_span.assets import FASHION_MNIST_CLASSIFIER
    from squeeze_span.eval.embedding import pca
    from squeeze_span.eval.figures import GENERATOR_PANEL, generated_features
    from squeeze_span.generators import load_gan
    from squeeze_span.models import load_backbone

    generator, _ = load_gan("asset:fashion_mnist_stylegan2")
    data = generated_features(
        generator, load_backbone(FASHION_MNIST_CLASSIFIER), "fashion_mnist", count=count, seed=seed, progress=False
    )
    return pca(data.features[GENERATOR_PANEL], seed=seed).numpy(), data.labels.numpy()


def ours(features: np.ndarray, seed: int) -> np.ndarray:
    # The exact t-SNE was deleted after this comparison; it is run from the last commit that had it.
    source = subprocess.run(["git", "-C", ROOT, "show", FORMER_TSNE], capture_output=True, text=True, check=True)
    former = types.ModuleType("former_embedding")
    exec(compile(source.stdout, FORMER_TSNE, "exec"), former.__dict__)
    return former.tsne(torch.from_numpy(features), seed=seed).numpy()


def sklearn_tsne(features: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    return TSNE(perplexity=30.0, init="pca", random_state=seed, n_jobs=1).fit_transform(features)


def opentsne(features: np.ndarray, seed: int) -> np.ndarray:
    from openTSNE import TSNE

    return np.asarray(TSNE(perplexity=30.0, random_state=seed, n_jobs=1).fit(features))


def umap(features: np.ndarray, seed: int) -> np.ndarray:
    import umap

    return umap.UMAP(n_components=2, random_state=seed, n_jobs=1).fit_transform(features)


METHODS: dict[str, tuple[str, Callable[[np.ndarray, int], np.ndarray]]] = {
    "ours": ("our former exact t-SNE, pure torch (500 iterations)", ours),
    "sklearn": ("scikit-learn TSNE, Barnes-Hut, init='pca' (1000 iterations)", sklearn_tsne),
    "opentsne": ("openTSNE TSNE, FFT-interpolated (750 iterations)", opentsne),
    "umap": ("umap-learn UMAP, defaults (15 neighbours, min_dist 0.1)", umap),
}


def neighbours(points: np.ndarray, k: int) -> np.ndarray:
    """``[N, k]`` indices of each point's k nearest other points."""
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k + 1).fit(points).kneighbors(points, return_distance=False)[:, 1:]


def quality(features: np.ndarray, points: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    from sklearn.manifold import trustworthiness

    near_input, near_map = neighbours(features, NEIGHBOURS), neighbours(points, NEIGHBOURS)
    kept = np.mean([len(set(a) & set(b)) / NEIGHBOURS for a, b in zip(near_input, near_map)])
    votes = labels[near_map]
    majority = np.array([np.bincount(row, minlength=labels.max() + 1).argmax() for row in votes])
    return {
        "trustworthiness": round(float(trustworthiness(features, points, n_neighbors=NEIGHBOURS)), 4),
        "knn_preservation": round(float(kept), 4),
        "label_agreement": round(float(np.mean(majority == labels)), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "embedding.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    features, labels = generator_features(args.n, args.seed)
    results = {}
    for name in args.methods:
        description, embed = METHODS[name]
        started = time.perf_counter()
        points = embed(features, args.seed)
        seconds = time.perf_counter() - started
        results[name] = {"method": description, "seconds": round(seconds, 1), **quality(features, points, labels)}
        print(name, results[name], flush=True)
    report = {"n": args.n, "features": "G features, PCA to 50-d", "k": NEIGHBOURS, "machine": machine_info()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**report, "results": results}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
