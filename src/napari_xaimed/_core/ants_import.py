"""Import ANTsPy for the spawned ANTs process without the parts it never uses.

``import ants`` loads every subpackage (``from .learn import *``, ``from .plotting import *``,
...), and with them statsmodels, matplotlib and scikit-learn: about 40 % of its import time,
which a script's first :func:`~napari_xaimed.registration.register` (or Atropos tissue
classes) waits for. The spawned process only calls ``ants.registration``, ``ants.atropos``,
``ants.from_numpy``, ``ants.apply_transforms``, ``ants.read_transform`` and ``ants.image_read``,
none of which touch those subpackages. So this module, the child's preload, puts empty
modules in place of ``ants.learn``, ``ants.plotting`` and ``ants.deeplearn`` and lets
statsmodels (imported at module level by ``ants.math``, used only inside its functions) load on
first use, then imports ANTs. It runs only when the child calls :func:`import_ants` (its preload is
:data:`ANTS_PRELOAD`), never in the user's own process,
where ``ants.plot`` and the rest must stay available.

Lazy loading is kept to statsmodels: matplotlib breaks under ``importlib.util.LazyLoader``
(its docstring interpolation needs import-time side effects in order).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types

#: The spawned process's preload (see :mod:`napari_xaimed._core.spawned`).
ANTS_PRELOAD = "napari_xaimed._core.ants_import:import_ants"
#: ANTsPy subpackages replaced by empty modules in the registration process.
SKIPPED = ("learn", "plotting", "deeplearn")
#: Third-party packages loaded only when first used.
LAZY = ("statsmodels",)


class _LazyFinder(importlib.abc.MetaPathFinder):
    """Finds LAZY packages with the normal finders, then defers their execution."""

    def find_spec(self, name: str, path: object, target: object = None
                  ) -> importlib.machinery.ModuleSpec | None:
        if name.split(".")[0] not in LAZY:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def _skip(name: str) -> None:
    module = types.ModuleType(name, "left out of the registration process "
                                    "(napari_xaimed._core.ants_import)")
    module.__path__ = []  # a package, so `from .learn import *` finds it
    module.__all__ = []
    sys.modules[name] = module


def import_ants() -> types.ModuleType:
    """Import ``ants`` without its learning, plotting and deep-learning subpackages (in the
    spawned ANTs process only)."""
    if "ants" not in sys.modules:
        for sub in SKIPPED:
            _skip(f"ants.{sub}")
        sys.meta_path.insert(0, _LazyFinder())
    import ants

    return ants
