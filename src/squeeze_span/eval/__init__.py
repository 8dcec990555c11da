"""Evaluation of a frozen backbone: kNN monitor and linear probes."""

from squeeze_span.eval.features import extract_features
from squeeze_span.eval.knn import knn_accuracy, knn_scores
from squeeze_span.eval.linear import ProbeResult, linear_probe_fast, linear_probe_paper
from squeeze_span.eval.metrics import topk_accuracy

__all__ = [
    "ProbeResult",
    "extract_features",
    "knn_accuracy",
    "knn_scores",
    "linear_probe_fast",
    "linear_probe_paper",
    "topk_accuracy",
]
