"""An analytic body phantom that can be evaluated at any physical point.

Because the phantom is a function of position in millimetres, a deformed copy is sampled exactly
(``phantom(p + u(p))``) rather than interpolated from a grid: the longitudinal sample's truth is
then independent of the interpolation a registration method uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_xaimed._core.errors import XaimedError


@dataclass
class Ellipsoid:
    """An ellipsoid in mm: ``center`` and ``semi_axes`` in ``(z, y, x)`` order."""

    center: np.ndarray
    semi_axes: np.ndarray
    value: float
    label: int = 0

    def normalised_radius(self, points: np.ndarray) -> np.ndarray:
        """1 on the surface, < 1 inside; ``points`` has shape ``(..., 3)`` in mm."""
        d = (points - self.center) / self.semi_axes
        return np.sqrt(np.einsum("...i,...i->...", d, d))

    def soft_inside(self, points: np.ndarray, edge_mm: float) -> np.ndarray:
        """A smooth indicator (0..1) whose edge is about ``edge_mm`` wide, like a partial volume."""
        r = self.normalised_radius(points)
        signed_mm = (r - 1.0) * float(np.min(self.semi_axes))
        return 0.5 * (1.0 - np.tanh(signed_mm / edge_mm))


@dataclass
class Phantom:
    """Body outline, organs, low-frequency texture and lesions, all in mm."""

    body: Ellipsoid
    organs: list[Ellipsoid]
    lesions: list[Ellipsoid]
    texture_waves: np.ndarray  # (K, 3) wave vectors in rad/mm
    texture_phases: np.ndarray  # (K,)
    texture_amplitude: float
    edge_mm: float = 0.8
    background: float = 0.02
    extras: dict = field(default_factory=dict)

    def intensity(self, points: np.ndarray) -> np.ndarray:
        """Noise-free intensity at ``points`` (``(..., 3)`` mm), roughly in [0, 1.2]."""
        inside = self.body.soft_inside(points, self.edge_mm)
        tissue = np.full(points.shape[:-1], self.body.value, dtype=np.float64)
        for organ in self.organs:
            tissue += (organ.value - self.body.value) * organ.soft_inside(points, self.edge_mm)
        phase = points @ self.texture_waves.T + self.texture_phases
        tissue += self.texture_amplitude * np.cos(phase).mean(axis=-1) * 2.0
        for lesion in self.lesions:
            tissue += lesion.value * lesion.soft_inside(points, self.edge_mm * 0.75)
        return self.background + inside * (tissue - self.background)

    def organ_labels(self, points: np.ndarray) -> np.ndarray:
        """Label map of the organs (1..n, later organs on top), 0 elsewhere."""
        out = np.zeros(points.shape[:-1], dtype=np.uint8)
        for organ in self.organs:
            out[organ.normalised_radius(points) < 1.0] = organ.label
        out[self.body.normalised_radius(points) >= 1.0] = 0
        return out

    def lesion_labels(self, points: np.ndarray) -> np.ndarray:
        """Instance labels of the lesions (1..n), 0 elsewhere: the voxel centre is inside."""
        out = np.zeros(points.shape[:-1], dtype=np.uint16)
        for i, lesion in enumerate(self.lesions, start=1):
            out[lesion.normalised_radius(points) < 1.0] = i
        return out

    def body_mask(self, points: np.ndarray) -> np.ndarray:
        return self.body.normalised_radius(points) < 1.0


def grid_points(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> np.ndarray:
    """Physical coordinates (mm) of every voxel centre, shape ``(*shape, 3)``, origin at voxel 0."""
    axes = [np.arange(n, dtype=np.float64) * s for n, s in zip(shape, spacing, strict=True)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def random_phantom(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    n_lesions: int,
    lesion_radius_mm: tuple[float, float] = (3.0, 7.0),
    lesion_contrast: float = 0.45,
) -> Phantom:
    """Draw a phantom that fills most of the field of view."""
    extent = np.asarray(shape, float) * np.asarray(spacing, float)
    center = (np.asarray(shape, float) - 1) / 2 * np.asarray(spacing, float)
    body_axes = extent * rng.uniform([0.40, 0.36, 0.40], [0.45, 0.42, 0.46])
    body = Ellipsoid(center + rng.uniform(-1, 1, 3), body_axes, value=0.35)

    organs = []
    values = (0.46, 0.22, 0.28)
    for label, value in enumerate(values, start=1):
        axes = body_axes * rng.uniform(0.18, 0.32, 3)
        offset = rng.uniform(-0.45, 0.45, 3) * (body_axes - axes)
        organs.append(Ellipsoid(body.center + offset, axes, value=value, label=label))

    lesions: list[Ellipsoid] = []
    tries = 0
    while len(lesions) < n_lesions:
        tries += 1
        if tries > 5000:
            raise XaimedError(
                f"Could not place {n_lesions} lesions in a {shape} volume: use fewer or a "
                "larger one."
            )
        radius = rng.uniform(*lesion_radius_mm)
        # Stay inside the body with a margin; the normalised position keeps it well inside.
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        reach = rng.uniform(0.0, 1.0) ** (1 / 3)
        pos = body.center + direction * reach * np.maximum(body_axes - radius - 3.0, 1.0)
        if any(
            np.linalg.norm(pos - other.center) < radius + other.semi_axes[0] + 3.0 for other in lesions
        ):
            continue
        lesions.append(Ellipsoid(pos, np.full(3, radius), value=lesion_contrast, label=len(lesions) + 1))

    k = 12
    wavelengths = rng.uniform(12.0, 40.0, k)
    directions = rng.normal(size=(k, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    waves = directions * (2 * np.pi / wavelengths)[:, None]
    phases = rng.uniform(0, 2 * np.pi, k)
    return Phantom(body, organs, lesions, waves, phases, texture_amplitude=0.06)
