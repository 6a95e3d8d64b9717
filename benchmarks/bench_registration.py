"""Benchmark: our registration against bare ``ants.registration``, and the viewer's event loop.

Run ``python benchmarks/bench_registration.py`` (64^3 and 128^3, SyN and Affine, then the
event-loop gap at 64^3); ``--quick`` runs 64^3 only; ``--cases`` picks any of ``speed,gap``.

Inputs: ``samples.longitudinal_pair`` at 1 mm isotropic (seed 0): a phantom and the same anatomy
moved by a known smooth deformation plus a small affine.

speed : for each size and transform, best of 3 (``--repeats``) alternating runs of bare
        ``ants.registration`` in this process (ITK threads 1,
        the same nonzero random seed, ``outprefix`` in a temporary folder) and ours,
        ``register(...)`` with the same transform and seed: a fresh interpreter that imports
        ANTs, registers, composes the transforms into one field, then in this process the
        Jacobian, quality figures (NCC, MI before/after, Jacobian summary) and a vectors
        subsample. Overhead = ours - bare, as a share of bare. The ANTs time measured inside
        our child process is printed too. Ours runs twice: "cold", a script's first call, which
        starts a Python and imports ANTs (~2-3 s) on the clock, and "warm", after
        ``registration.prewarm()`` had that process import ANTs beforehand (what the widget
        does when it opens, and after each run). Then "script", both sides as a script's
        first call: a fresh interpreter that loads the pair from .npy and runs either
        ``import ants; ants.registration(...)`` or ``from napari_xaimed.registration import
        register; register(...)`` (+ vectors), timed from the outside (interpreter start and
        every import on both clocks). Target: overhead under 10% for SyN at 128^3, warm (the
        viewer's case) and script (a script's); cold printed beside them.
gap   : the longest pause of a Qt event loop (a 10 ms QTimer) while a SyN 64^3 runs in a
        worker thread, as napari's thread workers do: bare ``ants.registration`` in the thread
        (ANTs holds the GIL) against our ``register_steps`` in the thread (ANTs in its own
        process, the thread polls its log). Target: under 100 ms for ours. Without a display
        the benchmark starts Xvfb itself (or falls back to Qt's offscreen platform, which runs
        the event loop just the same), see ``_display.py``.

Times are printed as the best, median and range over the repeats; the overhead as the ratio of
the best times with its range over the back-to-back pairs. A case that fails is reported with
its error, and the summary table is printed all the same.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time

os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = "1"  # before ANTs is imported

import numpy as np  # noqa: E402
from _display import ensure_display  # noqa: E402
from _timing import Timing, ratio  # noqa: E402

from napari_xaimed.registration import prewarm, register, register_steps  # noqa: E402
from napari_xaimed.registration.params import ants_seed  # noqa: E402
from napari_xaimed.samples import longitudinal_pair  # noqa: E402

SEED = 0
OVERHEAD_TARGET = 0.10
GAP_TARGET_S = 0.100


def bare_ants(pair, transform: str) -> float:
    """Seconds of a bare ants.registration, as a user would call it."""
    import ants

    ants.config._random_seed = ants_seed(SEED)
    fixed = ants.from_numpy(pair.fixed, spacing=pair.spacing)
    moving = ants.from_numpy(pair.moving, spacing=pair.spacing)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        ants.registration(fixed, moving, transform, outprefix=os.path.join(tmp, "bare_"))
        return time.perf_counter() - started


def ours(pair, transform: str, warm: bool) -> tuple[float, float]:
    """Seconds of our register (everything a user gets), and the ANTs part inside it."""
    if warm:
        prewarm(seed=SEED)
        time.sleep(6.0)  # the user picking layers: ANTs gets imported meanwhile
    started = time.perf_counter()
    result = register(pair.fixed, pair.moving, fixed_spacing=pair.spacing,
                      moving_spacing=pair.spacing, transform=transform, seed=SEED)
    result.vectors(step=8)
    total = time.perf_counter() - started
    return total, result.timings["registration_s"]


_BARE_SCRIPT = """
import json, sys, time, numpy as np
import ants
folder, transform, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
ants.config._random_seed = seed
image = lambda n: ants.from_numpy(np.load(f"{folder}/{n}.npy"), spacing=(1.0, 1.0, 1.0))
fixed, moving = image("fixed"), image("moving")
started = time.perf_counter()
ants.registration(fixed, moving, transform, outprefix=f"{folder}/bare_")
print(json.dumps({"registration_s": time.perf_counter() - started}))
"""

_OURS_SCRIPT = """
import json, sys, numpy as np
from napari_xaimed.registration import register
folder, transform, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
fixed, moving = np.load(f"{folder}/fixed.npy"), np.load(f"{folder}/moving.npy")
result = register(fixed, moving, transform=transform, seed=seed)
result.vectors(step=8)
print(json.dumps({"registration_s": result.timings["registration_s"]}))
"""


def script_run(code: str, folder: str, transform: str) -> tuple[float, float]:
    """Wall seconds of a fresh interpreter running ``code`` (everything on the clock), and
    the ANTs registration time it printed."""
    import json
    import subprocess

    env = {**os.environ, "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, folder, transform, str(ants_seed(SEED))],
                          env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - started
    return wall, json.loads(done.stdout.strip().splitlines()[-1])["registration_s"]


def case_speed(sizes: list[int], repeats: int) -> list[tuple]:
    rows = []
    for size in sizes:
        pair = longitudinal_pair(shape=(size,) * 3, spacing=(1.0, 1.0, 1.0), seed=SEED)
        for transform in ("Affine", "SyN"):
            # bare and warm alternate, `repeats` pairs; cold once (a session's first call)
            bare, warm = [], []
            for _ in range(repeats):
                bare.append(bare_ants(pair, transform))
                warm.append(ours(pair, transform, warm=True))
            cold = [ours(pair, transform, warm=False)]
            # both sides as a script's first call, alternating
            bare_script, ours_script = [], []
            with tempfile.TemporaryDirectory() as tmp:
                np.save(os.path.join(tmp, "fixed.npy"), pair.fixed.astype(np.float32))
                np.save(os.path.join(tmp, "moving.npy"), pair.moving.astype(np.float32))
                for _ in range(max(1, repeats - 1)):
                    bare_script.append(script_run(_BARE_SCRIPT, tmp, transform))
                    ours_script.append(script_run(_OURS_SCRIPT, tmp, transform))
            bare_t = Timing(bare)
            for label, runs, reference in (("cold", cold, bare_t), ("warm", warm, bare_t),
                                           ("script", ours_script,
                                            Timing([t for t, _ in bare_script]))):
                total = Timing([t for t, _ in runs])
                inside = Timing([i for _, i in runs])
                overhead = ratio(total, reference)
                target = (OVERHEAD_TARGET if (transform == "SyN" and size == 128
                                              and label != "cold") else None)
                name = f"{transform} {size}^3 {label}"
                rows.append((name, reference, total, inside, overhead, target))
                print(f"  {name}: bare {reference.text(digits=1)}, ours {total.text(digits=1)} "
                      f"(ANTs inside {inside.text(digits=1)}), overhead "
                      f"{100 * (overhead.value - 1):.1f}% (pairs "
                      f"{100 * (overhead.low - 1):.1f}% to {100 * (overhead.high - 1):.1f}%)",
                      flush=True)
    return rows


def longest_gap(work) -> float:
    """Run ``work`` in a thread while a Qt event loop ticks every 10 ms; the longest pause."""
    ensure_display()  # before Qt starts: without a display it would abort the process
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])
    ticks: list[float] = []
    thread = threading.Thread(target=work)

    def begin():
        ticks.append(time.perf_counter())  # the first pause is measured from the start
        thread.start()

    timer = QTimer()
    timer.setInterval(10)

    def tick():
        ticks.append(time.perf_counter())
        if not thread.is_alive() and len(ticks) > 5:
            timer.stop()
            app.quit()

    timer.timeout.connect(tick)
    timer.start()
    QTimer.singleShot(0, begin)  # start the work once the event loop runs
    app.exec()
    thread.join()
    return float(np.max(np.diff(ticks))) if len(ticks) > 1 else float("nan")


def case_gap() -> list[tuple]:
    pair = longitudinal_pair(shape=(64, 64, 64), spacing=(1.0, 1.0, 1.0), seed=SEED)

    def bare():
        bare_ants(pair, "SyN")

    def spawned():
        for _ in register_steps(pair.fixed, pair.moving, fixed_spacing=pair.spacing,
                                moving_spacing=pair.spacing, transform="SyN", seed=SEED):
            pass

    print(f"  event loop on {ensure_display()}", flush=True)
    gap_bare = longest_gap(bare)
    gap_ours = longest_gap(spawned)
    print(f"  event-loop gap during SyN 64^3: bare ANTs in a thread {1000 * gap_bare:.0f} ms, "
          f"ours {1000 * gap_ours:.0f} ms", flush=True)
    return [("gap SyN 64^3", gap_bare, gap_ours)]


def run_case(name: str, run, cases: list[str], failed: list[str]) -> list[tuple]:
    """The case's rows; a case that raises is a line of the summary, not the end of the run."""
    if name not in cases:
        return []
    try:
        return run()
    except Exception as exc:
        failed.append(f"{name}: failed ({type(exc).__name__}: {exc})")
        print(f"  {failed[-1]}", flush=True)
        return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64^3 only")
    parser.add_argument("--cases", default="speed,gap", help="any of speed,gap")
    parser.add_argument("--repeats", type=int, default=3,
                        help="bare and warm runs per case, best taken (default 3)")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    import ants

    print(f"antspyx {ants.__version__}, numpy {np.__version__}, {os.cpu_count()} cores; "
          "ITK threads 1, seed 0", flush=True)
    sizes = [64] if args.quick else [64, 128]
    failed: list[str] = []
    speed = run_case("speed", lambda: case_speed(sizes, args.repeats), cases, failed)
    gaps = run_case("gap", case_gap, cases, failed)
    print()
    print(f"{'case':<20}{'bare ants':>12}{'ours':>10}{'ANTs inside':>13}{'overhead':>10}"
          f"{'pairs':>18}{'non-ANTs':>10}{'target':>10}{'met':>6}")
    print("-" * 109)
    for name, bare, total, inside, overhead, target in speed:
        met = "-" if target is None else ("yes" if overhead.value - 1 < target else "NO")
        tgt = "-" if target is None else f"< {100 * target:.0f}%"
        rest = 100 * (total.best - inside.best) / bare.best
        pairs = f"{100 * (overhead.low - 1):.0f}% to {100 * (overhead.high - 1):.0f}%"
        print(f"{name:<20}{bare.best:>10.1f} s{total.best:>8.1f} s{inside.best:>11.1f} s"
              f"{100 * (overhead.value - 1):>9.1f}%{pairs:>18}{rest:>9.1f}%{tgt:>10}{met:>6}")
    for name, bare, ours_gap in gaps:
        met = "yes" if ours_gap < GAP_TARGET_S else "NO"
        print(f"{name:<20}{1000 * bare:>9.0f} ms{1000 * ours_gap:>7.0f} ms{'':>13}{'':>10}"
              f"{'':>18}{'':>10}{'< 100 ms':>10}{met:>6}")
    for line in failed:
        print(line)
    print("times: best of the repeats (the pairs column: the overhead of each back-to-back "
          "pair, low to high).")
    print("overhead = (ours - bare) / bare; ours includes starting a Python with ANTs, composing "
          "the field, the Jacobian, quality figures and vectors.")
    print("cold/warm rows: bare ants.registration in this process (ANTs imported); script rows: "
          "both sides in a fresh interpreter, imports and start-up on both clocks.")
    print("non-ANTs = (ours - ANTs inside ours) / bare: the same overhead without the run-to-run "
          "noise of ANTs itself (often +-15% on this machine).")
    print("gap: longest pause of a 10 ms Qt timer while the registration runs in a thread "
          "(bare column: ANTs in the thread; ours: ANTs in its own process).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
