"""Benchmark table: every attribution method judged on data with known truth.

Run ``python benchmarks/bench_explanations.py`` (5 lesion volumes, every method) or with
``--quick`` (2 volumes, 5 methods); ``--device cuda`` on a GPU machine.

Data: seeded lesion sample volumes (64^3 at 1 mm, two lesions each, seeds 200...); the truth
is the lesion mask. Model: the bundled lesion classifier; for ensemble consistency, two more
copies of its architecture trained by the same script with seeds 1 and 2 (about 20 s each).
Every method explains class 1 ("lesion") with its default parameters.

Columns (mean over the volumes):

- mass: relevance mass accuracy (share of positive relevance inside the lesions; chance is
  the lesions' share of the volume, printed below the table);
- auroc: the map as a voxel classifier of the lesion mask (chance 0.5);
- point: pointing game with a 2 mm tolerance (share of volumes hit);
- del: deletion area (blur baseline, sigma 5 mm, 20 steps; lower = more faithful);
- ens: ensemble consistency, the mean Spearman correlation of the three models' maps;
- rand: Spearman similarity of the map after the cascading randomisation of every layer
  (first volume; near 0 = the map depends on the model, near 1 = it does not);
- rank: mean rank (and spread) over settings = volumes x {mass, auroc, pointing game at 0, 2
  and 5 mm, deletion with blur/mean baselines}; 1 is best.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_xaimed.attribution import (
    METHODS,
    attribute,
    auroc,
    deletion_curve,
    ensemble_attribute,
    pointing_game,
    randomisation_test,
    rank_methods,
    relevance_mass_accuracy,
)
from napari_xaimed.attribution.lesion_model import train
from napari_xaimed.samples import lesion_volume

QUICK_METHODS = ["saliency", "smoothgrad", "integrated_gradients", "gradcam", "lrp"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 volumes, 5 methods")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    methods = QUICK_METHODS if args.quick else list(METHODS)
    volumes = [lesion_volume(seed=200 + i, n_lesions=2) for i in range(2 if args.quick else 5)]
    started = time.perf_counter()
    members = ["bundled"] + [train(seed=s)[0] for s in (1, 2)]
    print(f"two more ensemble members trained in {time.perf_counter() - started:.0f} s")

    settings: list[dict] = []
    columns: dict[str, list[float]] = {}  # per setting, one score per method
    table: dict[str, dict[str, float]] = {m: {} for m in methods}
    for m in methods:
        started = time.perf_counter()
        mass, area, hit, roc, ens = [], [], [], [], []
        for v, sample in enumerate(volumes):
            heat = attribute("bundled", sample.image, m, target=1, device=args.device,
                             spacing=sample.spacing).map
            scores = {
                "relevance_mass_accuracy": relevance_mass_accuracy(heat, sample.mask),
                "auroc": auroc(heat, sample.mask),
            }
            for tol in (0.0, 2.0, 5.0):
                scores[f"pointing_game {tol:g} mm"] = float(pointing_game(
                    heat, sample.mask, spacing=sample.spacing, tolerance_mm=tol))
            for baseline in ("blur", "mean"):
                scores[f"deletion {baseline}"] = deletion_curve(
                    "bundled", sample.image, heat, target=1, baseline=baseline, steps=20,
                    spacing=sample.spacing, device=args.device).area
            for key, value in scores.items():
                columns.setdefault(f"volume {v}: {key}", []).append(value)
            mass.append(scores["relevance_mass_accuracy"])
            roc.append(scores["auroc"])
            hit.append(scores["pointing_game 2 mm"])
            area.append(scores["deletion blur"])
            ens.append(ensemble_attribute(members, sample.image, m, target=1,
                                          device=args.device).consistency.mean_spearman)
        rand = randomisation_test("bundled", volumes[0].image, m, target=1,
                                  device=args.device).spearman[-1]
        table[m] = {"mass": np.mean(mass), "auroc": np.mean(roc), "point": np.mean(hit),
                    "del": np.mean(area), "ens": np.nanmean(ens), "rand": rand}
        print(f"  {m}: {time.perf_counter() - started:.1f} s", flush=True)

    for name in columns:
        metric = name.split(": ", 1)[1].split(" ")[0]
        settings.append({"metric": metric, "name": name})
    ranking = rank_methods(np.array([columns[s["name"]] for s in settings]), methods, settings)

    chance = np.mean([s.mask.mean() for s in volumes])
    head = (f"{'method':<22}{'mass':>7}{'auroc':>7}{'point':>7}{'del':>7}{'ens':>7}"
            f"{'rand':>7}{'rank':>13}")
    print("\n" + head + "\n" + "-" * len(head))
    for i in np.argsort(ranking.mean_rank, kind="stable"):
        m = methods[i]
        row = table[m]
        print(f"{m:<22}{row['mass']:>7.3f}{row['auroc']:>7.3f}{row['point']:>7.2f}"
              f"{row['del']:>7.3f}{row['ens']:>7.2f}{row['rand']:>7.2f}"
              f"{ranking.mean_rank[i]:>7.1f} +- {ranking.rank_std[i]:.1f}")
    print(f"chance: mass {chance:.4f} (the lesions' share of the volume), auroc 0.5; "
          f"{len(volumes)} volumes, {len(settings)} ranking settings; the winner changes in "
          f"{100 * ranking.winner_changes:.0f}% of the settings.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
