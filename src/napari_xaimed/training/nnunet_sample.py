"""A tiny trained nnU-Net v2 result folder, built with nnU-Net's own planning and training.

For tests, benchmarks and trying the nnU-Net path without a real model: a few synthetic CT-like
cases (a bright and a dim blob on a noisy background, labels 1 and 2, anisotropic spacing) are
written as an nnU-Net raw dataset, planned and preprocessed by nnU-Net (``3d_fullres``) and
trained for a few short epochs of ``nnUNetTrainer`` on the CPU with fixed seeds. Nothing is
downloaded. The cases are small (16x32x32), so nnU-Net plans a small patch and a shallow
network, and the plans are narrowed to 4 base features: training runs in one thread (for so
small a network a second one gains little, and under a loaded machine OpenMP's waiting
between threads made it ten times slower). nnU-Net reads its folders from environment
variables when it is imported, so planning and training run in a child process.

Extra folds (``extra_folds``) are copies of the trained fold with its weights moved by seeded
noise: different networks of the same architecture, enough to test fold ensembling without
training each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_xaimed._core.errors import XaimedError

DATASET_ID = 917
DATASET_NAME = f"Dataset{DATASET_ID:03d}_XaimedTiny"
RESULT_SUBFOLDER = "nnUNetTrainer__nnUNetPlans__3d_fullres"
#: (x, y, z) spacing of the cases as SimpleITK writes it
SPACING_XYZ = (0.9, 0.9, 2.0)
CLASSES = {"background": 0, "bright": 1, "dim": 2}
#: (z, y, x) size of the training cases: nnU-Net plans its patch from it (the median case
#: size), so small cases make a small patch and a shallow network
CASE_SHAPE = (16, 32, 32)

_TRAIN = """
import os, random, sys
import numpy as np, torch
seed, fold, epochs, iterations, val_iterations = (int(a) for a in sys.argv[1:6])
random.seed(seed); np.random.seed(seed); torch.manual_seed(seed)
torch.set_num_threads(1)  # a tiny network: a second thread gains little
from nnunetv2.experiment_planning.plan_and_preprocess_api import (
    extract_fingerprints, plan_experiments, preprocess)
from nnunetv2.run.run_training import get_trainer_from_args
did = int(sys.argv[6])
os.environ['nnUNet_n_proc_DA'] = '1'  # the planner's thread count: 0 crashes it
extract_fingerprints([did], num_processes=1)
plan_experiments([did])
if len(sys.argv) > 7:  # a narrower network than nnU-Net's 32 base features: a faster test model
    import json
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.dataset_name_id_conversion import convert_id_to_dataset_name
    path = os.path.join(nnUNet_preprocessed, convert_id_to_dataset_name(did), 'nnUNetPlans.json')
    plans = json.load(open(path))
    kwargs = plans['configurations']['3d_fullres']['architecture']['arch_kwargs']
    base = int(sys.argv[7])
    kwargs['features_per_stage'] = [min(base * 2 ** i, 320)
                                    for i in range(len(kwargs['features_per_stage']))]
    json.dump(plans, open(path, 'w'), indent=1)
preprocess([did], configurations=('3d_fullres',), num_processes=(1,))
os.environ['nnUNet_n_proc_DA'] = '0'  # augmentation in this process, no workers
trainer = get_trainer_from_args(str(did), '3d_fullres', fold, device=torch.device('cpu'))
trainer.num_epochs = epochs
trainer.num_iterations_per_epoch = iterations
trainer.num_val_iterations_per_epoch = val_iterations
trainer.run_training()
"""


def synthetic_case(seed: int, shape: Sequence[int] = CASE_SHAPE) -> tuple[np.ndarray,
                                                                         np.ndarray]:
    """One synthetic case ``(image, labels)`` in ``(z, y, x)``: a bright blob (label 1) and a
    dim one (label 2) at random places on a noisy background, intensities in CT-like units.
    The blobs' radius scales with the in-plane size (a fifth to a quarter of it)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    image = rng.normal(0.0, 20.0, shape).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    for label, value in ((1, 300.0), (2, 120.0)):
        centre = [rng.uniform(0.3 * n, 0.7 * n) for n in shape]
        # large blobs (4-10% of the case each): a short training learns them
        radius = rng.uniform(0.21, 0.29) * min(shape[1:])
        # spacing-aware radius: z voxels are about twice as long
        dist = np.sqrt(((z - centre[0]) * 2.0) ** 2 + (y - centre[1]) ** 2
                       + (x - centre[2]) ** 2)
        blob = dist < radius
        labels[blob] = label
        image[blob] += value
    return image, labels


def _write_raw(raw: Path, cases: int, seed: int, shape: Sequence[int]) -> None:
    import SimpleITK as sitk

    folder = raw / DATASET_NAME
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
    for i in range(cases):
        image, labels = synthetic_case(seed * 1000 + i, shape)
        for array, path in ((image, folder / "imagesTr" / f"case_{i:03d}_0000.nii.gz"),
                            (labels, folder / "labelsTr" / f"case_{i:03d}.nii.gz")):
            itk = sitk.GetImageFromArray(array)
            itk.SetSpacing(SPACING_XYZ)
            sitk.WriteImage(itk, str(path))
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": CLASSES, "numTraining": cases,
        "file_ending": ".nii.gz"}))


def build_tiny_nnunet(root: str | Path, *, seed: int = 0, fold: int = 0, cases: int = 5,
                      shape: Sequence[int] = CASE_SHAPE, epochs: int = 4,
                      iterations: int = 50, val_iterations: int = 1,
                      base_features: int | None = 4, extra_folds: Sequence[int] = (),
                      timeout_s: float = 1800) -> Path:
    """Plan, preprocess and train a tiny nnU-Net v2 model under ``root``.

    Parameters
    ----------
    root : str or pathlib.Path
        Empty folder; ``raw``, ``preprocessed`` and ``results`` are made in it.
    seed : int
        Seeds the cases, the initial weights and the training's sampling.
    fold : int
        The fold trained.
    cases : int
        Training cases (at least 5: nnU-Net splits them into 5 folds).
    shape : sequence of int
        Each case's ``(z, y, x)`` size; nnU-Net plans its patch size and depth from it.
    epochs, iterations, val_iterations : int
        Epochs of ``iterations`` training and ``val_iterations`` validation batches each
        (nnU-Net's defaults: 1000 epochs of 250 and 50).
    base_features : int, optional
        Features of the network's first stage, doubling per stage (nnU-Net plans 32): the
        plans are edited after planning, before preprocessing and training. ``None`` keeps
        nnU-Net's plan.
    extra_folds : sequence of int
        Further folds made from the trained one with seeded noise on its weights.
    timeout_s : float
        Limit for planning and training together.

    Returns
    -------
    pathlib.Path
        The result folder ``.../DatasetXXX_Name/nnUNetTrainer__nnUNetPlans__3d_fullres``.
    """
    import torch

    root = Path(root)
    paths = {k: root / k for k in ("raw", "preprocessed", "results")}
    for p in paths.values():
        p.mkdir(parents=True, exist_ok=True)
    _write_raw(paths["raw"], cases, seed, shape)
    env = {**os.environ, "nnUNet_raw": str(paths["raw"]),
           "nnUNet_preprocessed": str(paths["preprocessed"]),
           "nnUNet_results": str(paths["results"]), "nnUNet_n_proc_DA": "0",
           "nnUNet_compile": "f", "nnUNet_def_n_proc": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", _TRAIN, str(seed), str(fold), str(epochs), str(iterations),
               str(val_iterations), str(DATASET_ID)]
    command += [] if base_features is None else [str(base_features)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s,
                          check=False)
    folder = paths["results"] / DATASET_NAME / RESULT_SUBFOLDER
    final = folder / f"fold_{fold}" / "checkpoint_final.pth"
    if done.returncode != 0 or not final.exists():
        raise XaimedError(f"building the tiny nnU-Net model failed (exit {done.returncode}):\n"
                          f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    generator = torch.Generator().manual_seed(seed + 1)
    for extra in extra_folds:
        checkpoint = torch.load(final, map_location="cpu", weights_only=False)
        weights = checkpoint["network_weights"]
        for name, value in weights.items():
            if value.is_floating_point() and value.ndim > 1:
                weights[name] = value + 0.3 * value.std() * torch.randn(
                    value.shape, generator=generator, dtype=value.dtype)
        (folder / f"fold_{extra}").mkdir(exist_ok=True)
        torch.save(checkpoint, folder / f"fold_{extra}" / "checkpoint_final.pth")
    return folder
