"""Is row a above row b? The test behind every claim of a report.

With several seeds on both sides, Welch's t-test (unequal variances, Welch-Satterthwaite degrees
of freedom): the difference of the means holds when it exceeds the two-sided 95% margin
t(0.975, df) * SE, with SE = sqrt(s_a^2 / n_a + s_b^2 / n_b); it does not hold when it is below
minus that margin, and is within noise otherwise. Three seeds a side give about 4 degrees of
freedom, so the margin is about 2.8 standard errors: a verdict needs a real gap, not a lucky seed.

Several claims judged at once (the paper's three at one training length) are a family: by luck
alone one of three tests passes at 95% one time in seven. :func:`holm_adjusted` gives each
comparison the p-value of Holm's step-down correction, so that "holds at the family's 95%" means
that no claim of the family passes by that luck more than one time in twenty.

A side with one seed has no std of its own: it takes the pooled seed std of the rows that have
several, and the margin is then twice the standard error (the normal approximation), as a pooled
std is known better than one row's.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

SIGNIFICANCE = 0.05
CONFIDENCE = 1 - SIGNIFICANCE
WELCH = "Welch's t, 95%"
POOLED = "2 SE, pooled seed std"


def mean_and_spread(values: Sequence[float], digits: int) -> str:
    """'mean ± std' over several values, the value alone for one."""
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.{digits}f}{spread}"


def pooled_std(samples: Sequence[Sequence[float]]) -> float | None:
    """The root of the mean variance of the samples with two values or more; None if there are none."""
    variances = [statistics.variance(values) for values in samples if len(values) > 1]
    return math.sqrt(statistics.fmean(variances)) if variances else None


def welch_degrees_of_freedom(variance_a: float, n_a: int, variance_b: float, n_b: int) -> float:
    """Welch-Satterthwaite: (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1))."""
    part_a, part_b = variance_a / n_a, variance_b / n_b
    denominator = part_a**2 / (n_a - 1) + part_b**2 / (n_b - 1)
    return (part_a + part_b) ** 2 / denominator if denominator > 0 else float(n_a + n_b - 2)


def compare_samples(
    a: Sequence[float], b: Sequence[float], fallback_std: float, *, a_name: str = "a", b_name: str = "b"
) -> dict[str, Any]:
    """The verdict on "mean(a) > mean(b)" (see the module's docstring), with everything behind it."""
    from scipy import stats

    mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
    difference = mean_a - mean_b
    if len(a) > 1 and len(b) > 1:
        variance_a, variance_b = statistics.variance(a), statistics.variance(b)
        error = math.sqrt(variance_a / len(a) + variance_b / len(b))
        freedom = welch_degrees_of_freedom(variance_a, len(a), variance_b, len(b))
        margin = float(stats.t.ppf(0.5 + CONFIDENCE / 2, freedom)) * error
        p = float(2 * stats.t.sf(abs(difference) / error, freedom)) if error > 0 else float(difference == 0)
        test = WELCH
    else:
        std_a, std_b = (statistics.stdev(side) if len(side) > 1 else fallback_std for side in (a, b))
        error = math.sqrt(std_a**2 / len(a) + std_b**2 / len(b))
        margin, p, test = 2 * error, None, POOLED
    verdict = "holds" if difference > margin else "does not hold" if difference < -margin else "within noise"
    return {
        "a": a_name,
        "b": b_name,
        "a_mean": mean_a,
        "b_mean": mean_b,
        "a_std": statistics.stdev(a) if len(a) > 1 else None,
        "b_std": statistics.stdev(b) if len(b) > 1 else None,
        "a_n": len(a),
        "b_n": len(b),
        "difference": difference,
        "standard_error": error,
        "margin": margin,
        "p": p,
        "test": test,
        "verdict": verdict,
    }


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of m p-values: the i-th smallest becomes max over j <= i of
    min(1, (m - j + 1) * p_(j)), in the order given. Rejecting where the adjusted value is below
    alpha keeps the family-wise error rate at alpha, with no assumption on how the tests depend."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def family_verdict(difference: float, adjusted_p: float) -> str:
    """The verdict at the family's 95%: the sign of the difference where its adjusted p is below 5%."""
    if adjusted_p >= SIGNIFICANCE:
        return "within noise"
    return "holds" if difference > 0 else "does not hold"


def combine(verdicts: Sequence[str]) -> str:
    """A claim made of several comparisons: it holds only if each holds, and fails if any fails."""
    return "does not hold" if "does not hold" in verdicts else "within noise" if "within noise" in verdicts else "holds"
