"""Cleaning findings: the scan that writes them, the one function that records one, and decisions.

A finding is unique per (project, kind, key), so every writer goes through `findings_upsert`: a
rescan refreshes the evidence of what it found before and leaves decided findings decided. Other
jobs (the cleanlab label-error job, kind `label_error`) write theirs the same way.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from crucible.core.errors import Conflict, NotFound, ValidationFailed
from crucible.core.models import Project, User
from crucible.core.selectors import require_read, require_write
from crucible.core.services import audit
from curation import hashing, imaging
from curation.labels import asset_label_set
from curation.models import Asset, AssetHash, DatasetItem, DatasetVersion, Finding, ImportJob, ProjectAsset
from curation.selectors import AssetUnreadable, assets_read_bytes

logger = logging.getLogger(__name__)

Kind, Decision = Finding.Kind, Finding.Decision
HASH_BATCH = 500  # assets decoded and hashed per database write
ODD_SHARE = 0.5  # a mode or size is "the majority" when at least this share of images has it
ODD_AREA_FACTOR = 4.0  # area this many times above or below the median is odd
ODD_ASPECT_FACTOR = 1.5  # aspect ratio this many times off the median is odd
NEAR_BLANK_STD = 2.0  # grayscale standard deviation under this is nearly blank
IMBALANCE_RATIO = 10.0  # largest class over smallest class above this is an imbalance
MAX_EVIDENCE_MEMBERS = 200
RULES = ("drop_unreadable", "keep_oldest_duplicate", "relabel_conflicts")
GROUP_KINDS = (Kind.EXACT_DUPLICATE, Kind.NEAR_DUPLICATE, Kind.CONFLICTING_LABELS)


def near_duplicate_radius() -> int:
    """Hamming radius of pHashes counted as near duplicates (settings: CRUCIBLE_NEAR_DUPLICATE_RADIUS)."""
    return int(getattr(settings, "CRUCIBLE_NEAR_DUPLICATE_RADIUS", hashing.DEFAULT_RADIUS))


# -- writing findings ---------------------------------------------------------------------------------


def findings_upsert(
    *, project: Project, kind: str, key: str, evidence: dict, project_asset_id: int | None = None
) -> Finding:
    """Record one finding, or refresh the evidence of the same (project, kind, key) found before.

    The decision of an existing finding is kept: a rescan never reopens what someone decided. This is
    the entry point for jobs outside the scan, such as label-error detection (kind `label_error`,
    key the asset's sha256, evidence e.g. {"given": ..., "suggested": ..., "self_confidence": ...}).
    """
    if kind not in Kind.values:
        raise ValidationFailed(f"unknown finding kind {kind!r}", fields={"kind": "invalid"})
    finding, _created = Finding.objects.update_or_create(
        project=project, kind=kind, key=key, defaults={"evidence": evidence, "project_asset_id": project_asset_id}
    )
    return finding


@dataclass
class _Found:
    project_asset_id: int | None
    evidence: dict[str, Any] = field(default_factory=dict)


def _write(project: Project, kind: str, found: dict[str, _Found]) -> int:
    """Replace the open findings of one kind by `found`; decided findings stay. Returns how many open."""
    with transaction.atomic():
        Finding.objects.filter(project=project, kind=kind, decision=Decision.OPEN).exclude(key__in=list(found)).delete()
        existing = dict(Finding.objects.filter(project=project, kind=kind).values_list("key", "pk"))
        new, changed = [], []
        for key, f in found.items():
            if key in existing:
                changed.append(Finding(pk=existing[key], evidence=f.evidence, project_asset_id=f.project_asset_id))
            else:
                new.append(
                    Finding(
                        project=project, kind=kind, key=key, evidence=f.evidence, project_asset_id=f.project_asset_id
                    )
                )
        Finding.objects.bulk_create(new, batch_size=1000)
        Finding.objects.bulk_update(changed, ["evidence", "project_asset_id"], batch_size=1000)
    return Finding.objects.filter(project=project, kind=kind, decision=Decision.OPEN).count()


# -- hashes -------------------------------------------------------------------------------------------


def asset_hashes_ensure(*, asset_ids: Iterable[int]) -> int:
    """Decode and hash the given image assets that have no AssetHash yet; returns how many were added.

    An asset that cannot be read or decoded gets a row with its reason instead of a hash, so it is
    reported as unreadable and not decoded again.
    """
    wanted = sorted(set(asset_ids))
    added = 0
    max_pixels = settings.CRUCIBLE_MAX_IMAGE_PIXELS
    for start in range(0, len(wanted), HASH_BATCH):
        chunk = wanted[start : start + HASH_BATCH]
        have = set(AssetHash.objects.filter(asset_id__in=chunk).values_list("asset_id", flat=True))
        chunk = [pk for pk in chunk if pk not in have]
        if not chunk:
            continue
        assets = {
            a.pk: a
            for a in Asset.objects.filter(pk__in=chunk, kind=Asset.Kind.IMAGE).only(
                "pk", "storage_name", "offset", "length"
            )
        }
        rows: list[AssetHash] = []
        pending = dict(assets)
        while pending:  # one unreadable asset stops the reader: record it and read on
            try:
                for asset_id, data in assets_read_bytes(
                    (a.pk, a.storage_name, a.offset, a.length) for a in pending.values()
                ):
                    rows.append(_hash_row(asset_id, data, max_pixels))
                    del pending[asset_id]
            except AssetUnreadable as exc:
                rows.append(AssetHash(asset_id=exc.key, error=f"stored bytes unreadable: {exc.reason}"[:300]))
                pending.pop(exc.key, None)  # type: ignore[call-overload]
        AssetHash.objects.bulk_create(rows, ignore_conflicts=True)
        added += len(rows)
    return added


def _hash_row(asset_id: int, data: bytes, max_pixels: int) -> AssetHash:
    try:
        image = imaging.decode(data, max_pixels=max_pixels).image
    except imaging.ImageError as exc:
        return AssetHash(asset_id=asset_id, error=exc.reason[:300])
    value = hashing.phash(image)
    b = hashing.bands(value)
    return AssetHash(
        asset_id=asset_id,
        phash=hashing.to_signed(value),
        band0=b[0],
        band1=b[1],
        band2=b[2],
        band3=b[3],
        pixel_sha256=hashing.pixel_digest(image),
        pixel_std=hashing.pixel_std(image),
    )


# -- the scan -----------------------------------------------------------------------------------------


@dataclass
class _Row:
    pa_id: int
    asset_id: int
    sha: str
    label: str
    width: int
    height: int
    mode: str
    created: Any
    phash: int | None
    pixel_sha: str
    std: float | None
    error: str


def _rows(project: Project) -> list[_Row]:
    qs = (
        ProjectAsset.objects.filter(project=project, excluded=False, asset__kind=Asset.Kind.IMAGE)
        .order_by("created_at", "pk")
        .values_list(
            "pk",
            "asset_id",
            "asset__sha256",
            "label",
            "asset__width",
            "asset__height",
            "asset__mode",
            "created_at",
            "asset__phash__phash",
            "asset__phash__pixel_sha256",
            "asset__phash__pixel_std",
            "asset__phash__error",
        )
    )
    return [_Row(*r[:8], r[8], r[9] or "", r[10], r[11] or "") for r in qs]


def findings_scan(*, project: Project, user: User | None = None) -> dict[str, int]:
    """Hash the project's images that have no hash yet and write every kind of finding the scan knows.

    Returns the number of open findings per kind. Idempotent: a rescan updates what it found before,
    removes open findings that no longer hold, and leaves decided ones alone.
    """
    if user is not None:
        require_write(user=user, project=project)
    unhashed = ProjectAsset.objects.filter(project=project, asset__kind=Asset.Kind.IMAGE, asset__phash__isnull=True)
    asset_hashes_ensure(asset_ids=list(unhashed.values_list("asset_id", flat=True)))
    rows = _rows(project)
    radius = near_duplicate_radius()
    result: dict[str, int] = {}
    result[Kind.UNREADABLE] = _write(project, Kind.UNREADABLE, _unreadable(project, rows))
    for kind, found in _odd(rows).items():
        result[kind] = _write(project, kind, found)
    result[Kind.NEAR_BLANK] = _write(
        project,
        Kind.NEAR_BLANK,
        {
            r.sha: _Found(r.pa_id, {"pixel_std": round(r.std, 3), "threshold": NEAR_BLANK_STD, "label": r.label})
            for r in rows
            if r.std is not None and r.std < NEAR_BLANK_STD
        },
    )
    exact, near, conflicts = _duplicates(rows, radius)
    result[Kind.EXACT_DUPLICATE] = _write(project, Kind.EXACT_DUPLICATE, exact)
    result[Kind.NEAR_DUPLICATE] = _write(project, Kind.NEAR_DUPLICATE, near)
    result[Kind.CONFLICTING_LABELS] = _write(project, Kind.CONFLICTING_LABELS, conflicts)
    result[Kind.CLASS_IMBALANCE] = _write(project, Kind.CLASS_IMBALANCE, _imbalance(rows))
    result[Kind.SPLIT_LEAK] = _write(project, Kind.SPLIT_LEAK, _split_leaks(project, radius))
    if user is not None:
        audit(actor=user, project=project, verb="findings.scan", target=project.name, open=result)
    return result


def _unreadable(project: Project, rows: list[_Row]) -> dict[str, _Found]:
    found = {r.sha: _Found(r.pa_id, {"reason": r.error, "label": r.label}) for r in rows if r.error}
    # Files an import could not decode never became assets: their import's error list names them.
    for job_id, errors in ImportJob.objects.filter(project=project).values_list("pk", "errors"):
        for error in errors or []:
            reason = str(error.get("reason", ""))
            if imaging_failure(reason):
                found[f"import:{job_id}:{error.get('path', '')}"[:200]] = _Found(
                    None, {"import_job": job_id, "path": error.get("path", ""), "reason": reason}
                )
    return found


def imaging_failure(reason: str) -> bool:
    """Whether an import error says the file's bytes could not be decoded (not a layout problem)."""
    text = reason.lower()
    return any(
        w in text for w in ("truncated", "damaged", "not an image", "empty file", "exceeds the limit", "no pixels")
    )


def _majority(values: list) -> tuple[Any, float]:
    value, count = Counter(values).most_common(1)[0]
    return value, count / len(values)


def _odd(rows: list[_Row]) -> dict[str, dict[str, _Found]]:
    out: dict[str, dict[str, _Found]] = {Kind.ODD_MODE: {}, Kind.ODD_SIZE: {}, Kind.ODD_ASPECT: {}}
    readable = [r for r in rows if not r.error and r.width and r.height]
    if len(readable) < 3:
        return out
    mode, share = _majority([r.mode for r in readable])
    areas = np.array([r.width * r.height for r in readable], dtype=np.float64)
    aspects = np.array([r.width / r.height for r in readable], dtype=np.float64)
    median_area, median_aspect = float(np.median(areas)), float(np.median(aspects))
    for r, area, aspect in zip(readable, areas, aspects, strict=True):
        size = f"{r.width}x{r.height}"
        if share >= ODD_SHARE and r.mode != mode:
            out[Kind.ODD_MODE][r.sha] = _Found(
                r.pa_id, {"mode": r.mode, "majority_mode": mode, "share": round(share, 3)}
            )
        if area > median_area * ODD_AREA_FACTOR or area * ODD_AREA_FACTOR < median_area:
            out[Kind.ODD_SIZE][r.sha] = _Found(
                r.pa_id, {"size": size, "median_pixels": median_area, "factor": ODD_AREA_FACTOR}
            )
        if aspect > median_aspect * ODD_ASPECT_FACTOR or aspect * ODD_ASPECT_FACTOR < median_aspect:
            out[Kind.ODD_ASPECT][r.sha] = _Found(
                r.pa_id, {"size": size, "aspect": round(aspect, 3), "median_aspect": round(median_aspect, 3)}
            )
    return out


def _group_finding(members: list[_Row], extra: dict) -> _Found:
    """A finding for a group of assets: the oldest is the main one; evidence lists all of them."""
    members = sorted(members, key=lambda r: (r.created, r.pa_id))
    listed = members[:MAX_EVIDENCE_MEMBERS]
    return _Found(
        members[0].pa_id,
        {
            **extra,
            "size": len(members),
            "members": [r.pa_id for r in listed],
            "assets": [
                {"id": r.pa_id, "sha256": r.sha, "label": r.label, "size": f"{r.width}x{r.height}"} for r in listed
            ],
            "labels": sorted({r.label for r in members}),
        },
    )


def _duplicates(rows: list[_Row], radius: int) -> tuple[dict[str, _Found], dict[str, _Found], dict[str, _Found]]:
    """Exact duplicates (same decoded pixels), near-duplicate groups (pHash within radius) and groups of
    either kind whose members carry different labels."""
    exact: dict[str, _Found] = {}
    near: dict[str, _Found] = {}
    conflicts: dict[str, _Found] = {}
    by_pixels: dict[str, list[_Row]] = defaultdict(list)
    for r in rows:
        if r.pixel_sha:
            by_pixels[r.pixel_sha].append(r)
    exact_groups = [g for g in by_pixels.values() if len(g) > 1]
    for g in exact_groups:
        key = min(r.sha for r in g)
        exact[key] = _group_finding(g, {"reason": "same decoded pixels", "pixel_sha256": g[0].pixel_sha})
    hashed = [r for r in rows if r.phash is not None]
    near_groups: list[list[_Row]] = []
    if len(hashed) > 1:
        pairs = hashing.near_pairs(np.array([r.phash for r in hashed], dtype=np.int64), radius)
        if len(pairs):
            labels = hashing.groups(len(hashed), pairs)
            dist: dict[int, int] = {}
            for i, _j, d in pairs:
                dist[int(labels[i])] = max(dist.get(int(labels[i]), 0), int(d))
            members: dict[int, list[_Row]] = defaultdict(list)
            for i in np.unique(pairs[:, :2]):
                members[int(labels[i])].append(hashed[int(i)])
            for g_label, g in members.items():
                near_groups.append(g)
                key = min(r.sha for r in g)
                near[key] = _group_finding(
                    g, {"reason": "perceptual hashes close", "radius": radius, "max_distance": dist[g_label]}
                )
    for g in exact_groups:
        if len({r.label for r in g}) > 1:
            conflicts[f"exact:{min(r.sha for r in g)}"] = _group_finding(g, {"reason": "same decoded pixels"})
    for g in near_groups:
        if len({r.label for r in g}) > 1:
            conflicts[f"near:{min(r.sha for r in g)}"] = _group_finding(
                g, {"reason": "perceptual hashes close", "radius": radius}
            )
    return exact, near, conflicts


def _imbalance(rows: list[_Row]) -> dict[str, _Found]:
    counts = Counter(r.label for r in rows if r.label)
    if len(counts) < 2:
        return {}
    (big, n_big), (small, n_small) = counts.most_common()[0], counts.most_common()[-1]
    ratio = n_big / n_small
    if ratio <= IMBALANCE_RATIO:
        return {}
    return {
        "classes": _Found(
            None,
            {
                "largest": {"label": big, "count": n_big},
                "smallest": {"label": small, "count": n_small},
                "ratio": round(ratio, 2),
                "threshold": IMBALANCE_RATIO,
                "counts": dict(sorted(counts.items())),
            },
        )
    }


def _split_leaks(project: Project, radius: int) -> dict[str, _Found]:
    """Per dataset version: near duplicates with one side in train and the other in val or test."""
    found: dict[str, _Found] = {}
    for version in DatasetVersion.objects.filter(project=project).order_by("pk"):
        leaks = version_train_leaks(version=version, radius=radius, against=("val", "test"))
        if leaks:
            found[f"version:{version.pk}"] = _Found(
                None,
                {
                    "version": version.pk,
                    "version_name": version.name,
                    "radius": radius,
                    "count": len(leaks),
                    "pairs": leaks[:MAX_EVIDENCE_MEMBERS],
                },
            )
    return found


def version_train_leaks(
    *,
    version: DatasetVersion,
    radius: int,
    against: tuple[str, ...] = ("val", "test"),
    queries: list[tuple] | None = None,
) -> list[dict]:
    """Train items of `version` within `radius` of a held-out hash: of its `against` splits' items,
    or of `queries` ((sha256, phash signed) pairs) when given. One row per pair, by distance."""
    train = list(
        DatasetItem.objects.filter(version=version, split="train", asset__phash__phash__isnull=False).values_list(
            "asset__sha256", "asset__phash__phash"
        )
    )
    if queries is None:
        queries = list(
            DatasetItem.objects.filter(
                version=version, split__in=against, asset__phash__phash__isnull=False
            ).values_list("asset__sha256", "asset__phash__phash")
        )
    if not train or not queries:
        return []
    pairs = hashing.cross_pairs(
        np.array([q[1] for q in queries], dtype=np.int64), np.array([t[1] for t in train], dtype=np.int64), radius
    )
    out = [
        {"held_out": queries[int(q)][0], "train": train[int(t)][0], "distance": int(d)}
        for q, t, d in pairs
        if queries[int(q)][0] != train[int(t)][0]
    ]
    return sorted(out, key=lambda p: (p["distance"], p["held_out"], p["train"]))


# -- reading ------------------------------------------------------------------------------------------


def finding_list(
    *,
    user: User,
    project: Project,
    kind: str | None = None,
    decision: str | None = None,
    after: int | None = None,
    limit: int = 100,
) -> tuple[list[Finding], int | None]:
    """A page of findings, by id; the id to pass as `after` for the next page (None at the end)."""
    require_read(user=user, project=project)
    if kind and kind not in Kind.values:
        raise ValidationFailed(
            f"unknown finding kind {kind!r}; one of {', '.join(Kind.values)}", fields={"kind": "invalid"}
        )
    if decision and decision not in Decision.values:
        raise ValidationFailed(
            f"unknown decision {decision!r}; one of {', '.join(Decision.values)}", fields={"decision": "invalid"}
        )
    qs: QuerySet[Finding] = Finding.objects.filter(project=project).select_related("project_asset__asset", "decided_by")
    if kind:
        qs = qs.filter(kind=kind)
    if decision:
        qs = qs.filter(decision=decision)
    if after:
        qs = qs.filter(pk__gt=after)
    page = list(qs.order_by("pk")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return page, (page[-1].pk if more else None)


def finding_get(*, user: User, finding_id: int) -> Finding:
    finding = (
        Finding.objects.select_related("project", "project_asset__asset", "decided_by").filter(pk=finding_id).first()
    )
    if finding is None:
        raise NotFound(f"finding {finding_id} not found")
    require_read(user=user, project=finding.project)
    return finding


# -- decisions ----------------------------------------------------------------------------------------


def _involved(finding: Finding) -> list[int]:
    ids = [int(i) for i in (finding.evidence or {}).get("members") or []]
    if finding.project_asset_id and finding.project_asset_id not in ids:
        ids.insert(0, finding.project_asset_id)
    return ids


def _apply(finding: Finding, decision: str, user: User, label: str | None) -> None:
    """The effect of a decision on the project's assets, inside the caller's transaction."""
    involved = _involved(finding)
    if decision == Decision.DROP:
        ProjectAsset.objects.filter(project=finding.project_id, pk__in=involved).update(excluded=True)
    elif decision == Decision.MERGE:
        if finding.kind not in GROUP_KINDS or finding.project_asset_id is None:
            raise ValidationFailed(
                "merge applies to duplicate and conflicting-label groups",
                code="not_a_group",
                fields={"decision": "invalid"},
            )
        others = [pk for pk in involved if pk != finding.project_asset_id]
        ProjectAsset.objects.filter(project=finding.project_id, pk__in=others).update(excluded=True)
    elif decision == Decision.RELABEL:
        if not involved:
            raise ValidationFailed("this finding names no asset to relabel", code="nothing_to_relabel")
        if label is not None:
            for pk in involved:
                asset_label_set(project_asset_id=pk, label=label, actor=user, via="finding", ref=finding.pk)
        else:
            from labeling.services import queue_items_relabel

            queue_items_relabel(
                project=finding.project,
                user=user,
                project_asset_ids=involved,
                reason=f"finding {finding.pk} ({finding.kind})" + (f": {finding.note}" if finding.note else ""),
            )


def finding_decide(
    *, finding: Finding, decision: str, user: User, note: str = "", label: str | None = None, rule: str = ""
) -> Finding:
    """Decide an open finding and apply the decision.

    keep: nothing changes. drop: every asset involved is excluded from new dataset versions. merge (a
    duplicate or conflict group): the main (oldest) asset is kept and the others are excluded.
    relabel: with `label`, the assets get that label (logged as via "finding", ref the finding id);
    without, they are sent to the relabel queue with the finding as the reason.
    A decided finding is not decided again (409 already_decided).
    """
    require_write(user=user, project=finding.project)
    if decision not in Decision.values or decision == Decision.OPEN:
        raise ValidationFailed(
            f"decision must be one of keep, drop, relabel, merge; not {decision!r}", fields={"decision": "invalid"}
        )
    if label is not None and decision != Decision.RELABEL:
        raise ValidationFailed("a label goes with the relabel decision only", fields={"label": "relabel only"})
    with transaction.atomic():
        locked = Finding.objects.select_for_update().select_related("project").get(pk=finding.pk)
        if locked.decision != Decision.OPEN:
            raise Conflict(f"finding {locked.pk} was already decided ({locked.decision})", code="already_decided")
        locked.note = note or ""
        _apply(locked, decision, user, label)
        locked.decision = decision
        locked.decided_by = user
        locked.decided_at = timezone.now()
        locked.rule = rule
        locked.save(update_fields=["decision", "decided_by", "decided_at", "rule", "note", "updated_at"])
        audit(
            actor=user,
            project=locked.project,
            verb="finding.decide",
            target=str(locked.pk),
            decision=decision,
            rule=rule,
        )
    return locked


def findings_decide_by_rule(*, project: Project, rule: str, user: User) -> int:
    """Decide every open finding a rule covers; returns how many were decided.

    drop_unreadable: unreadable assets are dropped. keep_oldest_duplicate: in each exact or near
    duplicate group the oldest is kept and the rest dropped (decision merge). relabel_conflicts: the
    assets of each conflicting-label group go to the relabel queue. All or nothing: one transaction.
    """
    require_write(user=user, project=project)
    plan = {
        "drop_unreadable": ([Kind.UNREADABLE], Decision.DROP),
        "keep_oldest_duplicate": ([Kind.EXACT_DUPLICATE, Kind.NEAR_DUPLICATE], Decision.MERGE),
        "relabel_conflicts": ([Kind.CONFLICTING_LABELS], Decision.RELABEL),
    }
    if rule not in plan:
        raise ValidationFailed(
            f"unknown rule {rule!r}; one of {', '.join(RULES)}", code="unknown_rule", fields={"rule": "invalid"}
        )
    kinds, decision = plan[rule]
    decided = 0
    with transaction.atomic():
        for finding in Finding.objects.filter(project=project, kind__in=kinds, decision=Decision.OPEN).order_by("pk"):
            finding_decide(finding=finding, decision=decision, user=user, rule=rule)
            decided += 1
    return decided


def findings_scan_start(*, project: Project, user: User) -> None:
    """Queue a scan of the project (task `curation.findings_scan`, ingest queue) after the commit."""
    require_write(user=user, project=project)
    from curation.tasks import findings_scan as findings_scan_task

    audit(actor=user, project=project, verb="findings.scan_queued", target=project.name)
    transaction.on_commit(lambda: findings_scan_task.delay(project_id=project.pk))


def label_error_verdict_record(*, project_asset_id: int, label: str, item_id: int) -> int:
    """The annotators' answer for an asset sent back for relabelling, onto its label-error findings:
    "confirmed" when they gave the label the finding questioned, "fixed" when they gave another (now
    the asset's label). An open finding is decided by it (keep or relabel, rule "annotators", ref the
    queue item in its note). Returns how many findings were updated."""
    updated = 0
    now = timezone.now()
    for finding in (
        Finding.objects.select_for_update()
        .filter(project_asset_id=project_asset_id, kind=Kind.LABEL_ERROR)
        .order_by("pk")
    ):
        given = finding.evidence.get("given") if isinstance(finding.evidence, dict) else None
        finding.verdict = "confirmed" if label == given else "fixed"
        finding.verdict_label = label
        finding.verdict_at = now
        fields = ["verdict", "verdict_label", "verdict_at", "updated_at"]
        if finding.decision == Decision.OPEN:
            finding.decision = Decision.KEEP if finding.verdict == "confirmed" else Decision.RELABEL
            finding.decided_at = now
            finding.rule = "annotators"
            finding.note = f"relabel queue item {item_id}"
            fields += ["decision", "decided_at", "rule", "note"]
        finding.save(update_fields=fields)
        updated += 1
    return updated
