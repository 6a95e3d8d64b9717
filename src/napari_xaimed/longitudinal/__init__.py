"""Longitudinal explanation: how the evidence changed from a prior to a current scan.
"""

from napari_xaimed.longitudinal.explain import (
    LongitudinalResult,
    explain_change,
)

__all__ = [
    "LongitudinalResult",
    "explain_change",
]
