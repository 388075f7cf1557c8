"""The dataset behind the reference model: scikit-learn's bundled breast-cancer data (nothing downloaded).

Ten of the 30 columns are used. The rows are split once, with a fixed seed independent of the server's
--seed, into a training part (the model and the frozen reference bins come from it) and a serving part
(what `refserver.client` draws request rows from), so every server version and every client agree on both.

Importing scikit-learn to read the data costs about a second per process; the ten columns are cached in an .npz
file (per user, in the temp dir or $REFSERVER_CACHE_DIR) after the first read, so servers start in a fraction of it.
"""

from __future__ import annotations

import functools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

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


def cache_dir() -> Path:
    return Path(
        os.environ.get("REFSERVER_CACHE_DIR") or os.path.join(tempfile.gettempdir(), f"refserver-{os.getuid()}")
    )


def save_atomically(path: Path, **arrays: Any) -> None:
    """Write an .npz cache file so that no reader ever sees half of it; a failure leaves no cache."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
        np.savez(partial, **arrays)
        os.replace(partial, path)
    except OSError:
        pass


def _cache_file() -> Path:
    return cache_dir() / "breast_cancer_columns_v1.npz"


def _columns() -> tuple[FloatArray, IntArray]:
    """The used columns and the labels: from the cache, else from scikit-learn (then cached, atomically)."""
    path = _cache_file()
    try:
        with np.load(path, allow_pickle=False) as cached:
            x, y = cached["x"], cached["y"]
            if x.shape[1] == len(COLUMNS) and len(x) == len(y):
                return np.ascontiguousarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
    except (OSError, KeyError, ValueError, IndexError):
        pass
    from sklearn.datasets import load_breast_cancer  # type: ignore[import-untyped]  # deferred: ~1 s import

    bunch = load_breast_cancer()
    columns = [list(bunch.feature_names).index(c) for c in COLUMNS]
    x = np.ascontiguousarray(bunch.data[:, columns], dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    save_atomically(path, x=x, y=y)
    return x, y


@functools.cache
def load() -> Dataset:
    """Load the data and split it (stratified, fixed seed). Cached: the arrays must not be mutated."""
    x, y = _columns()
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
