"""Training of the bundled lesion segmentation network
(:mod:`napari_xaimed.models.lesion_segmenter`) on lesion samples, and its held-out Dice;
``scripts/train_lesion_segmenter.py`` runs it and writes the weights."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from napari_xaimed.components.overlap import mask_dice as dice
from napari_xaimed.models.lesion_segmenter import CONFIG, PATCH, SHAPE, SPACING, build
from napari_xaimed.models.preprocess import Preprocessing, scale_intensity


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


def training_seeds(n_volumes: int = 24, seed: int = 0) -> list[int]:
    """The sample seeds of a training run."""
    return list(range(20_000 + seed * n_volumes, 20_000 + (seed + 1) * n_volumes))


def training_inputs(n_volumes: int = 24, seed: int = 0) -> dict[str, Any]:
    """The config's ``training_inputs`` (:func:`~napari_xaimed.models.domain.training_statistics`)
    of a training run: its volumes' geometry and scaled intensities."""
    from napari_xaimed.models.domain import training_statistics
    from napari_xaimed.samples import lesion_volume

    seeds = training_seeds(n_volumes, seed)
    volumes = (lesion_volume(shape=SHAPE, spacing=SPACING, seed=s).image for s in seeds)
    return training_statistics(volumes, SPACING, CONFIG["preprocessing"],
                               generator="lesion_volume", seeds=[seeds[0], seeds[-1]])


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
    images, masks = sample_volumes(training_seeds(n_volumes, seed))
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
