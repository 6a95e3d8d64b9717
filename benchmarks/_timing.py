"""Timing shared by the benchmark scripts (imported from their own folder).

A time on a shared machine is a spread, not a number: :func:`measure` keeps every repeat and
:class:`Timing` prints the best, the median and the range; :func:`alternate` runs two contenders
back to back so each pair sees the same load, and :class:`Ratio` prints a ratio with the range
of the pairs' ratios. A ratio quoted in the docs comes with that range.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


def _sync() -> None:
    import sys

    torch = sys.modules.get("torch")  # only when the benchmark uses torch
    if torch is not None and torch.cuda.is_available():
        torch.cuda.synchronize()


class Spread:
    """The median and range of repeated values (a :class:`Timing`'s seconds, a
    :class:`Ratio`'s pairs), and the one way the scripts write that range."""

    def values(self) -> list[float]:
        raise NotImplementedError

    @property
    def median(self) -> float:
        return statistics.median(self.values())

    @property
    def low(self) -> float:
        return min(self.values())

    @property
    def high(self) -> float:
        return max(self.values())

    def spread(self, digits: int = 3, scale: float = 1.0, unit: str = "",
               median: bool = False) -> str:
        """``low-high`` (each times ``scale``, ``digits`` decimals) followed by ``unit``;
        ``median=True`` puts ``median, `` before it."""
        text = f"{self.low * scale:.{digits}f}-{self.high * scale:.{digits}f}{unit}"
        return f"{self.median * scale:.{digits}f}, {text}" if median else text


@dataclass
class Timing(Spread):
    """Seconds of each repeat of one measurement, and the last call's result."""

    seconds: list[float]
    result: Any = field(default=None, repr=False)

    def values(self) -> list[float]:
        return self.seconds

    @property
    def best(self) -> float:
        return min(self.seconds)

    def __str__(self) -> str:
        return self.text()

    def text(self, scale: float = 1.0, unit: str = "s", digits: int = 3) -> str:
        """``best unit (median m, low-high, n=N)``; one repeat: just the time."""
        if len(self.seconds) == 1:
            return f"{self.best * scale:.{digits}f} {unit} (n=1)"
        return (f"{self.best * scale:.{digits}f} {unit} (median "
                f"{self.spread(digits, scale, median=True)}, n={len(self.seconds)})")


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds of one call of ``fn`` (CUDA work waited for) and its result."""
    _sync()
    started = time.perf_counter()
    result = fn()
    _sync()
    return time.perf_counter() - started, result


def measure(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> Timing:
    """Every one of ``repeats`` calls of ``fn`` (after ``warmup`` untimed ones)."""
    for _ in range(warmup):
        fn()
    seconds, result = [], None
    for _ in range(repeats):
        t, result = timed(fn)
        seconds.append(t)
    return Timing(seconds, result)


def best(fn: Callable[[], Any], repeats: int) -> float:
    """Fastest of ``repeats`` calls of ``fn``, in seconds (CUDA work waited for)."""
    return measure(fn, repeats).best


def alternate(first: Callable[[], Any], second: Callable[[], Any], repeats: int,
              warmup: int = 0) -> tuple[Timing, Timing]:
    """``repeats`` back-to-back pairs (first, then second): a drift in the machine's load hits
    both members of a pair alike."""
    for _ in range(warmup):
        first()
        second()
    a, b, result_a, result_b = [], [], None, None
    for _ in range(repeats):
        t, result_a = timed(first)
        a.append(t)
        t, result_b = timed(second)
        b.append(t)
    return Timing(a, result_a), Timing(b, result_b)


@dataclass
class Ratio(Spread):
    """``numerator / denominator`` of two timings: the ratio of the best times, the median and
    the range over pairs (repeat i with repeat i when both have as many repeats, measured
    back to back; otherwise every repeat of one with every repeat of the other)."""

    value: float
    pairs: list[float]

    def values(self) -> list[float]:
        return self.pairs

    def __str__(self) -> str:
        return self.text()

    def text(self, digits: int = 2) -> str:
        if len(self.pairs) == 1:
            return f"{self.value:.{digits}f}x"
        return f"{self.value:.{digits}f}x ({self.spread(digits, unit='x')})"


def ratio(numerator: Timing | Sequence[float] | float,
          denominator: Timing | Sequence[float] | float) -> Ratio:
    """The ratio of two timings with its range (see :class:`Ratio`); plain numbers count as
    one repeat."""
    top, bottom = _seconds(numerator), _seconds(denominator)
    if len(top) == len(bottom):
        pairs = [t / b for t, b in zip(top, bottom, strict=True)]
    else:
        pairs = [t / b for t in top for b in bottom]
    return Ratio(min(top) / min(bottom), pairs)


def _seconds(value: Timing | Sequence[float] | float) -> list[float]:
    if isinstance(value, Timing):
        return list(value.seconds)
    if isinstance(value, int | float):
        return [float(value)]
    return [float(v) for v in value]
