"""Dock widgets: thin views that read layers, call the core and add layers through ``_layers``."""

from napari_xaimed.viewer.widgets.attribution import AttributionWidget
from napari_xaimed.viewer.widgets.evaluation import EvaluationWidget
from napari_xaimed.viewer.widgets.explanations import ExplanationWidget
from napari_xaimed.viewer.widgets.latent import CasesWidget
from napari_xaimed.viewer.widgets.longitudinal import LongitudinalWidget
from napari_xaimed.viewer.widgets.registration import RegistrationWidget
from napari_xaimed.viewer.widgets.segmentation import SegmentationWidget

__all__ = ["AttributionWidget", "CasesWidget", "EvaluationWidget", "ExplanationWidget",
           "LongitudinalWidget", "RegistrationWidget", "SegmentationWidget"]
