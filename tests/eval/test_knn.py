import pytest
import torch
import torch.nn.functional as F

from squeeze_span.eval import knn_accuracy, knn_scores


def brute_force_knn_scores(train, labels, queries, num_classes, k, temperature):
    """One query at a time, with an explicit sort: the definition of the InstDisc weighted vote.

    A class that none of the k neighbours votes for scores -inf: it is never predicted.
    """
    scores = torch.full((queries.shape[0], num_classes), float("-inf"))
    for q, query in enumerate(queries):
        similarity = torch.tensor([F.cosine_similarity(query, x, dim=0).item() for x in train])
        order = similarity.argsort(descending=True)[:k]
        for i in order:
            vote = torch.exp(similarity[i] / temperature)
            scores[q, labels[i]] = vote if scores[q, labels[i]] == float("-inf") else scores[q, labels[i]] + vote
    return scores


def test_knn_scores_match_brute_force():
    generator = torch.Generator().manual_seed(0)
    train = torch.randn(60, 8, generator=generator)
    labels = torch.randint(0, 4, (60,), generator=generator)
    queries = torch.randn(7, 8, generator=generator)
    expected = brute_force_knn_scores(train, labels, queries, 4, k=10, temperature=0.1)
    actual = knn_scores(train, labels, queries, 4, k=10, temperature=0.1, chunk_size=3)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-4)


def test_knn_classifies_clusters_and_caps_k_at_the_bank_size():
    centers = torch.eye(3) * 10
    train = centers.repeat_interleave(5, dim=0) + 0.1 * torch.randn(15, 3)
    labels = torch.arange(3).repeat_interleave(5)
    accuracy = knn_accuracy(train, labels, centers, torch.arange(3), num_classes=3, k=200)
    assert accuracy["top1"] == 100.0


def test_classes_without_votes_are_never_a_hit():
    generator = torch.Generator().manual_seed(4)
    train = torch.randn(50, 8, generator=generator)
    labels = torch.arange(50) % 10
    queries = torch.randn(40, 8, generator=generator)
    query_labels = torch.randint(0, 10, (40,), generator=generator)
    scores = knn_scores(train, labels, queries, 10, k=1)
    assert (scores.isfinite().sum(dim=1) == 1).all()  # one neighbour, one class with a vote
    accuracy = knn_accuracy(train, labels, queries, query_labels, num_classes=10, k=1)
    assert accuracy["top5"] == accuracy["top1"] < 50.0


def test_knn_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match=r"\[N, D\] train and \[Q, D\] query"):
        knn_scores(torch.randn(5, 4), torch.zeros(5, dtype=torch.long), torch.randn(2, 3), 2)
