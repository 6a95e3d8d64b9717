"""Benchmark: a CT-sized volume (300 x 512 x 512) through every capability, with peak memory.

Run ``python benchmarks/bench_large.py`` (``--shape 150 256 256`` for a quick look,
``--cases registration`` for some jobs only).

The volume is synthetic and CT-like: a body ellipsoid in air with smooth texture and 40 bright
lesions, float32, 0.7 x 0.7 x 1.0 mm voxels (314 MB at full size). Each job runs in its own
Python process, so its peak resident memory (``ru_maxrss``) is its own. The job first runs
once on a small volume (imports, lazy initialisation); the table gives the peak above the
baseline taken after that and after making the input, as a multiple of the volume's bytes:
how many volume-sized copies the job holds at its worst. (``ru_maxrss`` is a high-water mark:
a peak below the baseline's own earlier high-water mark reads as 0.)

Jobs: Otsu segmentation with connected components of at least 20 mm^3; panoptic evaluation of that segmentation
against a copy with every lesion shifted by one voxel (HD95 and ASSD per instance); Affine
registration of the volume to a shifted copy (ANTs in its own process: its peak is reported
separately, a shrink-by-4 first level, 20/10/0 iterations); saliency and Grad-CAM with the
bundled classifier (which resizes its input to 32^3).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

JOBS = ("segmentation", "evaluation", "registration", "saliency", "gradcam")


def ct_volume(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like float32 volume (HU-ish) and its lesion mask, made slab by slab."""
    rng = np.random.default_rng(seed)
    z, y, x = (np.arange(n, dtype=np.float32) for n in shape)
    volume = np.full(shape, -1000.0, np.float32)
    lesions = np.zeros(shape, bool)
    centres = rng.uniform(0.25, 0.75, (40, 3)) * np.array(shape)
    radii = rng.uniform(4, 9, 40)
    cz, cy, cx = (n / 2 for n in shape)
    for k in range(shape[0]):
        body = (((y[:, None] - cy) / (0.42 * shape[1])) ** 2
                + ((x[None, :] - cx) / (0.45 * shape[2])) ** 2
                + ((k - cz) / (0.48 * shape[0])) ** 2) <= 1
        texture = 40 * np.sin(y[:, None] / 7.0 + k / 11.0) * np.cos(x[None, :] / 9.0)
        volume[k] = np.where(body, 40 + texture, -1000)
        for (lz, ly, lx), r in zip(centres, radii, strict=True):
            if abs(k - lz) < r:
                disc = (y[:, None] - ly) ** 2 + (x[None, :] - lx) ** 2 <= r * r - (k - lz) ** 2
                volume[k][disc & body] = 250
                lesions[k] |= disc & body
        # noise slab by slab in float32: a whole-volume float64 draw would set the memory
        # high-water mark above the jobs' own peaks
        volume[k] += 10 * rng.standard_normal(shape[1:], dtype=np.float32)
    return volume, lesions


def run_one(job: str, shape: tuple[int, int, int], warm_up: bool = True) -> dict:
    if warm_up:  # imports and lazy initialisation, on a small volume, before the baseline
        run_one(job, (32, 48, 48), warm_up=False)
    volume, _ = ct_volume(shape)
    spacing = (1.0, 0.7, 0.7)
    if job == "evaluation":  # the inputs are made before the baseline is taken
        from napari_xaimed.segmentation import segment
        reference = segment(volume, "otsu", spacing=spacing, classes=3, min_size_mm3=20)
        prediction = np.roll(reference, 1, axis=2)
    if job == "registration":
        moving = np.roll(volume, (2, 3, -2), axis=(0, 1, 2))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    extra: dict = {}
    if job == "segmentation":
        from napari_xaimed.segmentation import segment
        labels = segment(volume, "otsu", spacing=spacing, classes=3, min_size_mm3=20)
        extra["instances"] = int(labels.max())
    elif job == "evaluation":
        from napari_xaimed.evaluation import evaluate
        result = evaluate(reference, prediction, spacing=spacing, instance_input=True,
                          metrics=("hd95", "assd"))["all"]
        extra["tp"] = result.tp
    elif job == "registration":
        from napari_xaimed.registration import register
        result = register(volume, moving, fixed_spacing=spacing, moving_spacing=spacing,
                          transform="Affine", iterations=(20, 10, 0), seed=0)
        extra["ncc_after"] = round(result.metrics["ncc_after"], 3)
        extra["ants_peak_bytes"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    else:
        from napari_xaimed.attribution import attribute
        extra["shape"] = list(attribute("bundled", volume, job, target=1).map.shape)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"job": job, "seconds": seconds, "above_baseline": max(0, peak - base),
            "volume_bytes": volume.nbytes, **extra}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(300, 512, 512))
    parser.add_argument("--cases", nargs="+", choices=JOBS, default=JOBS, metavar="JOB",
                        help=f"jobs to run (default: all of {', '.join(JOBS)})")
    parser.add_argument("--one", choices=JOBS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = tuple(args.shape)
    if args.one:
        print(json.dumps(run_one(args.one, shape)))
        return 0
    rows = []
    for job in args.cases:
        out = subprocess.run([sys.executable, __file__, "--one", job, "--shape",
                              *map(str, shape)], capture_output=True, text=True, check=False)
        if out.returncode:
            print(f"  {job}: failed\n{out.stderr[-2000:]}", flush=True)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(f"  {job}: {row['seconds']:.1f} s, peak +{row['above_baseline'] / 2**20:.0f} MB",
              flush=True)
    size = rows[0]["volume_bytes"] if rows else 0
    print(f"\nvolume {shape[0]}x{shape[1]}x{shape[2]} float32 = {size / 2**20:.0f} MB")
    print(f"{'job':<15}{'seconds':>9}{'peak above baseline':>22}{'volumes':>9}  notes")
    for row in rows:
        notes = {k: v for k, v in row.items()
                 if k not in ("job", "seconds", "above_baseline", "volume_bytes")}
        if "ants_peak_bytes" in notes:
            notes["ants_peak_bytes"] = f"{notes['ants_peak_bytes'] / 2**20:.0f} MB"
        print(f"{row['job']:<15}{row['seconds']:>9.1f}{row['above_baseline'] / 2**20:>19.0f} MB"
              f"{row['above_baseline'] / size:>9.2f}  {notes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
