"""Annotation results per schema kind: validation, consensus, gold matching and box geometry.

Pure functions (no Django): the services call them with plain values.

- single_label: `{"label": CLASS}`
- multi_label: `{"labels": [CLASS, ...]}` (unique, stored sorted, possibly empty)
- boxes: `{"boxes": [{"label": CLASS, "x", "y", "w", "h"}, ...]}` in pixels of the original image,
  top-left origin, inside the image (possibly empty)
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

SINGLE_LABEL = "single_label"
MULTI_LABEL = "multi_label"
BOXES = "boxes"
KINDS = (SINGLE_LABEL, MULTI_LABEL, BOXES)
# Text items take these kinds only: a box needs pixels.
TEXT_KINDS = (SINGLE_LABEL, MULTI_LABEL)
IOU_THRESHOLD = 0.5
# Coordinates are rounded to this many decimals when stored (sub-pixel noise is not information).
_DECIMALS = 2


class ResultError(ValueError):
    """A result that does not fit the schema; `code` is the API error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _shape(message: str) -> ResultError:
    return ResultError("invalid_result", message)


def _class(name: Any, class_names: Iterable[str]) -> str:
    if not isinstance(name, str) or not name:
        raise _shape("a class name is a non-empty string")
    if name not in class_names:
        raise ResultError("unknown_class", f"unknown class {name!r}")
    return name


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _shape(f"box {field} is a finite number")
    return float(value)


def validate_result(
    kind: str,
    result: Any,
    class_names: Iterable[str],
    width: int,
    height: int,
    item_kind: str = "image",
) -> dict:
    """The normalised result of `kind` for an item of `width` x `height` pixels; raises ResultError."""
    names = set(class_names)
    if kind not in KINDS:
        raise _shape(f"unknown schema kind {kind!r}")
    if item_kind == "text" and kind not in TEXT_KINDS:
        raise _shape("text items take single_label or multi_label results, not boxes")
    if not isinstance(result, dict):
        raise _shape("a result is a JSON object")
    if kind == SINGLE_LABEL:
        if set(result) != {"label"}:
            raise _shape('a single-label result is {"label": CLASS}')
        return {"label": _class(result["label"], names)}
    if kind == MULTI_LABEL:
        labels = result.get("labels")
        if set(result) != {"labels"} or not isinstance(labels, list):
            raise _shape('a multi-label result is {"labels": [CLASS, ...]}')
        clean = [_class(name, names) for name in labels]
        if len(set(clean)) != len(clean):
            raise _shape("a class appears twice in labels")
        return {"labels": sorted(clean)}
    boxes = result.get("boxes")
    if set(result) != {"boxes"} or not isinstance(boxes, list):
        raise _shape('a box result is {"boxes": [{"label", "x", "y", "w", "h"}, ...]}')
    out = []
    for i, box in enumerate(boxes):
        if not isinstance(box, dict) or set(box) != {"label", "x", "y", "w", "h"}:
            raise _shape(f'box {i} is {{"label", "x", "y", "w", "h"}}')
        label = _class(box["label"], names)
        x, y, w, h = (_number(box[k], k) for k in ("x", "y", "w", "h"))
        if w <= 0 or h <= 0:
            raise _shape(f"box {i} has no area (w and h must be > 0)")
        # A rounding slack of a hundredth of a pixel, the precision results are stored at.
        eps = 10**-_DECIMALS
        if x < 0 or y < 0 or x + w > width + eps or y + h > height + eps:
            raise ResultError("box_outside_image", f"box {i} lies outside the {width}x{height} image")
        out.append(_rounded_box(label, x, y, min(w, width - x), min(h, height - y)))
    out.sort(key=lambda b: (b["label"], b["x"], b["y"], b["w"], b["h"]))
    return {"boxes": out}


def _rounded_box(label: str, x: float, y: float, w: float, h: float) -> dict:
    return {
        "label": label,
        "x": round(x, _DECIMALS),
        "y": round(y, _DECIMALS),
        "w": round(w, _DECIMALS),
        "h": round(h, _DECIMALS),
    }


# Geometry


def iou(a: dict, b: dict) -> float:
    """Intersection over union of two boxes ({"x", "y", "w", "h"})."""
    ix = max(0.0, min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"]))
    iy = max(0.0, min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"]))
    inter = ix * iy
    union = a["w"] * a["h"] + b["w"] * b["h"] - inter
    return inter / union if union > 0 else 0.0


def _iou_matrix(a: Sequence[dict], b: Sequence[dict]) -> np.ndarray:
    if not a or not b:
        return np.zeros((len(a), len(b)))
    pa = np.array([[x["x"], x["y"], x["x"] + x["w"], x["y"] + x["h"]] for x in a], dtype=float)
    pb = np.array([[x["x"], x["y"], x["x"] + x["w"], x["y"] + x["h"]] for x in b], dtype=float)
    ix = np.clip(np.minimum(pa[:, None, 2], pb[None, :, 2]) - np.maximum(pa[:, None, 0], pb[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(pa[:, None, 3], pb[None, :, 3]) - np.maximum(pa[:, None, 1], pb[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (pa[:, 2] - pa[:, 0]) * (pa[:, 3] - pa[:, 1])
    area_b = (pb[:, 2] - pb[:, 0]) * (pb[:, 3] - pb[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_boxes(a_boxes: Sequence[dict], b_boxes: Sequence[dict], threshold: float = IOU_THRESHOLD) -> list:
    """One-to-one matches between two lists of boxes of the same class: `(i, j, iou)` with iou >= threshold,
    chosen to maximise the total IoU (Hungarian assignment). Boxes of different classes never match."""
    matches: list[tuple[int, int, float]] = []
    by_class: dict[str, tuple[list[int], list[int]]] = {}
    for i, box in enumerate(a_boxes):
        by_class.setdefault(box["label"], ([], []))[0].append(i)
    for j, box in enumerate(b_boxes):
        by_class.setdefault(box["label"], ([], []))[1].append(j)
    for ia, jb in by_class.values():
        if not ia or not jb:
            continue
        m = _iou_matrix([a_boxes[i] for i in ia], [b_boxes[j] for j in jb])
        rows, cols = linear_sum_assignment(-m)
        for r, c in zip(rows, cols, strict=True):
            if m[r, c] >= threshold:
                matches.append((ia[r], jb[c], float(m[r, c])))
    matches.sort()
    return matches


# Consensus


def consensus(kind: str, results: list[dict]) -> dict | None:
    """The result a strict majority of `results` (one per annotator) agrees on; None for a tie (review).

    single_label: the label of a strict majority. multi_label: each class a strict majority has;
    a class held by exactly half is a tie. boxes: boxes of one class matched greedily across
    annotators (IoU >= 0.5) into clusters; a cluster backed by a strict majority becomes a box
    (mean coordinates), one backed by exactly half is a tie, fewer are dropped.
    """
    n = len(results)
    if n == 0:
        return None
    if kind == SINGLE_LABEL:
        label, count = Counter(r["label"] for r in results).most_common(1)[0]
        return {"label": label} if 2 * count > n else None
    if kind == MULTI_LABEL:
        counts = Counter(name for r in results for name in set(r["labels"]))
        if any(2 * c == n for c in counts.values()):
            return None
        return {"labels": sorted(name for name, c in counts.items() if 2 * c > n)}
    if kind == BOXES:
        return _boxes_consensus(results)
    raise ValueError(f"unknown schema kind {kind!r}")


def _boxes_consensus(results: list[dict]) -> dict | None:
    n = len(results)
    # Greedy clustering, annotator by annotator: each box joins the best-overlapping cluster of its class
    # that has no box of this annotator yet (by IoU with the cluster's mean box), else starts one.
    clusters: list[dict[str, Any]] = []  # {"label", "members": [box, ...], "annotators": set}
    for who, result in enumerate(results):
        for box in sorted(result["boxes"], key=lambda b: -b["w"] * b["h"]):
            best, best_iou = None, IOU_THRESHOLD
            for cluster in clusters:
                if cluster["label"] != box["label"] or who in cluster["annotators"]:
                    continue
                score = iou(_mean_box(cluster["members"]), box)
                if score >= best_iou:
                    best, best_iou = cluster, score
            if best is None:
                clusters.append({"label": box["label"], "members": [box], "annotators": {who}})
            else:
                best["members"].append(box)
                best["annotators"].add(who)
    out = []
    for cluster in clusters:
        backers = len(cluster["annotators"])
        if 2 * backers == n:
            return None
        if 2 * backers > n:
            mean = _mean_box(cluster["members"])
            out.append(_rounded_box(cluster["label"], mean["x"], mean["y"], mean["w"], mean["h"]))
    out.sort(key=lambda b: (b["label"], b["x"], b["y"], b["w"], b["h"]))
    return {"boxes": out}


def _mean_box(boxes: list[dict]) -> dict:
    arr = np.array([[b["x"], b["y"], b["w"], b["h"]] for b in boxes], dtype=float).mean(axis=0)
    return {"label": boxes[0]["label"], "x": arr[0], "y": arr[1], "w": arr[2], "h": arr[3]}


# Gold


def matches_gold(kind: str, result: dict, gold: dict) -> bool:
    """Whether an answer matches the known one: the same label, the same set of labels, or every box
    matched one-to-one (same class, IoU >= 0.5) with none left over on either side."""
    if kind == SINGLE_LABEL:
        return result.get("label") == gold.get("label")
    if kind == MULTI_LABEL:
        return set(result.get("labels", [])) == set(gold.get("labels", []))
    a, b = result.get("boxes", []), gold.get("boxes", [])
    return len(a) == len(b) and len(match_boxes(a, b)) == len(b)


def per_class_gold(kind: str, result: dict, gold: dict) -> dict[str, bool]:
    """Per class the gold answer involves (or the answer named): whether the answer got that class right."""
    if kind == SINGLE_LABEL:
        classes = {gold.get("label"), result.get("label")} - {None}
        right = result.get("label") == gold.get("label")
        # The gold class is judged by the whole answer; a wrongly named class is simply wrong.
        return {name: right if name == gold.get("label") else False for name in classes}
    if kind == MULTI_LABEL:
        got, want = set(result.get("labels", [])), set(gold.get("labels", []))
        return {name: (name in got) == (name in want) for name in got | want}
    a, b = result.get("boxes", []), gold.get("boxes", [])
    out: dict[str, bool] = {}
    for name in {box["label"] for box in a} | {box["label"] for box in b}:
        ca = [box for box in a if box["label"] == name]
        cb = [box for box in b if box["label"] == name]
        out[name] = len(ca) == len(cb) and len(match_boxes(ca, cb)) == len(cb)
    return out


def result_classes(kind: str, result: dict) -> set[str]:
    """The class names a result uses."""
    if kind == SINGLE_LABEL:
        return {result["label"]} if result.get("label") else set()
    if kind == MULTI_LABEL:
        return set(result.get("labels", []))
    return {box["label"] for box in result.get("boxes", [])}


def rename_classes(kind: str, result: dict, mapping: dict[str, str | None]) -> dict | None:
    """`result` with classes renamed by `mapping` (a class mapped to None is dropped). A single-label
    result whose class is dropped becomes None (nothing is left of it)."""
    if not isinstance(result, dict):
        return result
    if "label" in result:
        name = mapping.get(result["label"], result["label"])
        return None if name is None else {**result, "label": name}
    if "labels" in result:
        names = {mapping.get(n, n) for n in result["labels"]}
        return {**result, "labels": sorted(n for n in names if n is not None)}
    if "boxes" in result:
        boxes = []
        for box in result["boxes"]:
            name = mapping.get(box["label"], box["label"])
            if name is not None:
                boxes.append({**box, "label": name})
        return {**result, "boxes": boxes}
    return result
