"""Late ground truth: remember recent predictions by response id until their labels arrive."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class PredictionLog:
    """A bounded map from inference response id to the predicted classes, oldest evicted first.

    Labels sent to POST /v2/models/{name}/outcomes are matched against it; each id can be resolved once.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[int, ...]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, response_id: str, predictions: Sequence[int]) -> None:
        if self._capacity == 0:
            return
        self._entries[response_id] = tuple(predictions)
        self._entries.move_to_end(response_id)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def take(self, response_id: str) -> tuple[int, ...] | None:
        """The predictions served under `response_id`, forgotten afterwards; None if unknown or evicted."""
        return self._entries.pop(response_id, None)


def score(predictions: Sequence[int], labels: Sequence[int]) -> tuple[int, int]:
    """(correct, incorrect) counts of predictions against labels of the same length."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(labels)} labels for {len(predictions)} predictions")
    correct = sum(1 for p, y in zip(predictions, labels, strict=True) if p == y)
    return correct, len(labels) - correct
