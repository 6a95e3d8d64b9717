"""Benchmark: a CT-sized volume (300 x 512 x 512) through every capability, with peak memory.

Run ``python benchmarks/bench_large.py`` (``--shape 150 256 256`` for a quick look,
``--cases registration`` for some jobs only, ``--repeats 3`` for the spread of the times).

The volume is synthetic and CT-like: a body ellipsoid in air with smooth texture and 40 bright
lesions, float32, 0.7 x 0.7 x 1.0 mm voxels (314 MB at full size). Each job runs in its own
Python process, so its peak resident memory (``ru_maxrss``) is its own. The job first runs
once on a small volume (imports, lazy initialisation); the table gives the peak above the
baseline taken after that and after making the input, as a multiple of the volume's bytes:
how many volume-sized copies the job holds at its worst. (``ru_maxrss`` is a high-water mark:
a peak below the baseline's own earlier high-water mark reads as 0.)

Jobs: Otsu segmentation with connected components of at least 20 mm^3; panoptic evaluation of
that segmentation against a copy with every lesion shifted by one voxel (HD95 and ASSD per
instance); Affine registration of the volume to a shifted copy (ANTs in its own process: its
peak is reported separately, a shrink-by-4 first level, 20/10/0 iterations); saliency and
Grad-CAM with the bundled classifier (which resizes its input to 32^3).

``--lazy --workdir DIR`` benchmarks a volume larger than memory instead (default 1000 x 512 x
512, 1 GB of float32): the same CT-like volume written slab by slab to ``DIR/ct.zarr``, then,
each in its own process reading the store lazily: Otsu (3 classes) and connected components
of at least 20 mm^3 (:func:`~napari_xaimed.segmentation.lazy.segment_lazy`, labels written to
``DIR/labels.zarr``); panoptic evaluation of those labels against a copy shifted by one voxel
(:func:`~napari_xaimed.evaluation.lazy.evaluate_lazy`, HD95 and ASSD), and the same for the
40 true lesions (``evaluation_lesions``); saliency and Grad-CAM
(:func:`~napari_xaimed.attribution.lazy.attribute_lazy`, the map written to a Zarr store);
Affine registration of the volume to a copy shifted by (2, 0, 3) voxels (``registration``:
:func:`~napari_xaimed.registration.lazy.register_lazy` on block-mean copies of at most 2**21
voxels, the full-resolution warp written to ``DIR/warped.zarr``; its error is the recovered
shift's distance from the true one, in mm).
``saliency_windows``: sliding-window saliency of a small MONAI UNet (untrained, seed 0) that
takes the volume at its own size, windows 96^3, for the true lesions in 40 planes about the
middle (the network runs on the windows that touch them; every plane is read and written).
About 2 GB of disk at full size.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _timing import Timing

JOBS = ("segmentation", "evaluation", "registration", "saliency", "gradcam")


def ct_planes(shape: tuple[int, int, int], seed: int = 0):
    """The planes of :func:`ct_volume`, one at a time: ``(k, plane, lesion plane)``."""
    rng = np.random.default_rng(seed)
    y, x = (np.arange(n, dtype=np.float32) for n in shape[1:])
    centres = rng.uniform(0.25, 0.75, (40, 3)) * np.array(shape)
    radii = rng.uniform(4, 9, 40)
    cz, cy, cx = (n / 2 for n in shape)
    for k in range(shape[0]):
        body = (((y[:, None] - cy) / (0.42 * shape[1])) ** 2
                + ((x[None, :] - cx) / (0.45 * shape[2])) ** 2
                + ((k - cz) / (0.48 * shape[0])) ** 2) <= 1
        texture = 40 * np.sin(y[:, None] / 7.0 + k / 11.0) * np.cos(x[None, :] / 9.0)
        plane = np.where(body, 40 + texture, -1000).astype(np.float32)
        lesion = np.zeros(shape[1:], bool)
        for (lz, ly, lx), r in zip(centres, radii, strict=True):
            if abs(k - lz) < r:
                disc = (y[:, None] - ly) ** 2 + (x[None, :] - lx) ** 2 <= r * r - (k - lz) ** 2
                plane[disc & body] = 250
                lesion |= disc & body
        # noise plane by plane in float32: a whole-volume float64 draw would set the memory
        # high-water mark above the jobs' own peaks
        plane += 10 * rng.standard_normal(shape[1:], dtype=np.float32)
        yield k, plane, lesion


def ct_volume(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A CT-like float32 volume (HU-ish) and its lesion mask, made slab by slab."""
    volume = np.empty(shape, np.float32)
    lesions = np.zeros(shape, bool)
    for k, plane, lesion in ct_planes(shape, seed):
        volume[k], lesions[k] = plane, lesion
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


# -- --lazy: a volume larger than memory, read from a Zarr store slab by slab ----------------

LAZY_JOBS = ("otsu_components", "evaluation", "evaluation_lesions", "saliency", "gradcam",
             "registration", "saliency_windows")
SHIFT = (2, 0, 3)  # voxels: the registration job's moving image is the volume rolled by it
#: saliency_windows: the region is the true lesions in this many planes about the middle
WINDOW_REGION_PLANES = 40
SPACING = (1.0, 0.7, 0.7)
WARM_SHAPE = (40, 48, 48)


def write_ct_zarr(path: Path, shape: tuple[int, int, int], planes: int = 32) -> None:
    """:func:`ct_volume` written to an OME-Zarr store a slab of planes at a time."""
    from napari_xaimed.io.lazy import create_zarr

    array = create_zarr(path, shape, np.float32, SPACING, chunks=(planes, 256, 256),
                        overwrite=True)
    truth = create_zarr(path.with_name("lesion_mask.zarr"), shape, np.uint8, SPACING,
                        chunks=(planes, 256, 256), is_label=True, overwrite=True)
    buffer = np.empty((planes, *shape[1:]), np.float32)
    masks = np.empty((planes, *shape[1:]), np.uint8)
    for k, plane, lesion in ct_planes(shape):
        buffer[k % planes], masks[k % planes] = plane, lesion
        if k % planes == planes - 1 or k == shape[0] - 1:
            start = k - k % planes
            array[start:k + 1] = buffer[:k + 1 - start]
            truth[start:k + 1] = masks[:k + 1 - start]


def prepare_evaluation(workdir: Path) -> None:
    """The evaluation's inputs: the lazy segmentation (if not there yet) and a copy with every
    instance shifted by one voxel along x, both Zarr stores."""
    import dask.array as da

    from napari_xaimed.io import read_volume
    from napari_xaimed.io.lazy import write_zarr
    from napari_xaimed.segmentation.lazy import label_lazy, segment_lazy

    if not (workdir / "labels.zarr").exists():
        segment_lazy(read_volume(workdir / "ct.zarr").data, workdir / "labels.zarr",
                     spacing=SPACING, classes=3, min_size_mm3=20)
    labels = read_volume(workdir / "labels.zarr").data
    write_zarr(workdir / "shifted.zarr", da.roll(labels, 1, axis=2), SPACING,
               chunks=labels.chunksize, is_label=True, overwrite=True)
    lesions, _ = label_lazy(read_volume(workdir / "lesion_mask.zarr").data,
                            workdir / "lesions.zarr", spacing=SPACING, overwrite=True)
    write_zarr(workdir / "shifted_lesions.zarr", da.roll(lesions, 1, axis=2), SPACING,
               chunks=lesions.chunksize, is_label=True, overwrite=True)


def run_lazy(job: str, workdir: Path, warm_up: bool = True) -> dict:
    """One lazy job on ``workdir/ct.zarr``, with its peak memory above the baseline."""
    from napari_xaimed.io import read_volume

    if warm_up:  # imports and lazy initialisation on the small store, before the baseline
        run_lazy(job, workdir / "warm", warm_up=False)
    volume = read_volume(workdir / "ct.zarr")
    if job.startswith("evaluation"):
        names = ("labels", "shifted") if job == "evaluation" else ("lesions", "shifted_lesions")
        reference = read_volume(workdir / f"{names[0]}.zarr").data
        prediction = read_volume(workdir / f"{names[1]}.zarr").data
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    extra: dict = {}
    if job == "otsu_components":
        from napari_xaimed.segmentation.lazy import segment_lazy
        result = segment_lazy(volume.data, workdir / "labels.zarr", spacing=volume.spacing,
                              classes=3, min_size_mm3=20, overwrite=True)
        extra.update(instances=result.n_instances, threshold=round(result.threshold, 1))
    elif job.startswith("evaluation"):
        from napari_xaimed.evaluation.lazy import evaluate_lazy
        result = evaluate_lazy(reference, prediction, spacing=volume.spacing,
                               instance_input=True, metrics=("hd95", "assd"))["all"]
        extra.update(tp=result.tp, pq=round(result.pq, 3))
    elif job == "registration":
        import shutil

        import dask.array as da

        from napari_xaimed.registration.lazy import register_lazy
        moving = da.roll(volume.data, SHIFT, axis=(0, 1, 2))  # air wraps round: no edge
        shutil.rmtree(workdir / "warped.zarr", ignore_errors=True)
        result = register_lazy(volume.data, moving, fixed_spacing=volume.spacing,
                               moving_spacing=volume.spacing, transform="Affine",
                               max_voxels=2**21, out=workdir / "warped.zarr", seed=0)
        truth = np.multiply(SHIFT, volume.spacing)  # pull-back: fixed(p) = moving(p + u)
        core = result.coarse.displacement[2:-2, 2:-2, 2:-2]
        error = np.linalg.norm(core - truth, axis=-1)
        extra.update(factors=list(result.fixed_factors), error_mm_mean=float(error.mean()),
                     error_mm_max=float(error.max()),
                     ncc_before=result.coarse.metrics["ncc_before"],
                     ncc_after=result.coarse.metrics["ncc_after"], timings=result.timings)
    elif job == "saliency_windows":
        extra.update(_saliency_windows(volume, workdir))
    else:
        from napari_xaimed.attribution.lazy import attribute_lazy
        result = attribute_lazy("bundled", volume.data, job, target=1, spacing=volume.spacing,
                                out=workdir / f"{job}.zarr", overwrite=True)
        extra["shape"] = list(result.map.shape)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"job": job, "seconds": seconds, "above_baseline": max(0, peak - base),
            "volume_bytes": int(np.prod(volume.data.shape)) * 4, **extra}


def _saliency_windows(volume, workdir: Path) -> dict:
    """Sliding-window saliency of a small MONAI UNet (untrained, seed 0, windows 96^3,
    overlap 0.25, gaussian) for the true lesions in :data:`WINDOW_REGION_PLANES` planes about
    the middle: every plane is read and written, the network runs on the windows that touch
    the region."""
    import dask.array as da
    import torch
    from monai.networks.nets import UNet

    from napari_xaimed.attribution.lazy import attribute_lazy
    from napari_xaimed.io import read_volume

    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=1, out_channels=2, channels=(8, 16, 32),
               strides=(2, 2), num_res_units=1).eval()
    mask = read_volume(workdir / "lesion_mask.zarr").data
    depth = mask.shape[0]
    z0 = max(0, depth // 2 - WINDOW_REGION_PLANES // 2)
    planes = da.arange(depth, chunks=mask.chunks[0])[:, None, None]
    region = da.where((planes >= z0) & (planes < z0 + WINDOW_REGION_PLANES), mask, 0)
    result = attribute_lazy(net, volume.data, "saliency", region=region, roi_size=96,
                            overlap=0.25, blend="gaussian", spacing=volume.spacing,
                            preprocessing={"scaling": "window", "window": (-160, 240)},
                            out=workdir / "saliency_windows.zarr", overwrite=True)
    windows = result.params["windows"]
    return {"shape": list(result.map.shape), "windows": windows["windows"],
            "windows_run": windows["windows_run"], "region_voxels": windows["region_voxels"],
            "device": result.device}


def _step(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True,
                          check=False)


def _job_rows(job: str, args: list[str], repeats: int) -> dict | None:
    """The job ``repeats`` times, each in its own process: the first run's row with every
    run's seconds (``seconds``: the best) and the highest peak; None (said why) if one fails."""
    runs = []
    for _ in range(repeats):
        out = _step(args)
        if out.returncode:
            print(f"  {job}: failed\n{out.stderr[-2000:]}", flush=True)
            return None
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    seconds = Timing([r["seconds"] for r in runs])
    row = {**runs[0], "seconds": seconds.best, "timing": seconds,
           "above_baseline": max(r["above_baseline"] for r in runs)}
    print(f"  {job}: {seconds.text(digits=1)}, peak +{row['above_baseline'] / 2**20:.0f} MB",
          flush=True)
    return row


def main_lazy(shape: tuple[int, int, int], workdir: Path, jobs: list[str],
              repeats: int = 1) -> list[dict]:
    """Write the stores (each step in its own process), then run each job in its own."""
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for args in (["--step", "write", "--workdir", str(workdir / "warm"), "--shape",
                  *map(str, WARM_SHAPE)],
                 ["--step", "write", "--workdir", str(workdir), "--shape", *map(str, shape)],
                 ["--step", "evaluation", "--workdir", str(workdir / "warm")]):
        out = _step(args)
        if out.returncode:
            raise SystemExit(f"preparing {args[1]} failed:\n{out.stderr[-2000:]}")
    print(f"  wrote {workdir / 'ct.zarr'} slab by slab in {time.perf_counter() - started:.1f} s",
          flush=True)
    rows = []
    prepared = False
    for job in jobs:
        if job.startswith("evaluation") and not prepared:
            prepared = True
            out = _step(["--step", "evaluation", "--workdir", str(workdir)])
            if out.returncode:
                print(f"  evaluation inputs: failed\n{out.stderr[-2000:]}", flush=True)
                continue
        row = _job_rows(job, ["--one", job, "--lazy", "--workdir", str(workdir)], repeats)
        if row is not None:
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=None,
                        help="volume shape z y x (default 300 512 512; with --lazy 1000 512 512)")
    parser.add_argument("--cases", nargs="+", choices=JOBS + LAZY_JOBS, default=None,
                        metavar="JOB", help=f"jobs to run (default: all of {', '.join(JOBS)}; "
                        f"with --lazy {', '.join(LAZY_JOBS)})")
    parser.add_argument("--lazy", action="store_true",
                        help="the volume larger than memory: a Zarr store in --workdir, read "
                        "slab by slab by the lazy segmentation, evaluation and attribution")
    parser.add_argument("--workdir", type=Path,
                        help="--lazy: folder for the Zarr stores (about 2 GB at full size)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each job, each in its own process (default 1)")
    parser.add_argument("--one", choices=JOBS + LAZY_JOBS, help=argparse.SUPPRESS)
    parser.add_argument("--step", choices=("write", "evaluation"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = tuple(args.shape or ((1000, 512, 512) if args.lazy or args.step else (300, 512, 512)))
    if args.step == "write":
        write_ct_zarr(args.workdir / "ct.zarr", shape)
        return 0
    if args.step == "evaluation":
        prepare_evaluation(args.workdir)
        return 0
    if args.lazy and args.workdir is None:
        parser.error("--lazy needs --workdir DIR (for the Zarr stores)")
    jobs = args.cases or list(LAZY_JOBS if args.lazy else JOBS)
    wrong = [j for j in jobs if j not in (LAZY_JOBS if args.lazy else JOBS)]
    if wrong:
        parser.error(f"{', '.join(wrong)} not available {'with' if args.lazy else 'without'} "
                     "--lazy")
    if args.one:
        row = (run_lazy(args.one, args.workdir) if args.lazy else run_one(args.one, shape))
        print(json.dumps(row))
        return 0
    if args.lazy:
        rows = main_lazy(shape, args.workdir, jobs, args.repeats)
    else:
        rows = []
        for job in jobs:
            row = _job_rows(job, ["--one", job, "--shape", *map(str, shape)], args.repeats)
            if row is not None:
                rows.append(row)
    size = rows[0]["volume_bytes"] if rows else 0
    print(f"\nvolume {shape[0]}x{shape[1]}x{shape[2]} float32 = {size / 2**20:.0f} MB")
    print(f"{'job':<17}{'seconds':>9}{'median, range':>18}{'peak above baseline':>22}"
          f"{'volumes':>9}  notes")
    for row in rows:
        notes = {k: v for k, v in row.items()
                 if k not in ("job", "seconds", "timing", "above_baseline", "volume_bytes")}
        if "ants_peak_bytes" in notes:
            notes["ants_peak_bytes"] = f"{notes['ants_peak_bytes'] / 2**20:.0f} MB"
        timing = row["timing"]
        spread = timing.spread(1, median=True) if len(timing.seconds) > 1 else ""
        print(f"{row['job']:<17}{row['seconds']:>9.1f}{spread:>18}"
              f"{row['above_baseline'] / 2**20:>19.0f} MB"
              f"{row['above_baseline'] / size:>9.2f}  {notes}")
    print("seconds: the best of --repeats runs, each in its own process (median and range "
          "beside it); peak: the highest.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
