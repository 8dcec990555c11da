"""Rules for the values a user passes: numeric bounds and choices.

One rule serves everywhere a value enters: a config field declares it next to its
default (``squeeze_span.config.bounded``), a command-line flag parses with it
(:func:`argument`), and a loaded file checks its entries against it. Each rule both
checks a value and describes what it accepts, so every refusal reads alike:
``train.batch_size=1 is out of range; it must be an integer >= 2``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Bounds:
    """Finite numbers with ``min``/``max`` inclusive and ``above``/``below`` exclusive limits (None: no limit)."""

    min: float | None = None
    max: float | None = None
    above: float | None = None
    below: float | None = None
    power_of_two: bool = False

    verdict = "is out of range"

    def admits(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.power_of_two and (value <= 0 or value != 2 ** round(math.log2(value))):
            return False
        return (
            (self.min is None or value >= self.min)
            and (self.max is None or value <= self.max)
            and (self.above is None or value > self.above)
            and (self.below is None or value < self.below)
        )

    def describe(self, integer: bool) -> str:
        """E.g. 'an integer >= 2', 'a finite number in [0, 1)', 'a power of two >= 4'."""
        kind = "a power of two" if self.power_of_two else "an integer" if integer else "a finite number"
        low = (
            ("[", ">=", self.min)
            if self.min is not None
            else ("(", ">", self.above)
            if self.above is not None
            else None
        )
        high = (
            ("]", "<=", self.max)
            if self.max is not None
            else (")", "<", self.below)
            if self.below is not None
            else None
        )
        if low and high:
            return f"{kind} in {low[0]}{low[2]}, {high[2]}{high[0]}"
        limit = low or high
        return f"{kind} {limit[1]} {limit[2]}" if limit else kind


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of strings."""

    options: tuple[str, ...]

    verdict = "is unknown"

    def admits(self, value: Any) -> bool:
        return value in self.options

    def describe(self, integer: bool = False) -> str:
        return f"one of {', '.join(self.options)}"


Rule = Bounds | Choice


def argument(kind: type[int] | type[float], **bounds: float | bool) -> Callable[[str], Any]:
    """An argparse ``type=`` that parses a ``kind`` within ``Bounds(**bounds)``, e.g. ``argument(int, min=1)``.

    A refusal raises ``argparse.ArgumentTypeError``, whose message argparse puts after the flag:
    ``argument --n: 0 is out of range; it must be an integer >= 1``.
    """
    rule = Bounds(**bounds)
    description = rule.describe(kind is int)

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {description}") from None
        if not rule.admits(value):
            raise argparse.ArgumentTypeError(f"{text} {rule.verdict}; it must be {description}")
        return value

    return parse
