"""The dataset behind the reference model: scikit-learn's bundled breast-cancer data (nothing downloaded).

Ten of the 30 columns are used. The rows are split once, with a fixed seed independent of the server's
--seed, into a training part (the model and the frozen reference bins come from it) and a serving part
(what `refserver.client` draws request rows from), so every server version and every client agree on both.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from model_metrics import reference_edges

# Dataset column names of the features the model uses; exposed in snake_case (see feature_names()).
COLUMNS: Final = (
    "mean radius",
    "mean texture",
    "mean smoothness",
    "mean compactness",
    "mean concave points",
    "mean symmetry",
    "worst radius",
    "worst texture",
    "worst area",
    "worst concave points",
)
FEATURE_NAMES: Final = tuple(c.replace(" ", "_") for c in COLUMNS)
N_FEATURES: Final = len(COLUMNS)
SERVE_FRACTION: Final = 0.3
SPLIT_SEED: Final = 0
REFERENCE_BINS: Final = 10

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Dataset:
    x_train: FloatArray
    y_train: IntArray
    x_serve: FloatArray
    y_serve: IntArray


def feature_names() -> list[str]:
    """The model's input feature names, in input-tensor column order."""
    return list(FEATURE_NAMES)


@functools.cache
def load() -> Dataset:
    """Load the data and split it (stratified, fixed seed). Cached: the arrays must not be mutated."""
    from sklearn.datasets import load_breast_cancer  # type: ignore[import-untyped]  # deferred: ~1 s import

    bunch = load_breast_cancer()
    columns = [list(bunch.feature_names).index(c) for c in COLUMNS]
    x = np.ascontiguousarray(bunch.data[:, columns], dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(SPLIT_SEED)
    serve: list[int] = []
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        serve.extend(rows[: round(len(rows) * SERVE_FRACTION)].tolist())
    is_serve = np.zeros(len(y), dtype=bool)
    is_serve[serve] = True
    data = Dataset(x_train=x[~is_serve], y_train=y[~is_serve], x_serve=x[is_serve], y_serve=y[is_serve])
    for array in (data.x_train, data.y_train, data.x_serve, data.y_serve):
        array.setflags(write=False)
    return data


@functools.cache
def frozen_reference_edges() -> dict[str, list[float]]:
    """Per-feature bucket edges (deciles of the training part), the reference bins for drift detection."""
    x = load().x_train
    return {name: reference_edges(x[:, i].tolist(), bins=REFERENCE_BINS) for i, name in enumerate(FEATURE_NAMES)}
