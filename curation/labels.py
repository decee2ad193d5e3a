"""The one writer of project asset labels: every change is applied and logged as a LabelEvent in the
same transaction, so that a label-level diff can say who changed a label and through what."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from crucible.core.models import User
from curation.models import LabelEvent, ProjectAsset


@dataclass(frozen=True)
class LabelChange:
    project_asset_id: int
    label: str = ""
    # The whole result for multi-label and box schemas; None for single-label ones.
    annotation: Any = None


def asset_labels_set(
    *, changes: Iterable[LabelChange], actor: User | None, via: str, ref: int | None = None, batch: int = 2000
) -> int:
    """Set the label (and annotation) of each named project asset; returns how many actually changed.

    Assets whose label and annotation are already the given ones are left alone and logged nothing. The
    rows are locked in id order, batch by batch, inside the caller's transaction (or one of their own).
    """
    if via not in LabelEvent.Via.values:
        raise ValueError(f"unknown label change source {via!r}")
    wanted: dict[int, LabelChange] = {}
    for change in changes:
        wanted[int(change.project_asset_id)] = change
    changed = 0
    ids = sorted(wanted)
    with transaction.atomic():
        for start in range(0, len(ids), batch):
            chunk = ids[start : start + batch]
            rows = list(
                ProjectAsset.objects.select_for_update()
                .filter(pk__in=chunk)
                .order_by("pk")
                .only("pk", "label", "annotation")
            )
            updates: list[ProjectAsset] = []
            events: list[LabelEvent] = []
            for row in rows:
                change = wanted[row.pk]
                if row.label == change.label and row.annotation == change.annotation:
                    continue
                events.append(
                    LabelEvent(
                        project_asset_id=row.pk,
                        old_label=row.label,
                        new_label=change.label,
                        old_annotation=row.annotation,
                        new_annotation=change.annotation,
                        actor=actor,
                        via=via,
                        ref=ref,
                    )
                )
                row.label, row.annotation = change.label, change.annotation
                updates.append(row)
            if updates:
                ProjectAsset.objects.bulk_update(updates, ["label", "annotation"], batch_size=1000)
                LabelEvent.objects.bulk_create(events, batch_size=1000)
                changed += len(updates)
    return changed


def asset_label_set(
    *, project_asset_id: int, label: str, annotation: Any = None, actor: User | None, via: str, ref: int | None = None
) -> bool:
    """One asset's label; True when it changed."""
    change = LabelChange(project_asset_id=project_asset_id, label=label, annotation=annotation)
    return asset_labels_set(changes=[change], actor=actor, via=via, ref=ref) == 1
