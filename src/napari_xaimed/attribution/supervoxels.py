"""SLIC supervoxels: the features that feature ablation, Shapley sampling, KernelSHAP and the
supervoxel faithfulness curves perturb."""

from __future__ import annotations

import numpy as np


def supervoxels(volume: np.ndarray, n: int) -> np.ndarray:
    """SLIC supervoxels of a 3D volume (labels from 0), as a feature mask."""
    from skimage.segmentation import slic

    labels = slic(volume.astype(np.float64), n_segments=int(n), compactness=0.1,
                  channel_axis=None, start_label=0)
    return labels
