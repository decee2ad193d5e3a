"""Inter-annotator agreement of a project: how often annotators who labelled the same item agree.

What is compared: ordinary (non-gold) items with at least two counted annotations. An annotation counts
when its status is submitted, accepted or fixed (its annotator's own answer, not a reviewer's fix); of
each annotator's answers on an item only the latest revision counts.

Figures, by schema kind:
- single_label: percent agreement (pairs of annotators agreeing on an item / pairs compared), Cohen's
  kappa per pair of annotators (over the items both labelled) and Fleiss' kappa for the project.
- multi_label: every class is a yes/no question asked of each item. Each figure is computed per class
  and then averaged over the classes with equal weight (a macro average). The classes are those that
  at least one annotator chose on a compared item (a class nobody ever chose would add agreement that
  says nothing). A kappa that is undefined for a class (every answer the same, so chance agreement is
  1) is left out of that class average; the average is None when no class has one.
- boxes: per pair of annotators and item, boxes are matched one to one (the assignment maximising the
  total IoU, scipy's linear_sum_assignment on 1 - IoU, between boxes of the same class, a match needing
  IoU >= 0.5). A pair agrees on an item when every box of both is matched (two empty answers agree).
  `mean_iou` is the mean IoU of the matched boxes and `f1` is 2 * matched / (boxes of a + boxes of b),
  summed over items; both per pair and over all pairs. Kappas are not defined for boxes (None).

Fleiss' kappa needs the same number of raters on every item: it is computed over the items having the
most common number of raters (on a tie, the larger number, which keeps more annotations), and
`fleiss_items` says how many items that is. Items with other counts still count in the percent and the
pair figures.

The computing functions take plain values and have no Django dependency; `project_agreement` reads a
project's annotations in one streamed query ordered by item, so the number of queries does not grow
with the number of items or annotators.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

from crucible.core.models import Project, User
from crucible.core.selectors import require_read
from labeling.models import Annotation, LabelSchema, SchemaKind

IOU_THRESHOLD = 0.5
COUNTED_STATUSES = ("submitted", "accepted", "fixed")

# One item: {annotator id: result}, results of the schema's kind.
Item = Mapping[int, Mapping[str, Any]]


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def cohen_kappa(a: list[Any], b: list[Any]) -> float | None:
    """Cohen's kappa of two raters' answers on the same items; None when undefined (chance agreement
    is 1, e.g. both gave one and the same answer everywhere) or with no items."""
    if not a:
        return None
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        return _finite(cohen_kappa_score(a, b))


def fleiss(rows: list[list[Any]]) -> float | None:
    """Fleiss' kappa of items rated by the same number of raters: one row per item, its answers.
    None when undefined (fewer than two raters or items, or one category only)."""
    if len(rows) < 2 or len(rows[0]) < 2:
        return None
    codes: dict[Any, int] = {}
    data = np.array([[codes.setdefault(v, len(codes)) for v in row] for row in rows])
    table, _categories = aggregate_raters(data)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")
        return _finite(fleiss_kappa(table, method="fleiss"))


def fleiss_rows(items: list[Item], value=lambda result: result) -> tuple[list[list[Any]], int]:
    """The answers of the items having the most common number of raters (ties: the larger number)."""
    sizes = Counter(len(item) for item in items)
    if not sizes:
        return [], 0
    size = max(sizes, key=lambda n: (sizes[n], n))
    rows = [[value(r) for r in item.values()] for item in items if len(item) == size]
    return rows, len(rows)


# -- boxes --------------------------------------------------------------------------------------------


def iou_matrix(a: list[Mapping[str, Any]], b: list[Mapping[str, Any]]) -> np.ndarray:
    """IoU of every box of `a` with every box of `b` (boxes {"x", "y", "w", "h"}, top-left origin)."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    ax = np.array([[q["x"], q["y"], q["x"] + q["w"], q["y"] + q["h"]] for q in a], dtype=float)
    bx = np.array([[q["x"], q["y"], q["x"] + q["w"], q["y"] + q["h"]] for q in b], dtype=float)
    left = np.maximum(ax[:, None, 0], bx[None, :, 0])
    top = np.maximum(ax[:, None, 1], bx[None, :, 1])
    right = np.minimum(ax[:, None, 2], bx[None, :, 2])
    bottom = np.minimum(ax[:, None, 3], bx[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area_a = (ax[:, 2] - ax[:, 0]) * (ax[:, 3] - ax[:, 1])
    area_b = (bx[:, 2] - bx[:, 0]) * (bx[:, 3] - bx[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_boxes_optimal(
    a: list[Mapping[str, Any]], b: list[Mapping[str, Any]], threshold: float = IOU_THRESHOLD
) -> list[tuple[int, int, float]]:
    """One-to-one matches (i, j, iou) between boxes of the same class with IoU >= threshold, chosen to
    maximise the total IoU (Hungarian assignment on 1 - IoU)."""
    if not a or not b:
        return []
    ious = iou_matrix(a, b)
    same = np.array([[qa["label"] == qb["label"] for qb in b] for qa in a])
    usable = same & (ious >= threshold)
    # Pairs that may not match cost more than any usable pair, so they are chosen only when nothing else
    # is left, and are then dropped below.
    cost = np.where(usable, 1.0 - ious, 2.0)
    rows, cols = linear_sum_assignment(cost)
    return [(int(i), int(j), float(ious[i, j])) for i, j in zip(rows, cols, strict=True) if usable[i, j]]


# -- the figures --------------------------------------------------------------------------------------


@dataclass
class _Pair:
    items: int = 0
    agree: int = 0
    a: list[Any] = field(default_factory=list)  # single: labels; multi: label sets
    b: list[Any] = field(default_factory=list)
    matched: int = 0  # boxes
    boxes: int = 0
    iou_sum: float = 0.0


def _labels(result: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(result.get("labels") or [])


def _boxes(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(result.get("boxes") or [])


def agreement(kind: str, items: Iterable[Item], names: Mapping[int, str] | None = None) -> dict[str, Any]:
    """The agreement figures (see the module docstring) of `items`, each {annotator id: result}; items
    with fewer than two annotators are left out. `names` gives the annotators' names for the pairs."""
    names = names or {}
    compared = [item for item in items if len(item) >= 2]
    pairs: dict[tuple[int, int], _Pair] = {}
    annotators: set[int] = set()
    for item in compared:
        annotators.update(item)
        for a, b in combinations(sorted(item), 2):
            pair = pairs.setdefault((a, b), _Pair())
            pair.items += 1
            ra, rb = item[a], item[b]
            if kind == "boxes":
                ba, bb = _boxes(ra), _boxes(rb)
                matches = match_boxes_optimal(ba, bb)
                pair.matched += len(matches)
                pair.boxes += len(ba) + len(bb)
                pair.iou_sum += sum(m[2] for m in matches)
                pair.agree += len(matches) == len(ba) == len(bb)
            elif kind == "multi_label":
                la, lb = _labels(ra), _labels(rb)
                pair.a.append(la)
                pair.b.append(lb)
            else:
                la, lb = ra.get("label"), rb.get("label")
                pair.a.append(la)
                pair.b.append(lb)
                pair.agree += la == lb

    classes: list[str] = []
    if kind == "multi_label":
        classes = sorted({c for item in compared for r in item.values() for c in _labels(r)})

    rows = []
    for (a, b), pair in sorted(pairs.items()):
        row: dict[str, Any] = {
            "a": a,
            "a_name": names.get(a, str(a)),
            "b": b,
            "b_name": names.get(b, str(b)),
            "items": pair.items,
            "percent": None,
            "cohen_kappa": None,
            "mean_iou": None,
            "f1": None,
        }
        if kind == "boxes":
            row["percent"] = pair.agree / pair.items
            row["mean_iou"] = pair.iou_sum / pair.matched if pair.matched else None
            row["f1"] = 2 * pair.matched / pair.boxes if pair.boxes else None
        elif kind == "multi_label":
            per_class = [[c in s for s in pair.a] for c in classes], [[c in s for s in pair.b] for c in classes]
            row["percent"] = (
                _mean(
                    sum(x == y for x, y in zip(xa, xb, strict=True)) / pair.items
                    for xa, xb in zip(*per_class, strict=True)
                )
                if classes
                else 1.0  # nobody chose any class: every pair agrees
            )
            row["cohen_kappa"] = _mean(cohen_kappa(xa, xb) for xa, xb in zip(*per_class, strict=True))
        else:
            row["percent"] = pair.agree / pair.items
            row["cohen_kappa"] = cohen_kappa(pair.a, pair.b)
        rows.append(row)

    out: dict[str, Any] = {
        "kind": kind,
        "items": len(compared),
        "annotators": len(annotators),
        "percent": None,
        "fleiss_kappa": None,
        "fleiss_items": 0,
        "pairs": rows,
        "boxes": None,
    }
    total = sum(p.items for p in pairs.values())
    if not total:
        return out
    if kind == "boxes":
        matched = sum(p.matched for p in pairs.values())
        boxes = sum(p.boxes for p in pairs.values())
        out["percent"] = sum(p.agree for p in pairs.values()) / total
        out["boxes"] = {
            "mean_iou": sum(p.iou_sum for p in pairs.values()) / matched if matched else None,
            "f1": 2 * matched / boxes if boxes else None,
        }
    elif kind == "multi_label":
        # Weighted by the pairs each pair of annotators compared, per class, then averaged over classes.
        out["percent"] = sum(r["percent"] * r["items"] for r in rows) / total
        fleiss_input, out["fleiss_items"] = fleiss_rows(compared, _labels)
        out["fleiss_kappa"] = _mean(fleiss([[c in s for s in row] for row in fleiss_input]) for c in classes)
    else:
        out["percent"] = sum(p.agree for p in pairs.values()) / total
        fleiss_input, out["fleiss_items"] = fleiss_rows(compared, lambda r: r.get("label"))
        out["fleiss_kappa"] = fleiss(fleiss_input)
    return out


def items_from_rows(rows: Iterable[tuple[int, int, Mapping[str, Any]]]) -> Iterator[dict[int, Mapping[str, Any]]]:
    """Group (item id, annotator id, result) rows ordered by item then annotation id into items
    {annotator id: result}; an annotator's later row on an item replaces the earlier one (revisions)."""
    current: int | None = None
    item: dict[int, Mapping[str, Any]] = {}
    for item_id, annotator_id, result in rows:
        if item_id != current:
            if item:
                yield item
            current, item = item_id, {}
        item[annotator_id] = result
    if item:
        yield item


STREAM_CHUNK = 2000


def project_agreement(*, project: Project, user: User) -> dict[str, Any]:
    """The project's agreement figures (engineers, reviewers, admins; annotators get Forbidden).

    Three queries past the access check, whatever the project's size: the schema's kind, the counted
    annotations streamed in chunks ordered by item, and the names of the annotators met.
    """
    require_read(user=user, project=project)
    kind = LabelSchema.objects.filter(project=project).values_list("kind", flat=True).first() or SchemaKind.SINGLE_LABEL
    rows = (
        Annotation.objects.filter(
            item__project=project, item__is_gold=False, is_gold=False, status__in=COUNTED_STATUSES
        )
        .order_by("item_id", "pk")
        .values_list("item_id", "annotator_id", "result")
        .iterator(chunk_size=STREAM_CHUNK)
    )
    items = [item for item in items_from_rows(rows) if len(item) >= 2]
    ids = {a for item in items for a in item}
    names = dict(User.objects.filter(pk__in=ids).values_list("pk", "username")) if ids else {}
    return agreement(kind, items, names)
