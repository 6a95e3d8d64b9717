"""Synthetic volumes with known truth, for the demo, the tests and the benchmarks.

Every generator takes a ``seed`` and a size and returns the truth beside the data, so a result can
be checked against what is known rather than against another program's opinion:

- :func:`lesion_volume`: a textured body with 0..N bright lesions, their instance mask and the class
  (lesion present or not) a detector should predict;
- :func:`longitudinal_pair`: a prior (``moving``) and a current (``fixed``) scan of the same
  anatomy, the current one deformed by a known smooth displacement plus a small affine, with the
  displacement in the project's convention and organ label maps for Dice;
- :func:`panoptic_pair`: reference and prediction instance labels of things with a core part, with
  deliberate splits, merges, misses and false positives;
- :func:`mni152` and :func:`mni152_deformed`: a real brain, the MNI152 T1 template that ships
  inside nilearn (the optional ``[real]`` extra; nothing is downloaded), with its grey and white
  matter, and the template moved by a known smooth deformation.

Arrays are in ``(z, y, x)`` order and spacings in millimetres in the same order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_xaimed._core.errors import XaimedError
from napari_xaimed.samples.phantom import Ellipsoid, Phantom, grid_points, random_phantom

Shape3 = tuple[int, int, int]
Spacing3 = tuple[float, float, float]


def _check_geometry(shape: Any, spacing: Any, minimum: int = 16) -> tuple[Shape3, Spacing3]:
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < minimum:
        raise XaimedError(f"shape must be three sizes of at least {minimum} voxels, got {shape}.")
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise XaimedError(f"spacing must be three positive numbers (mm), got {spacing}.")
    return shape, spacing  # type: ignore[return-value]


@dataclass
class LesionSample:
    """A lesion volume and its truth.

    Attributes
    ----------
    image : numpy.ndarray
        float32 intensities, ``(z, y, x)``.
    lesions : numpy.ndarray
        uint16 instance labels of the lesions (1..n), 0 elsewhere: the ground-truth mask.
    body : numpy.ndarray
        bool mask of the body outline.
    label : int
        The class a lesion detector should predict: 1 if any lesion is present, else 0.
    spacing : tuple of float
        Voxel size in mm, ``(z, y, x)``.
    centers_mm, radii_mm : list
        Each lesion's centre (mm, ``(z, y, x)``) and radius (mm), in label order.
    seed : int
    """

    image: np.ndarray
    lesions: np.ndarray
    body: np.ndarray
    label: int
    spacing: Spacing3
    centers_mm: list[tuple[float, float, float]]
    radii_mm: list[float]
    seed: int

    @property
    def mask(self) -> np.ndarray:
        """bool lesion mask."""
        return self.lesions > 0


def lesion_volume(
    shape: Shape3 = (64, 64, 64),
    spacing: Spacing3 = (1.0, 1.0, 1.0),
    *,
    n_lesions: int | None = None,
    max_lesions: int = 3,
    lesion_radius_mm: tuple[float, float] = (3.0, 7.0),
    contrast: float = 0.5,
    noise: float = 0.03,
    seed: int = 0,
) -> LesionSample:
    """A textured body with synthetic lesions and its ground truth.

    Parameters
    ----------
    shape : tuple of int
        Volume size ``(z, y, x)``.
    spacing : tuple of float
        Voxel size in mm.
    n_lesions : int, optional
        Number of lesions; 0 gives a lesion-free volume (class 0). Default: drawn from
        ``1..max_lesions``.
    max_lesions : int
        Upper bound when ``n_lesions`` is drawn.
    lesion_radius_mm : (float, float)
        Range of lesion radii.
    contrast : float
        Lesion brightness above the surrounding tissue (tissue is about 0.35-0.7).
    noise : float
        Standard deviation of the added Gaussian noise.
    seed : int
        Seed of all random draws: the same seed gives the same volume.

    Returns
    -------
    LesionSample
    """
    shape, spacing = _check_geometry(shape, spacing)
    rng = np.random.default_rng(seed)
    if n_lesions is None:
        n_lesions = int(rng.integers(1, max_lesions + 1))
    if n_lesions < 0:
        raise XaimedError(f"n_lesions must be 0 or more, got {n_lesions}.")
    phantom = random_phantom(rng, shape, spacing, n_lesions, lesion_radius_mm, contrast)
    points = grid_points(shape, spacing)
    image = phantom.intensity(points) + rng.normal(0.0, noise, shape)
    lesions = phantom.lesion_labels(points)
    return LesionSample(
        image=image.astype(np.float32),
        lesions=lesions,
        body=phantom.body_mask(points),
        label=int(lesions.any()),
        spacing=spacing,
        centers_mm=[tuple(float(c) for c in les.center) for les in phantom.lesions],
        radii_mm=[float(les.semi_axes[0]) for les in phantom.lesions],
        seed=seed,
    )


@dataclass
class LongitudinalSample:
    """A prior/current pair with the known deformation between them.

    Attributes
    ----------
    fixed : numpy.ndarray
        The current scan (float32): the anatomy sampled at ``p + displacement(p)``.
    moving : numpy.ndarray
        The prior scan (float32): the undeformed anatomy.
    fixed_labels, moving_labels : numpy.ndarray
        uint8 organ labels (1..3) of each scan, for Dice.
    displacement : numpy.ndarray
        float32 ``(z, y, x, 3)`` in mm, components in ``(z, y, x)`` order, on the fixed grid,
        pull-back: ``fixed(p) = moving(p + displacement(p))``.
    body : numpy.ndarray
        bool body mask on the fixed grid.
    spacing : tuple of float
        Voxel size in mm of both scans.
    affine : numpy.ndarray
        The 4x4 affine part (mm, ``(z, y, x)``) of the mapping, included in ``displacement``.
    seed : int
    new_lesion : numpy.ndarray or None
        bool mask on the fixed grid of the lesion that appeared in the current scan (with
        ``new_lesion_radius_mm > 0``), else None.
    """

    fixed: np.ndarray
    moving: np.ndarray
    fixed_labels: np.ndarray
    moving_labels: np.ndarray
    displacement: np.ndarray
    body: np.ndarray
    spacing: Spacing3
    affine: np.ndarray
    seed: int
    new_lesion: np.ndarray | None = None


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def smooth_displacement(
    points: np.ndarray,
    rng: np.random.Generator,
    amplitude_mm: float,
    wavelength_mm: tuple[float, float] = (40.0, 70.0),
    n_waves: int = 4,
) -> np.ndarray:
    """A smooth random field (mm) at ``points`` from a few plane waves per component.

    The largest gradient is bounded by ``amplitude_mm * 2 pi / min(wavelength)``, which keeps the
    mapping free of folding for the defaults (about 0.5 at 3 mm).
    """
    field_mm = np.zeros(points.shape, dtype=np.float64)
    for component in range(3):
        for _ in range(n_waves):
            direction = rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            k = direction * 2 * np.pi / rng.uniform(*wavelength_mm)
            amp = amplitude_mm / n_waves * rng.uniform(0.5, 1.0)
            field_mm[..., component] += amp * np.sin(points @ k + rng.uniform(0, 2 * np.pi))
    return field_mm


def longitudinal_pair(
    shape: Shape3 = (56, 64, 64),
    spacing: Spacing3 = (1.5, 1.0, 1.0),
    *,
    max_displacement_mm: float = 3.0,
    max_rotation_deg: float = 3.0,
    max_translation_mm: float = 2.0,
    max_scaling: float = 0.02,
    n_lesions: int = 2,
    noise: float = 0.02,
    new_lesion_radius_mm: float = 0.0,
    seed: int = 0,
) -> LongitudinalSample:
    """A prior scan and the same anatomy moved by a known smooth deformation and small affine.

    Parameters
    ----------
    shape, spacing : tuple
        Grid of both scans (``(z, y, x)``, mm).
    max_displacement_mm : float
        Amplitude of the smooth (non-affine) part.
    max_rotation_deg, max_translation_mm, max_scaling : float
        Bounds of the affine part: rotation about the volume centre, translation per axis and
        isotropic scaling.
    n_lesions : int
        Lesions in the anatomy (identical in both scans).
    noise : float
        Independent Gaussian noise added to each scan.
    new_lesion_radius_mm : float
        When positive, the current scan also shows a lesion of this radius that the prior does
        not (a change for longitudinal explanations; its mask is ``new_lesion``). It is drawn
        from its own random stream, so the other outputs stay those of the same seed without it
        (outside the lesion).
    seed : int

    Returns
    -------
    LongitudinalSample
        ``fixed(p) == moving(p + displacement(p))`` up to noise and interpolation (and the new
        lesion).
    """
    shape, spacing = _check_geometry(shape, spacing)
    rng = np.random.default_rng(seed)
    phantom = random_phantom(rng, shape, spacing, n_lesions)
    points = grid_points(shape, spacing)
    center = (np.asarray(shape, float) - 1) / 2 * np.asarray(spacing, float)

    angle = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
    scale = 1.0 + rng.uniform(-max_scaling, max_scaling)
    linear = scale * _rotation(rng.normal(size=3), angle)
    translation = rng.uniform(-max_translation_mm, max_translation_mm, 3)
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = center + translation - linear @ center

    mapped = points @ linear.T + affine[:3, 3]
    mapped += smooth_displacement(points, rng, max_displacement_mm)
    displacement = mapped - points

    current = phantom
    new_lesion = None
    if new_lesion_radius_mm > 0:
        current = _with_new_lesion(phantom, float(new_lesion_radius_mm),
                                   np.random.default_rng([seed, 1]))
        new_lesion = current.lesions[-1].normalised_radius(mapped) < 1.0
    fixed = current.intensity(mapped) + rng.normal(0.0, noise, shape)
    moving = phantom.intensity(points) + rng.normal(0.0, noise, shape)
    return LongitudinalSample(
        fixed=fixed.astype(np.float32),
        moving=moving.astype(np.float32),
        fixed_labels=phantom.organ_labels(mapped),
        moving_labels=phantom.organ_labels(points),
        displacement=displacement.astype(np.float32),
        body=phantom.body_mask(mapped),
        spacing=spacing,
        affine=affine,
        seed=seed,
        new_lesion=new_lesion,
    )


def _with_new_lesion(phantom: Phantom, radius: float, rng: np.random.Generator) -> Phantom:
    """A copy of ``phantom`` with one more lesion of ``radius`` (mm) inside the body, clear
    of the others by 3 mm."""
    body = phantom.body
    for _ in range(5000):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        reach = rng.uniform(0.0, 1.0) ** (1 / 3)
        pos = body.center + direction * reach * np.maximum(body.semi_axes - radius - 3.0, 1.0)
        if all(np.linalg.norm(pos - other.center) >= radius + other.semi_axes[0] + 3.0
               for other in phantom.lesions):
            break
    else:
        raise XaimedError(f"Could not place a new lesion of {radius} mm beside the others: "
                          "use a smaller one, fewer lesions or a larger volume.")
    value = phantom.lesions[0].value if phantom.lesions else 0.45
    lesion = Ellipsoid(pos, np.full(3, radius), value=value, label=len(phantom.lesions) + 1)
    return dataclasses.replace(phantom, lesions=[*phantom.lesions, lesion])


@dataclass
class PanopticSample:
    """Reference and prediction labels of things with a core part, and what was done to them.

    Attributes
    ----------
    reference, prediction : numpy.ndarray
        uint16 instance labels: each thing's whole extent (body and core) carries its id.
    reference_semantic, prediction_semantic : numpy.ndarray
        uint8 semantic labels in the layout of :attr:`parts`: 1 = thing body, 2 = core part.
    parts : dict
        The part layout for the evaluation's ``parts`` argument:
        ``{"lesion": {"thing": [1, 2], "parts": {"core": [2]}}}``.
    events : dict
        ``"split"``: reference ids cut into several predictions; ``"merge"``: prediction id ->
        reference ids it joins; ``"miss"``: reference ids without a prediction;
        ``"false_positive"``: prediction ids without a reference; ``"matched"``: reference id ->
        prediction id of the things that were only perturbed.
    spacing : tuple of float
    seed : int
    """

    reference: np.ndarray
    prediction: np.ndarray
    reference_semantic: np.ndarray
    prediction_semantic: np.ndarray
    parts: dict
    events: dict[str, Any]
    spacing: Spacing3
    seed: int = 0
    split_pieces: dict[int, list[int]] = field(default_factory=dict)


def _ball(points: np.ndarray, center: np.ndarray, radius: float) -> np.ndarray:
    return np.sum((points - center) ** 2, axis=-1) < radius**2


def panoptic_pair(
    shape: Shape3 = (64, 64, 64),
    spacing: Spacing3 = (1.0, 1.0, 1.0),
    *,
    n_things: int = 10,
    radius_mm: tuple[float, float] = (4.0, 7.0),
    seed: int = 0,
) -> PanopticSample:
    """Reference/prediction instance labels with parts and deliberate errors.

    The first things of the reference are given roles: one is split in two by a cut through an
    off-centre plane, two neighbours are merged by one prediction that bridges them, one is
    missed; one prediction is a false positive far from any reference; the rest are matched with a
    small shift and a radius change, and their core parts moved a little.

    Parameters
    ----------
    shape, spacing : tuple
        Grid (``(z, y, x)``, mm).
    n_things : int
        Reference things, at least 5 (split, merge pair, miss and one plain match).
    radius_mm : (float, float)
        Range of thing radii.
    seed : int

    Returns
    -------
    PanopticSample
    """
    shape, spacing = _check_geometry(shape, spacing, minimum=32)
    if n_things < 5:
        raise XaimedError(f"n_things must be at least 5 (split, merge pair, miss, match), got {n_things}.")
    rng = np.random.default_rng(seed)
    points = grid_points(shape, spacing)
    extent = np.asarray(shape, float) * np.asarray(spacing, float)
    gap = 3.0 * max(spacing)  # keeps distinct things apart under 26-connectivity

    def place(radius: float, placed: list[tuple[np.ndarray, float]], near: tuple | None = None):
        for _ in range(20000):
            if near is None:
                center = rng.uniform(radius + gap, extent - radius - gap)
            else:
                other_center, other_radius = near
                direction = rng.normal(size=3)
                direction /= np.linalg.norm(direction)
                center = other_center + direction * (other_radius + radius + gap * 0.8)
                if np.any(center < radius + gap) or np.any(center > extent - radius - gap):
                    continue
            if all(
                np.linalg.norm(center - c) >= r + radius + gap or (near is not None and c is near[0])
                for c, r in placed
            ):
                return center
        raise XaimedError(
            f"Could not fit {n_things} things of radius {radius_mm} mm in {shape} voxels: use fewer "
            "things or a larger volume."
        )

    things: list[tuple[np.ndarray, float]] = []
    for i in range(n_things):
        # The thing to be split is the largest, so both of its pieces are sizeable; the merged
        # pair is of one size, so each of them overlaps the merging prediction alike.
        if i == 0:
            radius = float(radius_mm[1])
        elif i == 2:
            radius = things[1][1]
        elif i == 1:
            radius = float(rng.uniform(np.mean(radius_mm), radius_mm[1]))
        else:
            radius = float(rng.uniform(*radius_mm))
        near = things[1] if i == 2 else None  # things 1 and 2 are neighbours, for the merge
        things.append((place(radius, things, near), radius))
    fp_radius = float(rng.uniform(*radius_mm))
    fp_center = place(fp_radius, things)

    reference = np.zeros(shape, np.uint16)
    reference_core = np.zeros(shape, bool)
    for rid, (center, radius) in enumerate(things, start=1):
        reference[_ball(points, center, radius)] = rid
        core_center = center + rng.uniform(-0.2, 0.2, 3) * radius
        reference_core |= _ball(points, core_center, 0.5 * radius) & (reference == rid)

    prediction = np.zeros(shape, np.uint16)
    prediction_core = np.zeros(shape, bool)
    # Prediction ids are shuffled and offset so no code can rely on ids lining up with the reference.
    pred_ids = iter(rng.permutation(np.arange(1, n_things + 4)) * 3 + 100)
    events: dict[str, Any] = {"split": [], "merge": {}, "miss": [], "false_positive": [], "matched": {}}
    split_pieces: dict[int, list[int]] = {}

    # Split: thing 1 cut by a slab through an off-centre plane into a larger and a smaller piece.
    center, radius = things[0]
    normal = rng.normal(size=3)
    normal /= np.linalg.norm(normal)
    offset = (points - center) @ normal - 0.05 * radius
    whole = _ball(points, center, radius)
    pieces = [whole & (offset < -gap / 2), whole & (offset > gap / 2)]
    split_pieces[1] = []
    for piece in pieces:
        pid = int(next(pred_ids))
        prediction[piece] = pid
        split_pieces[1].append(pid)
    prediction_core |= _ball(points, center, 0.5 * radius) & (prediction > 0) & whole
    events["split"].append(1)

    # Merge: things 2 and 3 covered by one prediction with a bridge between them.
    (c2, r2), (c3, r3) = things[1], things[2]
    t = np.clip(((points - c2) @ (c3 - c2)) / np.dot(c3 - c2, c3 - c2), 0.0, 1.0)
    closest = c2 + t[..., None] * (c3 - c2)
    bridge = np.sum((points - closest) ** 2, axis=-1) < (0.4 * min(r2, r3)) ** 2
    merged = _ball(points, c2, r2 + 0.5) | _ball(points, c3, r3 + 0.5) | bridge
    pid = int(next(pred_ids))
    prediction[merged] = pid
    prediction_core |= (_ball(points, c2, 0.5 * r2) | _ball(points, c3, 0.5 * r3)) & merged
    events["merge"][pid] = [2, 3]

    # Miss: thing 4 has no prediction.
    events["miss"].append(4)

    # The others: shifted by up to one voxel, radius changed by up to 10%, core moved.
    for rid in range(5, n_things + 1):
        center, radius = things[rid - 1]
        shifted = center + rng.uniform(-1.0, 1.0, 3) * np.asarray(spacing)
        ball = _ball(points, shifted, radius * rng.uniform(0.9, 1.1))
        pid = int(next(pred_ids))
        prediction[ball] = pid
        core_center = shifted + rng.uniform(-0.25, 0.25, 3) * radius
        prediction_core |= _ball(points, core_center, 0.5 * radius) & ball
        events["matched"][rid] = pid

    # False positive: a thing where the reference has nothing.
    pid = int(next(pred_ids))
    fp = _ball(points, fp_center, fp_radius)
    prediction[fp] = pid
    prediction_core |= _ball(points, fp_center, 0.5 * fp_radius) & fp
    events["false_positive"].append(pid)

    def semantic(instances: np.ndarray, core: np.ndarray) -> np.ndarray:
        out = (instances > 0).astype(np.uint8)
        out[core & (instances > 0)] = 2
        return out

    return PanopticSample(
        reference=reference,
        prediction=prediction,
        reference_semantic=semantic(reference, reference_core),
        prediction_semantic=semantic(prediction, prediction_core),
        parts={"lesion": {"thing": [1, 2], "parts": {"core": [2]}}},
        events=events,
        spacing=spacing,
        seed=seed,
        split_pieces=split_pieces,
    )


def overlap_table(reference: np.ndarray, prediction: np.ndarray) -> dict[tuple[int, int], int]:
    """Voxel counts of every overlapping (reference id, prediction id) pair, both ids > 0."""
    both = (reference > 0) & (prediction > 0)
    pairs = np.stack([reference[both].astype(np.int64), prediction[both].astype(np.int64)])
    if pairs.size == 0:
        return {}
    unique, counts = np.unique(pairs, axis=1, return_counts=True)
    return {(int(r), int(p)): int(n) for (r, p), n in zip(unique.T, counts, strict=True)}


def connected_instances(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of a mask, as the semantic-input evaluation will find them."""
    return ndi.label(mask, structure=np.ones((3, 3, 3), bool))


REAL_EXTRA = 'pip install "napari-xaimed[real]"'
#: Template voxels above this (of the template's 0-1 range) are brain: nilearn's template is
#: skull-stripped, and its resampled versions hold only interpolation residue (< 1e-17) outside.
BRAIN_THRESHOLD = 0.01
TISSUE_NAMES = {1: "CSF", 2: "GM", 3: "WM"}


def _nilearn_datasets() -> Any:
    try:
        from nilearn import datasets
    except ImportError as exc:
        raise XaimedError(
            "The MNI152 sample needs nilearn, which ships the template inside its package (no "
            f"download): install it with {REAL_EXTRA} (or pip install nilearn).") from exc
    return datasets


@dataclass
class MNI152Sample:
    """The MNI152 T1 template (nilearn's ICBM152 2009a, skull-stripped) and its tissues.

    Attributes
    ----------
    image : numpy.ndarray
        float32 T1 intensities scaled to 0-1, ``(z, y, x)`` = (inferior-superior,
        posterior-anterior, left-right: RAS axes reversed).
    gm_probability, wm_probability : numpy.ndarray
        float32 nilearn grey and white matter probability templates (0-1) on the same grid.
    tissue : numpy.ndarray
        uint8 reference tissue classes inside the brain, the most probable of CSF (1, taken as
        ``1 - GM - WM``), GM (2) and WM (3); 0 outside. The classes are numbered like the
        project's tissue segmentations (by mean T1 intensity, 1 the darkest).
    brain : numpy.ndarray
        bool brain mask (template above :data:`BRAIN_THRESHOLD`).
    spacing : tuple of float
        Voxel size in mm, ``(z, y, x)``.
    translate : tuple of float
        World position (mm) of voxel ``(0, 0, 0)`` along ``(z, y, x)``: the layer ``translate``
        (MNI coordinates, RAS).
    affine : numpy.ndarray
        The NIfTI voxel-to-world matrix as nilearn gives it.
    resolution : float
        The grid's voxel size in mm.
    """

    image: np.ndarray
    gm_probability: np.ndarray
    wm_probability: np.ndarray
    tissue: np.ndarray
    brain: np.ndarray
    spacing: Spacing3
    translate: Spacing3
    affine: np.ndarray
    resolution: float

    @property
    def gm(self) -> np.ndarray:
        """bool grey-matter mask (reference class 2)."""
        return self.tissue == 2

    @property
    def wm(self) -> np.ndarray:
        """bool white-matter mask (reference class 3)."""
        return self.tissue == 3


def _check_resolution(resolution: Any) -> int:
    if isinstance(resolution, bool) or int(resolution) != resolution or not 1 <= resolution <= 8:
        raise XaimedError(
            f"resolution must be a whole number of mm from 1 to 8, got {resolution!r}.")
    return int(resolution)


def mni152(resolution: int = 2) -> MNI152Sample:
    """The MNI152 T1 brain template with grey and white matter, from nilearn (no download).

    Needs the optional extra ``napari-xaimed[real]`` (nilearn). The template, and nilearn's grey
    and white matter probability templates, are read with
    ``nilearn.datasets.load_mni152_template`` / ``load_mni152_gm_template`` /
    ``load_mni152_wm_template`` and converted to ``(z, y, x)`` by
    :func:`napari_xaimed.io.volume_from_nifti`, the conversion
    :func:`~napari_xaimed.io.read_volume` applies to NIfTI files.

    Parameters
    ----------
    resolution : int
        Isotropic voxel size in mm (nilearn resamples its 1 mm template): 1 gives 189 x 233 x
        197 voxels, 2 gives 95 x 117 x 99, 4 gives 48 x 59 x 50.

    Returns
    -------
    MNI152Sample

    Raises
    ------
    XaimedError
        If nilearn is not installed (the message names ``pip install "napari-xaimed[real]"``)
        or the resolution is not a whole number of mm from 1 to 8.

    Notes
    -----
    nilearn's binary ``load_mni152_gm_mask`` and ``load_mni152_wm_mask`` (probability above 0.2,
    then a closing) overlap: most of the white-matter mask lies inside the grey-matter one, so
    they cannot both be right for one voxel. :attr:`MNI152Sample.tissue` takes the most probable
    class instead, which gives each brain voxel one tissue.
    """
    from napari_xaimed.io import volume_from_nifti

    resolution = _check_resolution(resolution)
    datasets = _nilearn_datasets()
    template = volume_from_nifti(datasets.load_mni152_template(resolution=resolution), "MNI152")
    gm = volume_from_nifti(datasets.load_mni152_gm_template(resolution=resolution), "MNI152 GM")
    wm = volume_from_nifti(datasets.load_mni152_wm_template(resolution=resolution), "MNI152 WM")
    image = template.data.astype(np.float32)
    gm_p = np.clip(gm.data, 0.0, 1.0).astype(np.float32)
    wm_p = np.clip(wm.data, 0.0, 1.0).astype(np.float32)
    brain = image > BRAIN_THRESHOLD
    csf_p = np.clip(1.0 - gm_p - wm_p, 0.0, 1.0)
    tissue = (np.argmax(np.stack([csf_p, gm_p, wm_p]), axis=0) + 1).astype(np.uint8)
    tissue[~brain] = 0
    return MNI152Sample(
        image=image, gm_probability=gm_p, wm_probability=wm_p, tissue=tissue, brain=brain,
        spacing=template.spacing, translate=template.translate, affine=template.affine,
        resolution=float(resolution),
    )


@dataclass
class MNI152DeformedSample:
    """The MNI152 template (``moving``) and a copy moved by a known smooth deformation (``fixed``).

    Attributes
    ----------
    fixed : numpy.ndarray
        float32 deformed copy: the 1 mm template sampled (trilinear) at ``p + displacement(p)``
        for every voxel centre ``p`` of the grid, so it is not the moving image resampled by the
        interpolator a registration uses.
    moving : numpy.ndarray
        float32 template at ``resolution`` (nilearn's).
    displacement : numpy.ndarray
        float32 ``(z, y, x, 3)`` in mm, components in ``(z, y, x)`` order, on the fixed grid,
        pull-back: ``fixed(p) = moving(p + displacement(p))``, the field a registration of
        ``moving`` to ``fixed`` should recover.
    fixed_tissue, moving_tissue : numpy.ndarray
        uint8 reference tissue classes (see :class:`MNI152Sample`) of each image; the fixed ones
        are the moving ones carried through the field (label-preserving interpolation).
    fixed_brain : numpy.ndarray
        bool brain mask of the fixed image.
    spacing, translate : tuple of float
        The grid of both images (mm, ``(z, y, x)``).
    seed : int
    """

    fixed: np.ndarray
    moving: np.ndarray
    displacement: np.ndarray
    fixed_tissue: np.ndarray
    moving_tissue: np.ndarray
    fixed_brain: np.ndarray
    spacing: Spacing3
    translate: Spacing3
    seed: int


def mni152_deformed(
    resolution: int = 2,
    *,
    max_displacement_mm: float = 3.0,
    wavelength_mm: tuple[float, float] = (40.0, 70.0),
    seed: int = 0,
) -> MNI152DeformedSample:
    """The MNI152 template and a copy moved by a known smooth displacement field.

    The field is :func:`smooth_displacement` (a few plane waves per component) evaluated at the
    world (MNI) position of each voxel, so one seed gives the same deformation at every
    resolution.

    Parameters
    ----------
    resolution : int
        Voxel size in mm (see :func:`mni152`).
    max_displacement_mm : float
        Amplitude of each component of the field (its largest gradient stays below about
        ``max_displacement_mm * 2 pi / min(wavelength_mm)``, free of folding for the defaults).
    wavelength_mm : (float, float)
        Range of the plane waves' wavelengths.
    seed : int

    Returns
    -------
    MNI152DeformedSample
        ``fixed(p) == moving(p + displacement(p))`` up to interpolation.
    """
    from napari_xaimed.registration.fields import resample

    if not np.isfinite(max_displacement_mm) or max_displacement_mm < 0:
        raise XaimedError(
            f"max_displacement_mm must be 0 or more (mm), got {max_displacement_mm}.")
    sample = mni152(resolution)
    fine = sample if sample.resolution == 1 else mni152(1)
    shape = sample.image.shape
    points = grid_points(shape, sample.spacing) + np.asarray(sample.translate)
    rng = np.random.default_rng(seed)
    displacement = smooth_displacement(points, rng, max_displacement_mm,
                                       wavelength_mm).astype(np.float32)
    grid = {"fixed_spacing": sample.spacing, "fixed_origin": sample.translate}
    fixed = resample(fine.image, shape, displacement, **grid, moving_spacing=fine.spacing,
                     moving_origin=fine.translate)
    fixed_tissue = resample(sample.tissue, shape, displacement, **grid,
                            moving_spacing=sample.spacing, moving_origin=sample.translate,
                            interpolation="label")
    return MNI152DeformedSample(
        fixed=fixed, moving=sample.image, displacement=displacement, fixed_tissue=fixed_tissue,
        moving_tissue=sample.tissue, fixed_brain=fixed > BRAIN_THRESHOLD,
        spacing=sample.spacing, translate=sample.translate, seed=seed,
    )
