"""Benchmark: tissue classes and registration on a real brain, the MNI152 template.

Run ``python benchmarks/bench_real.py`` (2 mm, about a minute on two cores) or with
``--resolution 1`` / ``4``; needs the ``[real]`` extra (nilearn, which ships the template).

Data: ``samples.mni152`` (nilearn's ICBM152 2009a T1 template, skull-stripped, with its grey and
white matter probability templates). The reference tissue classes are the most probable of CSF
(``1 - GM - WM``), GM and WM in each brain voxel (nilearn's binary GM/WM masks overlap, so they
cannot serve as one class per voxel; see ``samples.mni152``).

tissue   : ANTs Atropos and k-means, three classes inside the brain mask (``segment(...,
           method, n_classes=3, mask=brain)``, a separate process, default MRF), Dice per class
           against the reference classes (classes are numbered by mean intensity, so 1 CSF,
           2 GM, 3 WM on T1).
register : ``samples.mni152_deformed``: the template (moving) and a copy (fixed) made by
           sampling the 1 mm template at ``p + u(p)`` for a known smooth field ``u``.
           ``register(fixed, moving, transform="SyN")`` recovers a pull-back field on the fixed
           grid in the same convention; the error ``|u_recovered - u|`` in mm (mean, 95th
           percentile, max inside the fixed brain) is set against the size of ``u`` itself
           (the error of doing nothing), and the GM Dice of the moving tissue classes carried
           through the field against the fixed ones before and after. Two settings: the
           project's SyN default (``iterations=(40, 20, 0)``: nothing at full resolution) and
           ``(40, 20, 10)`` (ten full-resolution iterations; about three times longer).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_xaimed._core.progress import run_steps
from napari_xaimed.registration import register
from napari_xaimed.registration.quality import dice_per_label
from napari_xaimed.samples import TISSUE_NAMES, mni152, mni152_deformed
from napari_xaimed.segmentation import segment_steps


def spread(values: np.ndarray) -> tuple[float, float, float]:
    """Mean, 95th percentile and maximum."""
    return float(values.mean()), float(np.percentile(values, 95)), float(values.max())


def tissue(resolution: int) -> dict[str, dict[str, float]]:
    sample = mni152(resolution)
    out = {}
    print(f"tissue classes, MNI152 {resolution} mm {sample.image.shape}, "
          f"{int(sample.brain.sum())} brain voxels")
    for method in ("atropos", "kmeans"):
        result = run_steps(segment_steps(sample.image, method, spacing=sample.spacing,
                                         n_classes=3, mask=sample.brain))
        dice = dice_per_label(sample.tissue, result.labels)
        out[method] = {TISSUE_NAMES[k]: v for k, v in dice.items()} | {"seconds": result.seconds}
        print(f"  {method:8s} Dice " + "  ".join(f"{TISSUE_NAMES[k]} {v:.3f}"
                                                for k, v in sorted(dice.items()))
              + f"   ({result.seconds:.1f} s)")
    return out


ITERATIONS = ((40, 20, 0), (40, 20, 10))


def registration(resolution: int, seed: int, iterations: tuple[int, ...]) -> dict[str, float]:
    pair = mni152_deformed(resolution, seed=seed)
    started = time.perf_counter()
    result = register(pair.fixed, pair.moving, fixed_spacing=pair.spacing,
                      moving_spacing=pair.spacing, fixed_origin=pair.translate,
                      moving_origin=pair.translate, transform="SyN", seed=seed,
                      iterations=iterations, fixed_labels=pair.fixed_tissue,
                      moving_labels=pair.moving_tissue)
    seconds = time.perf_counter() - started
    brain = pair.fixed_brain
    error = spread(np.linalg.norm(result.displacement - pair.displacement, axis=-1)[brain])
    size = spread(np.linalg.norm(pair.displacement, axis=-1)[brain])
    flipped = spread(np.linalg.norm(result.displacement + pair.displacement, axis=-1)[brain])
    before, after = result.metrics["dice_before"][2], result.metrics["dice_after"][2]
    print(f"SyN {iterations} of the template to its deformed copy, {resolution} mm, seed {seed}"
          f" ({seconds:.1f} s, ANTs {result.timings['registration_s']:.1f} s)")
    print("  displacement error mm  mean {:.2f}  p95 {:.2f}  max {:.2f}".format(*error))
    print("  true field size mm     mean {:.2f}  p95 {:.2f}  max {:.2f}".format(*size))
    print("  error, sign flipped mm mean {:.2f}  p95 {:.2f}  max {:.2f}".format(*flipped))
    print(f"  GM Dice {before:.3f} -> {after:.3f}; WM "
          f"{result.metrics['dice_before'][3]:.3f} -> {result.metrics['dice_after'][3]:.3f}; "
          f"folded voxels {result.metrics['folded_voxels']}")
    return {"error_mean": error[0], "error_p95": error[1], "error_max": error[2],
            "field_mean": size[0], "field_p95": size[1], "field_max": size[2],
            "gm_dice_before": before, "gm_dice_after": after, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", type=int, default=2, help="voxel size in mm (1, 2, 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the known deformation")
    parser.add_argument("--cases", default="tissue,register",
                        help="comma-separated: tissue, register")
    args = parser.parse_args()
    cases = args.cases.split(",")
    if "tissue" in cases:
        tissue(args.resolution)
    if "register" in cases:
        for iterations in ITERATIONS:
            registration(args.resolution, args.seed, iterations)


if __name__ == "__main__":
    main()
