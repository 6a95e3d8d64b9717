"""Image registration with ANTsPy: warped image, displacement, Jacobian, quality figures.

:func:`register` aligns a moving volume to a fixed one and returns a
:class:`RegistrationResult` on the fixed grid; ``result.apply`` carries other volumes along.
:func:`register_lazy` registers volumes larger than memory through downsampled copies and
:func:`warp_lazy` applies the coarse field at full resolution, slab by slab, into Zarr.
The field helpers work on any displacement that follows the package convention.
"""

from napari_xaimed.registration.fields import (
    INTERPOLATIONS,
    displacement_vectors,
    jacobian_determinant,
    jacobian_summary,
    resample,
    warped_grid,
)
from napari_xaimed.registration.lazy import (
    LazyRegistration,
    downsample,
    register_lazy,
    register_lazy_steps,
    warp_lazy,
)
from napari_xaimed.registration.params import METRICS, TRANSFORMS
from napari_xaimed.registration.run import (
    RegistrationResult,
    prewarm,
    register,
    register_steps,
)

__all__ = [
    "INTERPOLATIONS",
    "LazyRegistration",
    "METRICS",
    "TRANSFORMS",
    "RegistrationResult",
    "displacement_vectors",
    "downsample",
    "jacobian_determinant",
    "jacobian_summary",
    "prewarm",
    "register",
    "register_lazy",
    "register_lazy_steps",
    "register_steps",
    "resample",
    "warp_lazy",
    "warped_grid",
]
