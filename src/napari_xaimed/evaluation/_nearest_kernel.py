"""Compiled exact feature transform (see :mod:`napari_xaimed.evaluation.nearest`).

Maurer, Qi and Raghavan's algorithm, one pass per axis in the order z, y, x, with the
arithmetic of ``scipy.ndimage.distance_transform_edt`` (so ties go the same way), arranged so
that every pass reads contiguous rows or a single plane:

- z: each column's nearest site is the nearer of the previous and next nonzero voxel (the
  previous one on a tie), found by one sweep up and one down through whole planes;
- y and x: the lower envelope of the sites on each line (which keeps the sites whose Voronoi
  cell meets the line), then each voxel's nearest site on it; both inside one plane, done as
  the sweep down reaches it, so only the sweeps touch the whole volume.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _previous_sites(fg: np.ndarray, fz: np.ndarray) -> None:
    """``fz``: the z of the nearest nonzero voxel at or below each voxel in its column, -1
    where none."""
    nz, ny, nx = fg.shape
    for z in range(nz):
        for y in range(ny):
            for x in range(nx):
                if fg[z, y, x]:
                    fz[z, y, x] = z
                elif z > 0:
                    fz[z, y, x] = fz[z - 1, y, x]
                else:
                    fz[z, y, x] = -1


@njit(cache=True, nogil=True)
def _sq(f: np.ndarray, k: int, axis: int, at: int, coor: np.ndarray,
        sampling: np.ndarray) -> float:
    """Squared distance from site ``k`` to the voxel at ``at`` on the line."""
    total = 0.0
    for j in range(3):
        t = float(f[k, j] - (at if j == axis else coor[j])) * sampling[j]
        total += t * t
    return total


@njit(cache=True, nogil=True)
def _line(f: np.ndarray, n: int, axis: int, coor: np.ndarray, sampling: np.ndarray,
          g: np.ndarray, nearest: np.ndarray) -> bool:
    """Each voxel's nearest site among the sites ``f[:n]`` (-1 in column 0: none) on one line
    along ``axis`` through ``coor``: ``nearest[i]`` indexes ``f``. False when no site."""
    last = -1
    for i in range(n):
        if f[i, 0] < 0:
            continue
        fd = f[i, axis]
        w = 0.0
        for j in range(3):
            if j != axis:
                t = float(f[i, j] - coor[j]) * sampling[j]
                w += t * t
        while last >= 1:
            i1, i2 = g[last], g[last - 1]
            f1 = f[i1, axis]
            a = float(f1 - f[i2, axis]) * sampling[axis]
            b = float(fd - f1) * sampling[axis]
            c = a + b
            u = 0.0
            v = 0.0
            for j in range(3):
                if j != axis:
                    tu = float(f[i2, j] - coor[j]) * sampling[j]
                    tv = float(f[i1, j] - coor[j]) * sampling[j]
                    u += tu * tu
                    v += tv * tv
            if c * v - b * u - a * w - a * b * c <= 0.0:
                break  # the middle site's cell still meets the line
            last -= 1
        last += 1
        g[last] = i
    if last < 0:
        return False
    k = 0
    for i in range(n):
        d1 = _sq(f, g[k], axis, i, coor, sampling)
        while k < last:
            d2 = _sq(f, g[k + 1], axis, i, coor, sampling)
            if d1 <= d2:
                break
            d1 = d2
            k += 1
        nearest[i] = g[k]
    return True


@njit(cache=True, nogil=True)
def nearest_sites(fg: np.ndarray, sampling: np.ndarray) -> np.ndarray:
    """Flat index (int32: fewer than 2**31 voxels) of every voxel's nearest nonzero voxel of
    ``fg`` (uint8, C order, at least one nonzero voxel), Euclidean with voxel size
    ``sampling`` (float64, ``(z, y, x)``).

    One sweep up the planes keeps each column's previous nonzero voxel; a sweep down keeps the
    next one and finishes each plane as it passes: the nearer of the two (the previous one on
    a tie), then the passes along y and x inside that plane, in plane-sized buffers; the
    answer overwrites the plane's previous-voxel record. Four bytes a voxel besides ``fg``.
    """
    nz, ny, nx = fg.shape
    out = np.empty((nz, ny, nx), np.int32)
    _previous_sites(fg, out)
    following = np.full((ny, nx), -1, np.int32)
    pz = np.empty((ny, nx), np.int32)
    py = np.empty((ny, nx), np.int32)
    longest = max(ny, nx)
    f = np.empty((longest, 3), np.int64)
    g = np.empty(longest, np.int64)
    nearest = np.empty(longest, np.int64)
    coor = np.zeros(3, np.int64)
    for z in range(nz - 1, -1, -1):
        coor[0] = z
        for y in range(ny):  # along z: the nearer of the previous and the next nonzero voxel
            for x in range(nx):
                if fg[z, y, x]:
                    following[y, x] = z
                site = out[z, y, x]
                after = following[y, x]
                if after >= 0 and (site < 0 or after - z < z - site):
                    site = after
                pz[y, x] = site
        for x in range(nx):  # along y
            coor[2] = x
            for k in range(ny):
                f[k, 0], f[k, 1], f[k, 2] = pz[k, x], k, x
            if _line(f, ny, 1, coor, sampling, g, nearest):
                for k in range(ny):
                    pz[k, x], py[k, x] = f[nearest[k], 0], f[nearest[k], 1]
            else:
                for k in range(ny):
                    pz[k, x] = -1
        for y in range(ny):  # along x
            coor[1] = y
            for k in range(nx):
                f[k, 0], f[k, 1], f[k, 2] = pz[y, k], py[y, k], k
            # every row has a site: each column with a nonzero voxel gave its plane one
            _line(f, nx, 2, coor, sampling, g, nearest)
            for k in range(nx):
                s = nearest[k]
                out[z, y, k] = (f[s, 0] * ny + f[s, 1]) * nx + f[s, 2]
    return out
