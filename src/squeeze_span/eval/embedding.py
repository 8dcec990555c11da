"""2-D maps of features: UMAP (umap-learn), as the paper's Figure 2, or t-SNE (scikit-learn).

UMAP is McInnes et al., "UMAP: Uniform Manifold Approximation and Projection" (2018); t-SNE
is van der Maaten and Hinton (JMLR 2008), in scikit-learn's Barnes-Hut form (van der Maaten,
2014), which comes with umap-learn. On the same 5,000 generator features, scikit-learn's
t-SNE kept neighbourhoods as well as the exact t-SNE this module used to have, in a fraction
of its time and without its N x N memory (benchmarks/RESULTS.md, "Figure 2's embeddings").
"""

from __future__ import annotations

import warnings
from types import ModuleType

import torch

from squeeze_span.errors import ConfigError

PCA_DIMS = 50
METHODS = ("umap", "tsne")


def pca(features: torch.Tensor, dims: int = PCA_DIMS, *, seed: int = 0) -> torch.Tensor:
    """The centred ``[N, D]`` features projected on their top ``dims`` principal axes (``[N, min(dims, N, D)]``).

    A randomized SVD (Halko et al., 2011, as ``torch.pca_lowrank``) with its own seeded
    random stream: the top 50 axes of thousands of dimensions in a fraction of a second.
    """
    features = features.float()
    rank = min(dims, *features.shape)
    devices = [features.device.index or torch.cuda.current_device()] if features.is_cuda else []
    with torch.random.fork_rng(devices=devices):  # pca_lowrank draws from the global stream; leave it untouched
        torch.manual_seed(seed)
        _, _, axes = torch.pca_lowrank(features, q=rank, center=True, niter=4)
    return (features - features.mean(dim=0)) @ axes[:, :rank]


def _import_umap() -> ModuleType:
    """The ``umap`` module, or the ConfigError that says how to get it or do without it."""
    try:
        with warnings.catch_warnings():
            # umap-learn warns on import that its ParametricUMAP lacks TensorFlow; we use only UMAP.
            warnings.filterwarnings("ignore", message="Tensorflow not installed")
            import umap
    except ImportError as error:  # not installed, or a dependency of it (numba, pynndescent) is broken
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(
            f"the UMAP embedding needs umap-learn, which does not import ({reason}); "
            "pip install umap-learn, or use the t-SNE embedding (--embedding tsne)"
        ) from None
    return umap


def check_embedding(method: str) -> None:
    """Raise the ConfigError that embedding by ``method`` would raise, before any work is done."""
    if method not in METHODS:
        raise ConfigError(f"unknown embedding {method!r}; choose one of {', '.join(METHODS)}")
    if method == "umap":
        _import_umap()


def umap_embedding(features: torch.Tensor, *, dims: int = 2, seed: int = 0) -> torch.Tensor:
    """UMAP of ``[N, D]`` features with umap-learn's defaults, as a float32 ``[N, dims]`` CPU tensor."""
    umap = _import_umap()
    # A seeded UMAP runs on one thread whatever n_jobs says; saying 1 spares a warning per map.
    reducer = umap.UMAP(n_components=dims, random_state=seed, n_jobs=1)
    return torch.from_numpy(reducer.fit_transform(features.detach().float().cpu().numpy())).float()


def tsne(features: torch.Tensor, *, dims: int = 2, perplexity: float = 30.0, seed: int = 0) -> torch.Tensor:
    """Barnes-Hut t-SNE of ``[N >= 4, D]`` features (scikit-learn) as a float32 ``[N, dims]`` CPU tensor.

    Features of more than 50 dimensions are first reduced to 50 by PCA, as is usual. A
    perplexity above (N - 1) / 3 is lowered to it, so that each point has enough neighbours
    to spread its probability over. The same seed gives the same map.
    """
    from sklearn.manifold import TSNE

    if features.dim() != 2 or features.shape[0] < 4:
        raise ValueError(f"t-SNE needs [N >= 4, D] features, got {tuple(features.shape)}")
    points = pca(features, seed=seed) if features.shape[1] > PCA_DIMS else features.float()
    reducer = TSNE(dims, perplexity=min(perplexity, (features.shape[0] - 1) / 3.0), init="pca", random_state=seed)
    return torch.from_numpy(reducer.fit_transform(points.detach().cpu().numpy())).float()


def embed_2d(features: torch.Tensor, method: str = "umap", *, seed: int = 0) -> torch.Tensor:
    """``[N, D]`` features as ``[N, 2]`` CPU map coordinates, by ``method`` ("umap" or "tsne")."""
    check_embedding(method)
    if method == "umap":
        return umap_embedding(features, seed=seed)
    return tsne(features, seed=seed)
