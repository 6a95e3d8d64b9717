"""Benchmark table: every attribution method judged on data with known truth.

Run ``python benchmarks/bench_explanations.py`` (5 lesion volumes, every method) or with
``--quick`` (2 volumes, 5 methods); ``--device cuda`` on a GPU machine. ``--transformer``
judges the attention methods (and the gradient ones beside them) on a small MONAI ViT trained
here on the same kind of data as the bundled classifier (the same lesion sample generator,
1024 volumes, 40 epochs, about a minute per model on 2 CPU cores; test accuracy printed),
with two more ViTs trained with seeds 1 and 2 for the ensemble column.

Data: seeded lesion sample volumes (64^3 at 1 mm, two lesions each, seeds 200...); the truth
is the lesion mask. Model: the bundled lesion classifier; for ensemble consistency, two more
copies of its architecture trained by the same script with seeds 1 and 2 (about 20 s each).
Every method explains class 1 ("lesion") with its default parameters.

Columns (mean over the volumes):

- mass: relevance mass accuracy (share of positive relevance inside the lesions; chance is
  the lesions' share of the volume, printed below the table);
- auroc: the map as a voxel classifier of the lesion mask (chance 0.5);
- point: pointing game with a 2 mm tolerance (share of volumes hit; where voxels tie for the
  maximum, each volume counts the share of the tied voxels near the lesions);
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
from pathlib import Path

import numpy as np

from napari_xaimed.attribution import (
    ATTENTION_METHODS,
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
from napari_xaimed.models.lesion_classifier import CONFIG
from napari_xaimed.samples import lesion_volume
from napari_xaimed.training.classifier import accuracy, fit, inputs, sample_batch, train

QUICK_METHODS = ["saliency", "smoothgrad", "integrated_gradients", "gradcam", "lrp"]
# On the ViT: the attention family, and beside it the methods that need no rule per layer
# (LRP has none for LayerNorm/GELU; the guided ones rewrite ReLUs the ViT does not have).
TRANSFORMER_METHODS = [*ATTENTION_METHODS, "saliency", "input_x_gradient", "smoothgrad",
                       "integrated_gradients", "gradient_shap", "gradcam", "occlusion"]


def train_vit(seed: int = 0, n_train: int = 1024, epochs: int = 40, cache: Path | None = None):
    """A MONAI ViT (8^3 patches of the 32^3 input: a 4^3 token grid, 2 blocks, 4 heads) trained
    to tell lesion volumes from lesion-free ones, as the bundled CNN is; returned loaded with
    the bundled model's preprocessing, with its accuracy on 200 unseen volumes. With ``cache``
    the trained weights are kept there and read back on the next run."""
    import torch
    from monai.networks.nets import ViT

    from napari_xaimed.attribution import load_model

    torch.manual_seed(seed)
    net = ViT(1, tuple(CONFIG["preprocessing"]["input_size"]), (8, 8, 8), hidden_size=64,
              mlp_dim=128, num_layers=2, num_heads=4, classification=True, num_classes=2,
              post_activation=None, dropout_rate=0.0)
    kept = None if cache is None else cache / f"vit_seed{seed}_{n_train}x{epochs}.pt"
    if kept is not None and kept.is_file():
        net.load_state_dict(torch.load(kept, weights_only=True))
    else:
        volumes, labels = sample_batch(list(range(10_000 + seed * n_train,
                                                  10_000 + (seed + 1) * n_train)))
        x, y = inputs(volumes), torch.from_numpy(labels).long()
        fit(net, x, y, torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.05),
            epochs, seed, scores=lambda out: out[0])
        if kept is not None:
            kept.parent.mkdir(parents=True, exist_ok=True)
            torch.save(net.state_dict(), kept)
    net.eval()

    class Logits(torch.nn.Module):  # accuracy() wants the scores alone
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, t):
            return self.net(t)[0]

    score = accuracy(Logits(), list(range(90_000 + 200 * seed, 90_200 + 200 * seed)))
    loaded = load_model(net, {"preprocessing": CONFIG["preprocessing"],
                              "classes": CONFIG["classes"]})
    return loaded, score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 volumes, 5 methods")
    parser.add_argument("--transformer", action="store_true",
                        help="the attention methods on a ViT trained here")
    parser.add_argument("--cache", type=Path, help="--transformer: keep the trained ViTs here")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    volumes = [lesion_volume(seed=200 + i, n_lesions=2) for i in range(2 if args.quick else 5)]
    started = time.perf_counter()
    if args.transformer:
        trained = [train_vit(seed=s, cache=args.cache) for s in (0, 1, 2)]
        members = [model for model, _ in trained]
        print(f"three ViTs trained in {time.perf_counter() - started:.0f} s; accuracy on 200 "
              f"unseen volumes: {', '.join(f'{a:.2f}' for _, a in trained)}")
        methods = TRANSFORMER_METHODS[:5] if args.quick else TRANSFORMER_METHODS
    else:
        members = ["bundled"] + [train(seed=s)[0] for s in (1, 2)]
        print(f"two more ensemble members trained in {time.perf_counter() - started:.0f} s")
        methods = QUICK_METHODS if args.quick else list(METHODS)
    judge(members, methods, volumes, args.device)
    return 0


def judge(members: list, methods: list[str], volumes: list, device: str) -> None:
    """Score every method on the volumes with the first member, print the table."""
    model = members[0]
    settings: list[dict] = []
    columns: dict[str, list[float]] = {}  # per setting, one score per method
    table: dict[str, dict[str, float]] = {m: {} for m in methods}
    for m in methods:
        started = time.perf_counter()
        mass, area, hit, roc, ens = [], [], [], [], []
        for v, sample in enumerate(volumes):
            heat = attribute(model, sample.image, m, target=1, device=device,
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
                    model, sample.image, heat, target=1, baseline=baseline, steps=20,
                    spacing=sample.spacing, device=device).area
            for key, value in scores.items():
                columns.setdefault(f"volume {v}: {key}", []).append(value)
            mass.append(scores["relevance_mass_accuracy"])
            roc.append(scores["auroc"])
            hit.append(scores["pointing_game 2 mm"])
            area.append(scores["deletion blur"])
            ens.append(ensemble_attribute(members, sample.image, m, target=1,
                                          device=device).consistency.mean_spearman)
        rand = randomisation_test(model, volumes[0].image, m, target=1,
                                  device=device).spearman[-1]
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


if __name__ == "__main__":
    raise SystemExit(main())
