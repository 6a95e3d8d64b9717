"""The benchmark scripts' own machinery: spreads over repeats, ratios with their range, a refused
method as a row, and no abort without a display."""

import importlib
import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_xaimed import XaimedError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch):
    """Import a benchmark module from its folder, as the scripts import each other."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))

    def load(name):
        return importlib.import_module(name)

    return load


def test_timing_keeps_every_repeat_and_ratios_their_range(bench, monkeypatch):
    timing = bench("_timing")
    clock = itertools.chain([0.0, 3.0, 3.0, 4.0, 4.0, 6.0],  # three calls: 3 s, 1 s, 2 s
                            itertools.count(7.0))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: next(clock))
    measured = timing.measure(lambda: "out", 3)
    assert measured.seconds == [3.0, 1.0, 2.0] and measured.result == "out"
    assert (measured.best, measured.median, measured.low, measured.high) == (1.0, 2.0, 1.0, 3.0)
    assert str(measured) == "1.000 s (median 2.000, 1.000-3.000, n=3)"
    # pairs run back to back are divided pair by pair: the ratio of the best times, and range
    ours, peer = timing.Timing([1.0, 2.0, 1.5]), timing.Timing([4.0, 5.0, 2.25])
    faster = timing.ratio(peer, ours)
    assert faster.value == 2.25 and faster.pairs == [4.0, 2.5, 1.5]
    assert (faster.low, faster.median, faster.high) == (1.5, 2.5, 4.0)
    assert str(faster) == "2.25x (1.50-4.00x)"
    # unequal repeats: every run of one against every run of the other; numbers are one run
    assert timing.ratio(timing.Timing([6.0]), [2.0, 3.0]).pairs == [3.0, 2.0]
    assert timing.ratio(3.0, timing.Timing([1.0, 1.5])).text(1) == "3.0x (2.0-3.0x)"
    order = []
    first, second = timing.alternate(lambda: order.append("a"), lambda: order.append("b"), 2,
                                     warmup=1)
    assert order == ["a", "b"] * 3 and len(first.seconds) == len(second.seconds) == 2


def test_attribution_benchmark_makes_a_refusal_a_row_and_goes_on(bench, monkeypatch, capsys):
    attribution = bench("bench_attribution")
    real = attribution.attribute

    def refusing(model, volume, method, **kwargs):
        if method == "saliency":
            raise XaimedError("saliency gave a map of zeros on this volume: a test refusal")
        return real(model, volume, method, **kwargs)

    monkeypatch.setattr(attribution, "attribute", refusing)
    assert attribution.main(["--size", "16", "--device", "cpu", "--methods", "saliency",
                             "integrated_gradients"]) == 0
    out = capsys.readouterr().out
    table = out[out.index("case"):]
    assert "16^3 saliency" in table and "refused" in table
    assert "saliency gave a map of zeros on this volume: a test refusal" in table
    row = next(line for line in table.splitlines() if "16^3 integrated_gradients" in line)
    assert row.rstrip().endswith(("yes", "NO"))  # the method after the refusal was measured


def test_registration_event_loop_runs_without_a_display():
    """Without DISPLAY, Qt's xcb platform aborts the process (SIGABRT): the gap measurement
    gets a screen first (Xvfb, or Qt's offscreen platform)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    code = ("import time, bench_registration as b; "
            "print('gap', b.longest_gap(lambda: time.sleep(0.05)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=BENCHMARKS, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    gap = float(out.stdout.split("gap")[-1])
    assert 0.0 < gap < 5.0
