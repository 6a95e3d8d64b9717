"""Benchmark: KernelSHAP over supervoxels of a region, with and without the window cache.

Run ``python benchmarks/bench_kernel_shap.py`` (64x128x128) or with ``--quick`` (48x96x96).

Network: a MONAI ``UNet`` (channels 8, 16, 32; seeded random weights), run by sliding windows
(ROI 32^3, overlap 0.25, constant blending). Volume: a lesion sample (lesion radii 3-4 mm);
the explained score is the summed logit of channel 1 inside the first lesion's mask;
supervoxels: a regular grid of about 27 blocks over the lesion's bounding box grown by 4
voxels; Captum's KernelShap with ``--samples`` samples (default 32), seed 0, 8
perturbations per evaluation.

Rows: Captum's ``KernelShap`` around MONAI's ``sliding_window_inference`` (every window of
every sample: what a user would write), ours without the cache (every window that reaches the
region, for every sample) and ours with the cache (only the windows a sample's removed
supervoxels touch). Each row: seconds, windows run through the network, speed-up against
Captum + MONAI, and the largest difference from its map (float32 network).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from captum.attr import KernelShap
from monai.inferers import sliding_window_inference
from monai.networks.nets import UNet

from napari_xaimed.attribution.kernel_shap import kernel_shap_windows
from napari_xaimed.samples import lesion_volume

ROI = (32, 32, 32)


class Counting(torch.nn.Module):
    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net, self.windows = net, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows += x.shape[0]
        return self.net(x)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="48x96x96")
    parser.add_argument("--samples", type=int, default=32)
    args = parser.parse_args(argv)
    shape = (48, 96, 96) if args.quick else (64, 128, 128)
    torch.manual_seed(0)
    net = Counting(UNet(3, 1, 2, channels=(8, 16, 32), strides=(2, 2),
                        num_res_units=0).eval())
    sample = lesion_volume(shape=shape, n_lesions=2, lesion_radius_mm=(3.0, 4.0), seed=1)
    volume = sample.image.astype(np.float32)
    region = sample.lesions == 1
    settings = dict(roi_size=ROI, supervoxels=27, samples=args.samples, margin=4, seed=0,
                    batch_size=8)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; volume {shape}, "
          f"region {int(region.sum())} voxels, ROI {ROI}, {args.samples} samples")
    rows = []
    for cache in (False, True):
        net.windows = 0
        result = kernel_shap_windows(net, volume, region, cache=cache, **settings)
        rows.append((f"ours, cache {'on' if cache else 'off'}", result.seconds, net.windows,
                     result.map))
    box = result.box
    x = torch.from_numpy(volume)[None, None]
    mask = torch.from_numpy(region)

    def forward(crops: torch.Tensor) -> torch.Tensor:
        scores = []
        for crop in crops:
            full = x.clone()
            full[(0, slice(None), *box)] = crop
            out = sliding_window_inference(full, ROI, 4, net, overlap=0.25)
            scores.append((out[0, 1] * mask).sum())
        return torch.stack(scores)

    crop = x[(slice(None), slice(None), *box)]
    features = torch.from_numpy(result.feature_mask)[None, None].expand_as(crop)
    net.windows = 0
    started = time.perf_counter()
    with torch.no_grad():
        torch.manual_seed(0)
        values = KernelShap(forward).attribute(crop, baselines=0.0, feature_mask=features,
                                               n_samples=args.samples,
                                               perturbations_per_eval=8)
    seconds = time.perf_counter() - started
    reference = np.zeros(shape)
    reference[box] = values[0].sum(0).numpy()
    rows.insert(0, ("Captum KernelShap + MONAI sliding windows", seconds, net.windows,
                    reference))
    print(f"windows in the grid: {result.windows}, reaching the region: "
          f"{result.active_windows}; supervoxels: {np.unique(result.feature_mask).size}")
    print(f"{'case':<44}{'seconds':>9}{'windows':>9}{'speed-up':>10}{'max |diff|':>12}")
    scale = float(np.abs(reference).max())
    for label, secs, windows, values_map in rows:
        diff = float(np.abs(values_map - reference).max()) / scale
        print(f"{label:<44}{secs:>9.2f}{windows:>9}{seconds / secs:>9.1f}x{diff:>12.1e}")
    print("max |diff| is relative to the largest |value| of the Captum + MONAI map.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
