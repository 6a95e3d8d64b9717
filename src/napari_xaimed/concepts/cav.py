"""The linear models behind concept vectors, fitted on standardised activations.

Captum's default CAV classifier fits scikit-learn's SGD on the raw activations. A layer's
activations are rarely centred on zero (a scan's positive background, the output of a ReLU):
with a shared offset the SGD fit does not converge within its iterations and the CAV's sign is
close to a coin flip, so TCAV answered at random. :class:`StandardisedClassifier` standardises
each feature over the examples it is fitted on (scikit-learn's ``StandardScaler``; a constant
feature keeps scale 1 and so gets weight 0, never NaN), fits the same SGD classifier as Captum
(hinge loss, ``alpha=0.01``, ``max_iter=1000``, ``tol=1e-3``) and carries its vector back to
activation space with :func:`activation_direction` (regression concept vectors do the same
with their ridge regression).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from captum.concept._utils.classifier import Classifier
from torch.utils.data import DataLoader


def activation_direction(coef: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The unit concept vector in activation space of a linear model fitted on standardised
    activations ``z = (a - mean) / scale``.

    The model's vector ``coef`` is a direction in standardised coordinates; moving ``z`` along
    it moves the activations by ``coef * scale``. The directional derivative of the network's
    score along that vector is ``grad_a · (coef * scale) = grad_z · coef``, that of the
    standardised layer: up to one positive factor per vector it does not change when a feature
    is shifted or rescaled and the network undoes it downstream (the same function), so
    neither do the TCAV score and the RCV's score and relevance. The other mapping,
    ``coef / scale`` (the normal of the model's boundary in activation space), weighs each
    feature by ``1 / scale²`` relative to the data's own spread: a feature that barely varies
    (a ReLU unit that fires once, faintly) outweighs the rest and its gradient sets the sign
    (a coin flip behind a ReLU), and a regression concept's sign changed with a channel's
    scale. The length only scales magnitudes, so the vector is made a unit vector (a zero
    vector, when nothing separates the sets, stays zero). A constant feature is all zeros
    once standardised, so its weight stays 0 (with ``scale`` 1: no NaN).
    """
    direction = np.asarray(coef, np.float64) * np.asarray(scale, np.float64)
    norm = float(np.linalg.norm(direction))
    return direction / norm if norm > 0 else direction


def standardise(activations: np.ndarray) -> tuple[np.ndarray, Any]:
    """Activations ``(n, features)`` standardised per feature, and the fitted scaler
    (``scale_`` is 1 for a constant feature)."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(activations)
    return scaler.transform(activations), scaler


class StandardisedClassifier(Classifier):
    """Captum CAV classifier: SGD on standardised activations, the CAV carried back to
    activation space by :func:`activation_direction`.

    Parameters
    ----------
    seed : int
        Seeds the train/test splits and the SGD of every CAV it fits, in turn.
    """

    def __init__(self, seed: int = 0) -> None:
        self._rng = np.random.default_rng(seed)
        self._weights: torch.Tensor | None = None
        self._classes: np.ndarray | None = None

    def train_and_eval(self, dataloader: DataLoader, test_split_ratio: float = 0.33,
                       **kwargs: Any) -> dict[str, torch.Tensor]:
        """Fit on a share of each set's examples and report the accuracy on the rest.

        The split is stratified (``int(test_split_ratio * n)`` of each set's ``n`` examples
        are held out), so each set keeps at least one training example; Captum's default
        split can leave a small set out entirely, and then the fit fails.
        """
        from sklearn.linear_model import SGDClassifier

        inputs, labels = [], []
        for x, y in dataloader:
            inputs.append(x.detach().cpu().double().reshape(x.shape[0], -1))
            labels.append(y.detach().cpu())
        acts = torch.cat(inputs).numpy()
        classes = torch.cat(labels).numpy()
        test = np.zeros(len(classes), bool)
        for label in np.unique(classes):
            members = self._rng.permutation(np.flatnonzero(classes == label))
            test[members[:int(test_split_ratio * len(members))]] = True
        z, scaler = standardise(acts[~test])
        model = SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3,
                              random_state=int(self._rng.integers(2 ** 31)))
        model.fit(z, classes[~test])
        vectors = torch.stack([torch.as_tensor(activation_direction(c, scaler.scale_))
                               for c in model.coef_])
        # two sets: the one row of coef_ scores classes_[1]; the first set's is its opposite
        self._weights = torch.cat([-vectors, vectors]) if len(vectors) == 1 else vectors
        self._classes = model.classes_
        accuracy = (float(np.mean(model.predict(scaler.transform(acts[test]))
                                  == classes[test])) if test.any() else float("nan"))
        return {"accs": torch.tensor(accuracy)}

    def weights(self) -> torch.Tensor:
        """The CAVs ``(2, features)``, one per set, in the order of :meth:`classes`."""
        if self._weights is None:
            raise RuntimeError("train_and_eval first")
        return self._weights

    def classes(self) -> list[int]:
        """The concept ids, in the order of the rows of :meth:`weights`."""
        if self._classes is None:
            raise RuntimeError("train_and_eval first")
        return [int(c) for c in self._classes]
