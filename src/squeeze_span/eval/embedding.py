"""2-D maps of features: exact t-SNE in pure torch, and UMAP when umap-learn is installed.

t-SNE follows van der Maaten and Hinton, "Visualizing Data using t-SNE" (JMLR 2008):

- p_{j|i} = exp(-beta_i d_ij) / sum_k exp(-beta_i d_ik) over squared distances d_ij, with
  beta_i found by bisection so that the perplexity exp(H(P_i)), H in nats, is the one asked for;
- P = (P_cond + P_cond^T) / 2N, multiplied by an early exaggeration of 12 for the first
  quarter of the iterations;
- q_ij = (1 + |y_i - y_j|^2)^-1 / Z, Z the sum over all pairs i != j;
- dC/dy_i = 4 sum_j (p_ij - q_ij) (1 + |y_i - y_j|^2)^-1 (y_i - y_j), descended with momentum
  (0.5, then 0.8) and per-coordinate gains (+0.2 where the gradient changes sign, x0.8 where
  it keeps it, at least 0.01).

The learning rate is max(N / (4 exaggeration), 50), sklearn's "auto" (Belkina et al., 2019),
which converges in a few hundred iterations where the 2008 paper's fixed rate needs more.

The N x N matrices are visited in blocks of rows small enough for the CPU cache, so the dozen
elementwise passes of an iteration read cache, not main memory. P is the only N x N matrix
kept (100 MB at N = 5000); it is what limits exact t-SNE to ``MAX_POINTS`` points.
"""

from __future__ import annotations

import importlib.util
import math

import torch

from squeeze_span.errors import ConfigError

PCA_DIMS = 50
EARLY_EXAGGERATION = 12.0
MAX_POINTS = 20_000  # P alone is then 1.6 GB, and an iteration visits 4e8 pairs
BLOCK_ELEMENTS = 1 << 20  # entries of one block of rows of an N x N matrix: 4 MB in float32
METHODS = ("tsne", "umap")


def _row_blocks(count: int) -> list[tuple[int, int]]:
    rows = max(1, min(count, BLOCK_ELEMENTS // count))
    return [(start, min(start + rows, count)) for start in range(0, count, rows)]


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


def _squared_distances(points: torch.Tensor, start: int, stop: int, norms: torch.Tensor) -> torch.Tensor:
    """|x_i - x_j|^2 for the rows ``start:stop`` against all points, as a ``[stop - start, N]`` block."""
    block = torch.addmm(norms[start:stop, None], points[start:stop], points.T, alpha=-2.0)
    return block.add_(norms).clamp_min_(0.0)


def conditional_probabilities(
    features: torch.Tensor, perplexity: float, *, tolerance: float = 1e-5, steps: int = 100
) -> torch.Tensor:
    """The ``[N, N]`` p_{j|i} of t-SNE: row i is a Gaussian around point i whose entropy is log(perplexity)."""
    count = features.shape[0]
    target = math.log(perplexity)  # entropies in nats
    norms = features.square().sum(dim=1)
    conditional = torch.empty(count, count, dtype=torch.float32, device=features.device)
    for start, stop in _row_blocks(count):
        distances = _squared_distances(features, start, stop, norms)
        diagonal = distances.diagonal(offset=start)
        diagonal.fill_(math.inf)
        # Shifting each row by its nearest distance leaves p_{j|i} unchanged and keeps exp() from underflowing.
        distances.sub_(distances.min(dim=1, keepdim=True).values)
        diagonal.zero_()
        spread = distances.sum(dim=1, keepdim=True) / (count - 1)
        beta = 1.0 / spread.clamp_min(1e-12)  # start at the row's own scale: fewer bisection steps
        # A point is not its own neighbour: the largest finite float gives it weight exp(-big) = 0, and
        # its term d * weight in the entropy stays 0 (inf * 0 would be NaN).
        diagonal.fill_(torch.finfo(torch.float32).max)
        low = torch.zeros_like(beta)
        high = torch.full_like(beta, math.inf)
        for _ in range(steps):
            weights = torch.exp(-beta * distances)
            total = weights.sum(dim=1, keepdim=True)
            entropy = torch.log(total) + beta * (distances * weights).sum(dim=1, keepdim=True) / total
            if (entropy - target).abs().max() < tolerance:
                break
            # Too flat (entropy too high): sharpen with a larger beta; else widen. Double until bracketed.
            flat = entropy > target
            low = torch.where(flat, beta, low)
            high = torch.where(flat, high, beta)
            beta = torch.where(high.isinf(), beta * 2.0, (low + high) / 2.0)
        conditional[start:stop] = weights / total
    return conditional


def joint_probabilities(features: torch.Tensor, perplexity: float) -> torch.Tensor:
    """The symmetric ``[N, N]`` affinities P of t-SNE, (p_{j|i} + p_{i|j}) / 2N, which sum to 1."""
    conditional = conditional_probabilities(features, perplexity)
    return conditional.add_(conditional.T.clone()).div_(2.0 * features.shape[0])


def tsne(
    features: torch.Tensor,
    *,
    dims: int = 2,
    perplexity: float = 30.0,
    iterations: int = 500,
    seed: int = 0,
    progress: bool = False,
    progress_label: str = "t-SNE",
) -> torch.Tensor:
    """Exact t-SNE of ``[N, D]`` features into ``[N, dims]`` (float32, on the features' device).

    Features of more than 50 dimensions are first reduced to 50 by PCA, as is usual. A
    perplexity above (N - 1) / 3 is lowered to it, so that each point has enough
    neighbours to spread its probability over. The same seed gives the same map.
    """
    if features.dim() != 2 or features.shape[0] < 4:
        raise ValueError(f"t-SNE needs [N >= 4, D] features, got {tuple(features.shape)}")
    if dims < 1 or iterations < 1 or perplexity <= 1.0:
        raise ValueError(
            f"t-SNE needs dims >= 1, iterations >= 1 and perplexity > 1, got {dims}, {iterations}, {perplexity}"
        )
    count = features.shape[0]
    check_embedding("tsne", count)
    from tqdm.auto import tqdm

    device = features.device
    points = pca(features, seed=seed) if features.shape[1] > PCA_DIMS else features.float()
    joint = joint_probabilities(points, min(perplexity, (count - 1) / 3.0))

    random = torch.Generator(device).manual_seed(seed)
    embedding = torch.randn(count, dims, generator=random, device=device) * 1e-4
    update = torch.zeros_like(embedding)
    gains = torch.ones_like(embedding)
    learning_rate = max(count / EARLY_EXAGGERATION / 4.0, 50.0)
    early = max(1, iterations // 4)
    blocks = _row_blocks(count)
    attraction = torch.empty(dims + 1, count, device=device)  # row d: (P * num) @ Y[:, d]; row dims: rowsum
    repulsion = torch.empty(dims + 1, count, device=device)  # the same of num^2
    for iteration in tqdm(range(iterations), desc=progress_label, disable=not progress):
        exaggeration, momentum = (EARLY_EXAGGERATION, 0.5) if iteration < early else (1.0, 0.8)
        # With W = (P - num / Z) * num, the gradient is 4 (rowsum(W) y_i - (W Y)_i). Z is known only
        # after every block, so P * num and num^2 / Z are reduced separately and combined at the end:
        # one pass over P per iteration. Distances are summed per coordinate and the products are
        # matrix-vector ones: a matrix product with 2 or 3 columns is slow in BLAS, and exact here.
        columns = embedding.T.contiguous()
        normalizer = torch.zeros((), device=device)
        for start, stop in blocks:
            kernel = torch.ones(stop - start, count, device=device)
            for column in columns:
                kernel.add_((column[start:stop, None] - column).square_())
            kernel.reciprocal_().diagonal(offset=start).zero_()
            normalizer += kernel.sum()
            for target, weights in ((attraction, kernel * joint[start:stop]), (repulsion, kernel.square_())):
                for row, column in zip(target, columns):
                    torch.mv(weights, column, out=row[start:stop])
                torch.sum(weights, dim=1, out=target[dims, start:stop])
        weighted = attraction.mul_(exaggeration).sub_(repulsion.div_(normalizer))
        gradient = 4.0 * (weighted[dims] * columns - weighted[:dims]).T

        same_sign = (gradient > 0) == (update > 0)
        gains = torch.where(same_sign, gains * 0.8, gains + 0.2).clamp_min_(0.01)
        update = momentum * update - learning_rate * gains * gradient
        embedding = embedding + update
        embedding = embedding - embedding.mean(dim=0)  # the cost ignores translation; keep the map centred
    return embedding


def check_embedding(method: str, count: int) -> None:
    """Raise the ConfigError that embedding ``count`` points by ``method`` would raise, before any work is done."""
    if method not in METHODS:
        raise ConfigError(f"unknown embedding {method!r}; choose one of {', '.join(METHODS)}")
    if method == "tsne" and count > MAX_POINTS:
        raise ConfigError(
            f"exact t-SNE of {count} points needs a {count} x {count} matrix ({4 * count**2 / 2**30:.0f} GiB); "
            f"map at most {MAX_POINTS} points, or use UMAP (--embedding umap, pip install umap-learn)"
        )
    if method == "umap" and importlib.util.find_spec("umap") is None:
        raise ConfigError(
            "the UMAP embedding needs umap-learn, which is not installed; "
            "pip install umap-learn, or use the t-SNE embedding (--embedding tsne)"
        )


def umap_embedding(features: torch.Tensor, *, dims: int = 2, seed: int = 0) -> torch.Tensor:
    """UMAP of ``[N, D]`` features (umap-learn, as the paper's figure), as a float32 ``[N, dims]`` tensor."""
    check_embedding("umap", features.shape[0])
    try:
        import umap
    except ImportError as error:  # installed, but a dependency of it (numba, pynndescent) is broken
        raise ConfigError(
            f"umap-learn does not import ({error}); reinstall it (pip install umap-learn), "
            "or use the t-SNE embedding (--embedding tsne)"
        ) from None
    reducer = umap.UMAP(n_components=dims, random_state=seed)
    return torch.from_numpy(reducer.fit_transform(features.detach().float().cpu().numpy())).float()


def embed_2d(
    features: torch.Tensor,
    method: str = "tsne",
    *,
    seed: int = 0,
    progress: bool = False,
    progress_label: str = "t-SNE",
) -> torch.Tensor:
    """``[N, D]`` features as ``[N, 2]`` map coordinates, by ``method`` ("tsne" or "umap")."""
    check_embedding(method, features.shape[0])
    if method == "umap":
        return umap_embedding(features, seed=seed)
    return tsne(features, seed=seed, progress=progress, progress_label=progress_label)
