"""The reference model: StandardScaler + LogisticRegression trained at load time, served by a numpy fast path.

scikit-learn's predict_proba costs ~300 us per call in input validation alone, a third of a core at
1000 requests/s, so after fitting the pipeline is folded into one weight vector and a bias
(logit = x @ w + b), which gives the same probabilities (checked at training time) in a few microseconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from refserver import dataset
from refserver.dataset import FloatArray, IntArray

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    labels: IntArray  # predicted class per row (1 = benign, 0 = malignant)
    confidence: FloatArray  # probability of the predicted class per row


@dataclass(frozen=True)
class LinearModel:
    weights: FloatArray  # shape [F], in raw (unscaled) feature units
    bias: float
    means: FloatArray  # training means, used to impute missing (NaN) values
    stds: FloatArray  # training standard deviations, the unit of the drift fault
    holdout_accuracy: float

    def predict(self, x: FloatArray) -> Prediction:
        """Predict rows of `x` (shape [N, F]); NaN values are imputed with the training mean."""
        missing = np.isnan(x)
        if missing.any():
            x = np.where(missing, self.means, x)
        logits = x @ self.weights + self.bias
        p_positive = 1.0 / (1.0 + np.exp(-logits))
        labels = (logits > 0).astype(np.int64)  # LogisticRegression.predict's rule
        confidence = np.where(labels == 1, p_positive, 1.0 - p_positive)
        return Prediction(labels=labels, confidence=confidence)


def train(seed: int) -> LinearModel:
    """The model for `seed`: from the cache beside the dataset's (deterministic per seed, so it is only a cache),
    else fitted (a second's scikit-learn import and fit) and cached."""
    path = dataset.cache_dir() / f"linear_model_seed{seed}_v1.npz"
    try:
        with np.load(path, allow_pickle=False) as cached:
            return LinearModel(
                weights=np.asarray(cached["weights"], dtype=np.float64),
                bias=float(cached["bias"]),
                means=np.asarray(cached["means"], dtype=np.float64),
                stds=np.asarray(cached["stds"], dtype=np.float64),
                holdout_accuracy=float(cached["holdout_accuracy"]),
            )
    except (OSError, KeyError, ValueError):
        pass
    model = fit(seed)
    dataset.save_atomically(
        path,
        weights=model.weights,
        bias=np.float64(model.bias),
        means=model.means,
        stds=model.stds,
        holdout_accuracy=np.float64(model.holdout_accuracy),
    )
    return model


def fit(seed: int) -> LinearModel:
    """Fit the pipeline on the training split (deterministic per seed) and fold it into a LinearModel."""
    from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
    from sklearn.pipeline import make_pipeline  # type: ignore[import-untyped]
    from sklearn.preprocessing import StandardScaler  # type: ignore[import-untyped]

    data = dataset.load()
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    pipeline.fit(data.x_train, data.y_train)
    scaler: StandardScaler = pipeline[0]
    classifier: LogisticRegression = pipeline[1]
    coef = np.asarray(classifier.coef_[0], dtype=np.float64)
    mean = np.asarray(scaler.mean_, dtype=np.float64)
    scale = np.asarray(scaler.scale_, dtype=np.float64)
    weights = coef / scale
    bias = float(classifier.intercept_[0] - np.sum(coef * mean / scale))
    model = LinearModel(
        weights=weights,
        bias=bias,
        means=mean,
        stds=scale,
        holdout_accuracy=float(pipeline.score(data.x_serve, data.y_serve)),
    )
    expected = pipeline.predict_proba(data.x_serve)
    got = model.predict(data.x_serve)
    p_positive = np.where(got.labels == 1, got.confidence, 1.0 - got.confidence)
    if not np.allclose(p_positive, expected[:, 1], atol=1e-9):
        raise RuntimeError("the folded linear model disagrees with the scikit-learn pipeline")
    log.info("model trained: %d rows, hold-out accuracy %.3f", len(data.y_train), model.holdout_accuracy)
    return model
