"""The bundled segmentation network: a small MONAI UNet that outlines the lesion sample's lesions.

It is trained on :func:`napari_xaimed.samples.lesion_volume` data by
``scripts/train_lesion_segmenter.py`` (seeded, under a minute on two CPU cores), and its weights
ship in ``segmentation/weights`` with a JSON config in the format
:func:`~napari_xaimed.attribution.load_model` reads for any state dict (a MONAI network name,
its arguments, the preprocessing and the class names), so ``load_model("bundled-segmenter")``
gives the same model to the segmentation and the attribution capabilities.

The network is ``monai.networks.nets.UNet`` with channels (8, 16, 32), two stride-2 levels and no
normalisation layer: without instance norm a window's output does not depend on what else the
window holds, so sliding-window results match whole-volume ones up to the border context, and
any window size divisible by 4 fits.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_xaimed.models.preprocess import Preprocessing, scale_intensity

WEIGHTS = Path(__file__).parent / "weights" / "lesion_segmenter.pt"
# the lesion sample's default geometry, which the network is trained on
SPACING = (1.0, 1.0, 1.0)
SHAPE = (64, 64, 64)
PATCH = (32, 32, 32)
CONFIG: dict[str, Any] = {
    "network": "UNet",
    "args": {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [8, 16, 32],
             "strides": [2, 2], "num_res_units": 0, "norm": None},
    "preprocessing": {"scaling": "zscore"},
    "classes": ["background", "lesion"],
    "spacing": list(SPACING),
}


def build() -> torch.nn.Module:
    """The untrained network of :data:`CONFIG`."""
    from napari_xaimed.models.loading import build_network

    return build_network(CONFIG["network"], dict(CONFIG["args"]))


def sample_volumes(seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Scaled images ``(n, 64, 64, 64)`` (float32) and lesion masks (bool) of ``seeds``."""
    from napari_xaimed.samples import lesion_volume

    prep = Preprocessing.from_dict(CONFIG["preprocessing"])
    images, masks = [], []
    for seed in seeds:
        sample = lesion_volume(shape=SHAPE, spacing=SPACING, seed=seed)
        images.append(scale_intensity(sample.image, prep))
        masks.append(sample.mask)
    return np.stack(images), np.stack(masks)


def _patches(images: np.ndarray, masks: np.ndarray, n: int, rng: np.random.Generator
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` random PATCH crops, two in three centred near a lesion voxel (lesions fill well
    under 1% of a volume, so uniform crops would mostly teach background)."""
    xs, ys = [], []
    limit = np.asarray(SHAPE) - np.asarray(PATCH)
    for _ in range(n):
        i = int(rng.integers(len(images)))
        if rng.random() < 2 / 3:
            points = np.argwhere(masks[i])
            centre = points[rng.integers(len(points))] + rng.integers(-8, 9, 3)
            start = np.clip(centre - np.asarray(PATCH) // 2, 0, limit)
        else:
            start = rng.integers(0, limit + 1)
        crop = tuple(slice(s, s + p) for s, p in zip(start, PATCH, strict=True))
        xs.append(images[i][crop])
        ys.append(masks[i][crop])
    return (torch.from_numpy(np.stack(xs))[:, None],
            torch.from_numpy(np.stack(ys).astype(np.int64))[:, None])


def train(n_volumes: int = 24, steps: int = 400, batch: int = 4, seed: int = 0
          ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train the network from scratch on seeds ``20_000 + seed * n_volumes ...``; returns it
    and a record of the run."""
    from monai.losses import DiceCELoss

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    images, masks = sample_volumes(list(range(20_000 + seed * n_volumes,
                                              20_000 + (seed + 1) * n_volumes)))
    model = build()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps, eta_min=5e-4)
    losses = []
    # tiny gradients late in training turn denormal, which slows CPU arithmetic many times
    torch.set_flush_denormal(True)
    model.train()
    try:
        for _ in range(steps):
            x, y = _patches(images, masks, batch, rng)
            optimiser.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
    finally:
        torch.set_flush_denormal(False)
    model.eval()
    record = {"n_volumes": n_volumes, "steps": steps, "batch": batch, "seed": seed,
              "final_loss": round(float(np.mean(losses[-10:])), 4),
              "seconds": round(time.perf_counter() - started, 1), "torch": torch.__version__}
    return model, record


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def held_out_dice(model: Any, seeds: list[int]) -> float:
    """Mean Dice of the model's lesion mask (through :func:`segment_with_model`, with the
    preprocessing of :data:`CONFIG`) against the truth on the sample volumes of ``seeds``."""
    from napari_xaimed.models.loading import load_model
    from napari_xaimed.samples import lesion_volume
    from napari_xaimed.segmentation.deep import segment_with_model

    if isinstance(model, torch.nn.Module):
        model = load_model(model, config=CONFIG)

    scores = []
    for seed in seeds:
        sample = lesion_volume(shape=SHAPE, spacing=SPACING, seed=seed)
        result = segment_with_model(sample.image, model, spacing=sample.spacing, device="cpu")
        scores.append(dice(result.labels > 0, sample.mask))
    return float(np.mean(scores))
