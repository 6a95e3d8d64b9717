"""Benchmark: does the viewer stay responsive while each capability runs on a 128^3 volume?

Run ``python benchmarks/bench_responsiveness.py``; ``--size 64`` for a quick look. Without a
display it starts Xvfb itself (or, without Xvfb, falls back to Qt's offscreen platform, which
runs the event loop just the same; see ``_display.py``).

Each job runs exactly as the widgets run it: its step generator handed to the widgets'
``JobPanel`` (a napari ``thread_worker`` with a progress bar, the ``yielded`` signal updating
the bar in the GUI thread). Meanwhile a 10 ms ``QTimer`` ticks in the Qt event loop; the longest
pause between two ticks is how long the viewer would have frozen. Target: under 100 ms.

Jobs (128^3 sample data, 1 mm): Otsu segmentation with instances; the bundled segmenter by
sliding windows; panoptic evaluation with HD95/ASSD/NSD and Voronoi regions on the panoptic
pair; Affine registration of the longitudinal pair (ANTs in its own process); saliency,
Grad-CAM, Integrated Gradients (32 steps) and occlusion (window 8, stride 4) with the bundled
classifier; a deletion curve (20 steps); a job of 200,000 steps that only reports progress,
once as the panel runs it (updates thinned to one per PROGRESS_INTERVAL_S) and once with every
step sent to the GUI thread.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _display import ensure_display
from _timing import Timing

GAP_TARGET_S = 0.100


def jobs(size: int) -> list[tuple[str, object]]:
    """(name, a function returning a fresh step generator) for each capability."""
    from napari_xaimed.attribution import attribute, attribute_steps, perturbation_curve_steps
    from napari_xaimed.evaluation import evaluate_steps
    from napari_xaimed.registration import register_steps
    from napari_xaimed.samples import lesion_volume, longitudinal_pair, panoptic_pair
    from napari_xaimed.segmentation import segment_steps

    shape = (size,) * 3
    lesion = lesion_volume(shape=shape, spacing=(64 / size,) * 3, seed=1, n_lesions=3)
    pair = longitudinal_pair(shape=shape, spacing=(1.0, 1.0, 1.0), seed=2)
    panoptic = panoptic_pair(shape=shape, seed=3)
    saliency = attribute("bundled", lesion.image, "saliency", target=1).map
    image = lesion.image
    return [
        ("segmentation: otsu", lambda: segment_steps(image, "otsu", spacing=lesion.spacing,
                                                     classes=3, min_size_mm3=10)),
        ("segmentation: model", lambda: segment_steps(image, "model", spacing=lesion.spacing,
                                                      roi_size=32)),
        ("evaluation: all metrics + voronoi", lambda: evaluate_steps(
            panoptic.reference, panoptic.prediction, spacing=panoptic.spacing,
            instance_input=True, voronoi=True, metrics=("hd95", "assd", "nsd"))),
        ("registration: Affine", lambda: register_steps(
            pair.fixed, pair.moving, fixed_spacing=pair.spacing, moving_spacing=pair.spacing,
            transform="Affine", seed=0)),
        ("attribution: saliency", lambda: attribute_steps("bundled", image, "saliency",
                                                          target=1)),
        ("attribution: gradcam", lambda: attribute_steps("bundled", image, "gradcam",
                                                         target=1)),
        ("attribution: integrated gradients", lambda: attribute_steps(
            "bundled", image, "integrated_gradients", target=1, steps=32)),
        ("attribution: occlusion", lambda: attribute_steps(
            "bundled", image, "occlusion", target=1, window=8, stride=4)),
        ("explanation: deletion curve", lambda: perturbation_curve_steps(
            "bundled", image, saliency, "deletion", target=1, steps=20,
            spacing=lesion.spacing)),
        (f"progress: {TINY_STEPS:,} tiny steps", lambda: tiny_steps(TINY_STEPS)),
    ]


#: Steps of the job that does nothing but report progress (a per-window loop's worth).
TINY_STEPS = 200_000


def tiny_steps(n: int):
    """A job that only reports progress, as fast as it can: what the panel's thinning of
    progress updates (``PROGRESS_INTERVAL_S``) is for."""
    from napari_xaimed._core.progress import Progress

    for i in range(n):
        yield Progress(i, n, "step")
    return n


def longest_gap(make_steps) -> tuple[float, float, str]:
    """Run one job through a JobPanel while a 10 ms timer ticks: (longest pause, seconds,
    outcome)."""
    ensure_display()  # before Qt starts: without a display it would abort the process
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_xaimed.viewer.widgets._job import JobPanel

    app = QApplication.instance() or QApplication(sys.argv[:1])
    panel = JobPanel("Run")
    panel.show()
    ticks: list[float] = []
    outcome: list[str] = []
    timer = QTimer()
    timer.setInterval(10)
    started = [0.0]

    def begin() -> None:
        started[0] = time.perf_counter()
        ticks.append(started[0])
        panel.start(make_steps(), lambda result, seconds: None, "benchmark job")

    def finished(status: str) -> None:
        outcome.append(status)
        outcome.append(f"{time.perf_counter() - started[0]:.6f}")

    def tick() -> None:
        ticks.append(time.perf_counter())
        if outcome and len(ticks) > 5:
            timer.stop()
            app.quit()

    panel.finished.connect(finished)
    timer.timeout.connect(tick)
    timer.start()
    QTimer.singleShot(0, begin)
    app.exec()
    panel.close()
    return float(np.max(np.diff(ticks))), float(outcome[1]), outcome[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs per job after the first (default 2); the worst pause counts")
    args = parser.parse_args(argv)
    print(f"event loop on {ensure_display()}", flush=True)
    import napari.qt.threading  # noqa: F401 - loaded in any napari session before a widget runs
    import napari.utils  # noqa: F401

    import napari_xaimed.viewer.widgets  # noqa: F401 - what docking a widget loads
    rows = []
    for name, make in jobs(args.size):
        first, _, _ = longest_gap(make)  # first run: pays the imports of this capability
        runs = [longest_gap(make) for _ in range(args.repeats)]
        gaps = Timing([r[0] for r in runs])
        seconds = Timing([r[1] for r in runs])
        status = "done" if all(r[2] == "done" for r in runs) else runs[-1][2]
        rows.append((name, first, gaps, seconds, status))
        print(f"  {name}: longest pause {gaps.text(1000, 'ms', 0)} over {seconds.text(digits=1)}"
              f" ({status}); first run {1000 * first:.0f} ms", flush=True)
    print(f"\n{'job (' + str(args.size) + '^3)':<40}{'worst pause':>13}{'range':>14}{'job':>9}"
          f"{'first run':>12}  met")
    print("-" * 94)
    for name, first, gaps, seconds, status in rows:
        met = "yes" if gaps.high < GAP_TARGET_S and status == "done" else "NO"
        spread = gaps.spread(0, scale=1000, unit=" ms")
        print(f"{name:<40}{1000 * gaps.high:>10.0f} ms{spread:>14}{seconds.median:>7.1f} s"
              f"{1000 * first:>9.0f} ms  {met}")
    from napari_xaimed.viewer.widgets import _job

    kept, _job.PROGRESS_INTERVAL_S = _job.PROGRESS_INTERVAL_S, 0.0
    try:  # the same job with every step sent to the GUI thread, as before the thinning
        gap, seconds, status = longest_gap(lambda: tiny_steps(TINY_STEPS))
    finally:
        _job.PROGRESS_INTERVAL_S = kept
    print(f"{'  the same, every step sent to the GUI':<40}{1000 * gap:>12.0f} ms{seconds:>7.1f} s"
          f"{'':>12}  {'yes' if gap < GAP_TARGET_S else 'NO'}")
    print(f"target: the Qt event loop never pauses {1000 * GAP_TARGET_S:.0f} ms or more while a "
          "job runs in the widgets' worker (10 ms timer), in any repeat; range: the longest "
          "pause of each repeat, low to high; job: median seconds.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
