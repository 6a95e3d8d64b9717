"""Training of the bundled lesion classifier (:mod:`napari_xaimed.models.lesion_classifier`) on
lesion samples; ``scripts/train_lesion_classifier.py`` runs it and writes the weights."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from napari_xaimed.models.lesion_classifier import CONFIG, INPUT_SIZE, SPACING, LesionNet
from napari_xaimed.models.preprocess import Preprocessing, to_input


def sample_batch(seeds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Volumes ``(n, 32, 32, 32)`` and labels: even seeds lesion-free, odd ones 1-3 lesions."""
    from napari_xaimed.samples import lesion_volume

    volumes, labels = [], []
    for seed in seeds:
        sample = lesion_volume(shape=INPUT_SIZE, spacing=SPACING,
                               n_lesions=0 if seed % 2 == 0 else None, seed=seed)
        volumes.append(sample.image)
        labels.append(sample.label)
    return np.stack(volumes), np.asarray(labels)


def inputs(volumes: np.ndarray) -> torch.Tensor:
    prep = Preprocessing.from_dict(CONFIG["preprocessing"])
    return torch.cat([to_input(v, prep, torch.device("cpu")) for v in volumes])


def training_seeds(n_train: int = 384, seed: int = 0) -> list[int]:
    """The sample seeds of a training run."""
    return list(range(10_000 + seed * n_train, 10_000 + (seed + 1) * n_train))


def training_inputs(n_train: int = 384, seed: int = 0) -> dict[str, Any]:
    """The config's ``training_inputs`` (:func:`~napari_xaimed.models.domain.training_statistics`)
    of a training run: its volumes' geometry and scaled intensities."""
    from napari_xaimed.models.domain import training_statistics

    seeds = training_seeds(n_train, seed)
    volumes, _ = sample_batch(seeds)
    return training_statistics(volumes, SPACING, CONFIG["preprocessing"],
                               generator="lesion_volume", seeds=[seeds[0], seeds[-1]])


def train(n_train: int = 384, epochs: int = 6, seed: int = 0) -> tuple[torch.nn.Module,
                                                                       dict[str, Any]]:
    """Train the classifier from scratch; returns it and a record of the run."""
    torch.manual_seed(seed)
    started = time.perf_counter()
    volumes, labels = sample_batch(training_seeds(n_train, seed))
    x, y = inputs(volumes), torch.from_numpy(labels).long()
    model = LesionNet(**CONFIG["args"])
    losses = fit(model, x, y, torch.optim.Adam(model.parameters(), lr=2e-3), epochs, seed)
    record = {"n_train": n_train, "epochs": epochs, "seed": seed,
              "final_loss": float(np.mean(losses[-8:])),
              "seconds": round(time.perf_counter() - started, 1),
              "torch": torch.__version__}
    return model, record


def fit(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
        optimiser: torch.optim.Optimizer, epochs: int, seed: int,
        scores: Any = None) -> list[float]:
    """Cross-entropy training in shuffled batches of 16 (seeded); returns the batch losses and
    leaves the model in eval mode. ``scores`` picks the logits from the model's output (e.g.
    the first element of a ViT's ``(logits, hidden states)``)."""
    generator = torch.Generator().manual_seed(seed)
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), 16):
            batch = order[start:start + 16]
            optimiser.zero_grad()
            out = model(x[batch])
            loss = torch.nn.functional.cross_entropy(out if scores is None else scores(out),
                                                     y[batch])
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
    model.eval()
    return losses


def accuracy(model: torch.nn.Module, seeds: list[int]) -> float:
    """Share of the sample volumes of ``seeds`` the model classifies right."""
    volumes, labels = sample_batch(seeds)
    with torch.no_grad():
        predicted = model(inputs(volumes)).argmax(dim=1).numpy()
    return float(np.mean(predicted == labels))
