"""Out-of-sample class probabilities by K-fold cross-validation, and confident learning on them.

Every item is predicted by a network that never saw it: the items are split into K stratified folds,
K networks are trained (each on the other K-1 folds) with the platform's training loop, and each
predicts its held-out fold. Cleanlab's confident learning then ranks the items whose given label the
probabilities contradict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from cleanlab.filter import find_label_issues
from cleanlab.rank import get_label_quality_scores
from sklearn.model_selection import StratifiedKFold

from training.engine.inference import Predictor
from training.engine.loop import TrainConfig, TrainData, train

PREDICT_ROWS = 4096  # held-out rows decoded and predicted at a time
FoldFn = Callable[[int, int], None]  # (folds done, folds in all)
StopFn = Callable[[], bool]


class Stopped(Exception):
    """should_stop() asked to stop between folds or inside one."""


class Rows:
    """Chosen rows of one or more (N, C, H, W) uint8 arrays or array-likes (memory maps, encoded
    shards), joined end to end, read only when indexed: a fold's training set without a copy of it.

    Indexing by an int, a slice or an integer array gives fresh arrays in the order asked for, as
    the training loop expects of its inputs."""

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, parts: list, rows: np.ndarray | None = None):
        sizes = [len(p) for p in parts]
        self.parts = parts
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        total = int(self.starts[-1])
        self.rows = np.arange(total, dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
        item_shape = tuple(parts[0].shape[1:]) if parts else (0, 0, 0)
        self.shape = (len(self.rows), *item_shape)

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, rows: np.ndarray) -> Rows:
        """The view of these rows of this view, still unread."""
        return Rows(self.parts, self.rows[np.asarray(rows, dtype=np.int64)])

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, (int, np.integer)):
            return self[np.array([int(key)])][0]
        wanted = self.rows[key] if isinstance(key, slice) else self.rows[np.asarray(key, dtype=np.int64)]
        out = np.empty((len(wanted), *self.shape[1:]), dtype=np.uint8)
        part_of = np.searchsorted(self.starts, wanted, side="right") - 1
        for part in np.unique(part_of):
            mask = part_of == part
            out[mask] = self.parts[part][wanted[mask] - self.starts[part]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


def out_of_sample_probs(
    *,
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    config: TrainConfig,
    seed: int,
    work_dir: Path,
    folds: int = 5,
    device: str = "auto",
    on_fold: FoldFn | None = None,
    should_stop: StopFn | None = None,
) -> np.ndarray:
    """(N, num_classes) float32 probabilities, row i from the network trained without item i.

    x: uint8 (N, C, H, W), an array or an array-like such as `Rows` (read a batch at a time, never
    whole); y: (N,) class indices. Needs at least `folds` items of the rarest class.
    """
    if not isinstance(x, Rows):
        x = Rows([x])
    y = np.asarray(y, dtype=np.int64)
    n = len(y)
    counts = np.bincount(y, minlength=num_classes)
    present = counts[counts > 0]
    if folds < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    if len(present) < 2:
        raise ValueError("cross-validation needs at least two classes with items")
    if present.min() < folds:
        raise ValueError(f"every class needs at least {folds} items for {folds} folds (the rarest has {present.min()})")
    probs = np.zeros((n, num_classes), dtype=np.float32)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=int(seed) % 2**32)
    empty_x = np.zeros((0, *x.shape[1:]), dtype=np.uint8)
    empty_y = np.zeros((0,), dtype=np.int64)
    for k, (train_idx, held_idx) in enumerate(splitter.split(np.zeros(n), y)):
        if should_stop is not None and should_stop():
            raise Stopped()
        data = TrainData(
            train_x=x.take(train_idx),
            train_y=y[train_idx],
            val_x=empty_x,
            val_y=empty_y,
            num_classes=num_classes,
        )
        fold_dir = Path(work_dir) / f"fold-{k}"
        result = train(
            data=data,
            config=config,
            seed=int(seed) + k,
            checkpoint_dir=fold_dir,
            device=device,
            should_stop=should_stop,
        )
        if result.stopped:
            raise Stopped()
        predictor = Predictor.load(fold_dir / f"epoch-{config.epochs}.pt", device=device)
        for start in range(0, len(held_idx), PREDICT_ROWS):
            rows = held_idx[start : start + PREDICT_ROWS]
            probs[rows] = predictor.predict_proba(x[rows])
        if on_fold is not None:
            on_fold(k + 1, folds)
    return probs


@dataclass(frozen=True)
class Suspect:
    index: int  # row in the arrays given
    given: int  # the label the item has
    suggested: int  # the class the out-of-sample probabilities prefer
    quality: float  # cleanlab's label quality score (self-confidence): low is suspicious
    confidence: float  # probability of the suggested class


def label_suspects(*, labels: np.ndarray, probs: np.ndarray) -> list[Suspect]:
    """Items confident learning flags as likely mislabelled, most suspicious first."""
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return []
    flagged = find_label_issues(labels=labels, pred_probs=probs, return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(labels=labels, pred_probs=probs, method="self_confidence")
    out = []
    for i in flagged:
        suggested = int(np.argmax(probs[i]))
        out.append(
            Suspect(
                index=int(i),
                given=int(labels[i]),
                suggested=suggested,
                quality=float(quality[i]),
                confidence=float(probs[i, suggested]),
            )
        )
    return out
