"""The cleaning scan, its findings and the decisions taken on them."""

import io

import numpy as np
import pytest
from PIL import Image

from crucible.core.errors import Conflict, ValidationFailed
from curation import findings, services
from curation.models import AssetHash, DatasetItem, Finding, LabelEvent, ProjectAsset
from curation.tasks import findings_scan as findings_scan_task
from curation.tasks import import_run

SPEC = {"channels": 1, "width": 28, "height": 28, "resize_mode": "squash"}


def pattern(seed: int, size: tuple[int, int] = (64, 64), brighter: int = 0) -> Image.Image:
    """A distinct picture (a random 6x6 grid of grey levels blown up); `brighter` makes a near copy."""
    grid = np.random.default_rng(seed).integers(0, 256, (6, 6)).astype(np.uint8)
    image = np.asarray(Image.fromarray(grid).resize(size, Image.BILINEAR), dtype=np.int16) + brighter
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def write(root, files: dict[str, bytes]):
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


@pytest.fixture
def dirty(project, admin_user, isolated_files, django_capture_on_commit_callbacks):
    """Classes a (12 + extras), b (12 + extras) and c (1): with a near copy, a same-pixels copy under
    another class, a blank image, an RGB image, a huge image, a wide image and a truncated file."""
    files = {f"a/{i}.png": encoded(pattern(i)) for i in range(12)}
    files |= {f"b/{i}.png": encoded(pattern(100 + i)) for i in range(12)}
    files |= {
        "c/0.png": encoded(pattern(300)),
        "a/near.png": encoded(pattern(0, brighter=8)),  # near copy of a/0
        "b/same.bmp": encoded(pattern(1), "BMP"),  # the pixels of a/1, another file, another class
        "a/blank.png": encoded(Image.new("L", (64, 64), 128)),
        "a/colour.png": encoded(pattern(50).convert("RGB")),
        "b/huge.png": encoded(pattern(60, size=(300, 300))),
        "b/wide.png": encoded(pattern(70, size=(128, 32))),
        "a/broken.png": encoded(pattern(80))[:200],
    }
    folder = write(isolated_files / "dirty", files)
    with django_capture_on_commit_callbacks():
        job = services.import_start(project=project, user=admin_user, path=str(folder))
    import_run.apply(kwargs={"job_id": job.pk})
    return project


def by_path(project, path: str) -> ProjectAsset:
    return ProjectAsset.objects.get(project=project, source_path__endswith=path)


def keyed(project, kind: str) -> list[Finding]:
    return list(Finding.objects.filter(project=project, kind=kind).order_by("pk"))


def test_scan_finds_each_kind_with_its_evidence(dirty, admin_user):
    counts = findings.findings_scan(project=dirty, user=admin_user)
    assert counts["unreadable"] == 1
    (broken,) = keyed(dirty, "unreadable")
    assert broken.project_asset is None and broken.evidence["path"].endswith("a/broken.png")
    assert "truncated" in broken.evidence["reason"] or "damaged" in broken.evidence["reason"]

    (blank,) = keyed(dirty, "near_blank")
    assert blank.project_asset == by_path(dirty, "a/blank.png") and blank.evidence["pixel_std"] == 0
    assert [f.project_asset for f in keyed(dirty, "odd_mode")] == [by_path(dirty, "a/colour.png")]
    assert keyed(dirty, "odd_mode")[0].evidence == {
        "mode": "RGB",
        "majority_mode": "L",
        "share": pytest.approx(0.97, abs=0.03),
    }
    assert [f.project_asset for f in keyed(dirty, "odd_size")] == [by_path(dirty, "b/huge.png")]
    assert [f.project_asset for f in keyed(dirty, "odd_aspect")] == [by_path(dirty, "b/wide.png")]

    near = [f for f in keyed(dirty, "near_duplicate") if by_path(dirty, "a/near.png").pk in f.evidence["members"]]
    assert len(near) == 1
    assert set(near[0].evidence["members"]) == {by_path(dirty, "a/0.png").pk, by_path(dirty, "a/near.png").pk}
    assert near[0].evidence["max_distance"] <= 4 and near[0].evidence["labels"] == ["a"]

    (exact,) = keyed(dirty, "exact_duplicate")
    assert set(exact.evidence["members"]) == {by_path(dirty, "a/1.png").pk, by_path(dirty, "b/same.bmp").pk}
    assert exact.project_asset == by_path(dirty, "a/1.png")  # the oldest
    conflicts = keyed(dirty, "conflicting_labels")
    assert conflicts and all(f.evidence["labels"] == ["a", "b"] for f in conflicts)
    assert {by_path(dirty, "b/same.bmp").pk} <= set(conflicts[0].evidence["members"])

    (imbalance,) = keyed(dirty, "class_imbalance")
    assert imbalance.evidence["smallest"] == {"label": "c", "count": 1} and imbalance.evidence["ratio"] > 10
    assert AssetHash.objects.filter(phash__isnull=False).count() == ProjectAsset.objects.filter(project=dirty).count()


def test_rescan_changes_nothing_and_keeps_decisions(dirty, admin_user):
    findings.findings_scan(project=dirty, user=admin_user)
    before = dict(Finding.objects.values_list("pk", "key"))
    blank = keyed(dirty, "near_blank")[0]
    findings.finding_decide(finding=blank, decision="keep", user=admin_user, note="a real grey card")
    findings_scan_task.apply(kwargs={"project_id": dirty.pk})
    assert dict(Finding.objects.values_list("pk", "key")) == before
    blank.refresh_from_db()
    assert blank.decision == "keep" and blank.note == "a real grey card" and blank.decided_by == admin_user


def test_dropped_asset_is_left_out_of_new_versions(dirty, admin_user, django_capture_on_commit_callbacks):
    findings.findings_scan(project=dirty, user=admin_user)
    blank = keyed(dirty, "near_blank")[0]
    findings.finding_decide(finding=blank, decision="drop", user=admin_user)
    with django_capture_on_commit_callbacks():
        version = services.dataset_version_create(project=dirty, user=admin_user, name="clean", split_seed=1, **SPEC)
    in_version = set(DatasetItem.objects.filter(version=version).values_list("asset_id", flat=True))
    assert blank.project_asset.asset_id not in in_version
    assert by_path(dirty, "a/0.png").asset_id in in_version
    with pytest.raises(Conflict) as err:
        findings.finding_decide(finding=blank, decision="keep", user=admin_user)
    assert err.value.code == "already_decided"


def test_keep_oldest_duplicate_rule_keeps_one_of_each_group(dirty, admin_user):
    findings.findings_scan(project=dirty, user=admin_user)
    decided = findings.findings_decide_by_rule(project=dirty, rule="keep_oldest_duplicate", user=admin_user)
    assert decided == len(keyed(dirty, "exact_duplicate")) + len(keyed(dirty, "near_duplicate"))
    assert set(Finding.objects.filter(rule="keep_oldest_duplicate").values_list("decision", flat=True)) == {"merge"}
    excluded = set(ProjectAsset.objects.filter(project=dirty, excluded=True).values_list("pk", flat=True))
    assert by_path(dirty, "b/same.bmp").pk in excluded and by_path(dirty, "a/near.png").pk in excluded
    assert by_path(dirty, "a/1.png").pk not in excluded and by_path(dirty, "a/0.png").pk not in excluded


def test_drop_unreadable_rule_and_unknown_rule(dirty, admin_user):
    findings.findings_scan(project=dirty, user=admin_user)
    assert findings.findings_decide_by_rule(project=dirty, rule="drop_unreadable", user=admin_user) == 1
    assert keyed(dirty, "unreadable")[0].decision == "drop"
    with pytest.raises(ValidationFailed) as err:
        findings.findings_decide_by_rule(project=dirty, rule="drop_everything", user=admin_user)
    assert err.value.code == "unknown_rule"


def test_relabel_to_a_label_is_logged_with_the_finding(dirty, admin_user):
    findings.findings_scan(project=dirty, user=admin_user)
    conflict = keyed(dirty, "conflicting_labels")[0]
    findings.finding_decide(finding=conflict, decision="relabel", label="a", user=admin_user)
    same = by_path(dirty, "b/same.bmp")
    same.refresh_from_db()
    assert same.label == "a"
    event = LabelEvent.objects.get(project_asset=same)
    assert (event.via, event.ref, event.actor, event.old_label) == ("finding", conflict.pk, admin_user, "b")


def test_relabel_through_the_queue_needs_a_schema_and_is_all_or_nothing(dirty, admin_user):
    from labeling.models import QueueItem
    from labeling.services import label_schema_set

    findings.findings_scan(project=dirty, user=admin_user)
    conflict = keyed(dirty, "conflicting_labels")[0]
    with pytest.raises(ValidationFailed) as err:
        findings.findings_decide_by_rule(project=dirty, rule="relabel_conflicts", user=admin_user)
    assert err.value.code == "no_label_schema"
    conflict.refresh_from_db()
    assert conflict.decision == "open"  # nothing half-decided
    label_schema_set(project=dirty, user=admin_user, classes=[{"name": n, "key": n} for n in ("a", "b", "c")])
    assert findings.findings_decide_by_rule(project=dirty, rule="relabel_conflicts", user=admin_user) >= 1
    marked = set(QueueItem.objects.filter(project=dirty, relabel=True).values_list("project_asset_id", flat=True))
    assert set(conflict.evidence["members"]) <= marked


def test_upsert_is_the_entry_for_other_jobs(dirty, admin_user):
    pa = by_path(dirty, "a/3.png")
    first = findings.findings_upsert(
        project=dirty, kind="label_error", key=pa.asset.sha256, evidence={"given": "a", "suggested": "b"},
        project_asset_id=pa.pk,
    )  # fmt: skip
    findings.finding_decide(finding=first, decision="keep", user=admin_user)
    again = findings.findings_upsert(
        project=dirty, kind="label_error", key=pa.asset.sha256, evidence={"given": "a", "suggested": "c"},
        project_asset_id=pa.pk,
    )  # fmt: skip
    assert again.pk == first.pk and again.decision == "keep" and again.evidence["suggested"] == "c"
    with pytest.raises(ValidationFailed):
        findings.findings_upsert(project=dirty, kind="bogus", key="x", evidence={})


def test_split_leak_between_train_and_val(dirty, admin_user, django_capture_on_commit_callbacks):
    a0, near = by_path(dirty, "a/0.png").asset.sha256, by_path(dirty, "a/near.png").asset.sha256
    seed = next(
        s for s in range(500) if (services._split_keys(s, a0)[0] < 0.5) != (services._split_keys(s, near)[0] < 0.5)
    )
    with django_capture_on_commit_callbacks():
        version = services.dataset_version_create(
            project=dirty, user=admin_user, name="leaky", split_seed=seed, val_percent=50, **SPEC
        )
    findings.findings_scan(project=dirty, user=admin_user)
    (leak,) = keyed(dirty, "split_leak")
    assert leak.key == f"version:{version.pk}" and leak.evidence["version_name"] == "leaky"
    assert {(p["held_out"], p["train"]) for p in leak.evidence["pairs"]} & {(a0, near), (near, a0)}


def test_findings_api_pages_filters_and_decides(dirty, admin_user, annotator, api):
    findings.findings_scan(project=dirty, user=admin_user)
    client = api(admin_user)
    first = client.get("/api/v1/projects/digits/findings/", {"limit": 3}).json()
    assert len(first["results"]) == 3 and first["next"]
    rest = client.get("/api/v1/projects/digits/findings/", {"limit": 1000, "after": first["next"]}).json()
    ids = [f["id"] for f in first["results"] + rest["results"]]
    assert ids == sorted(Finding.objects.values_list("pk", flat=True))
    blank = client.get("/api/v1/projects/digits/findings/", {"kind": "near_blank"}).json()["results"]
    assert [f["kind"] for f in blank] == ["near_blank"] and blank[0]["label"] == "a"

    bad = client.post(f"/api/v1/findings/{blank[0]['id']}/decide/", {"decision": "burn"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["fields"]["decision"]
    ok = client.post(f"/api/v1/findings/{blank[0]['id']}/decide/", {"decision": "drop", "note": "x"}, format="json")
    assert ok.status_code == 200 and ok.json()["decision"] == "drop" and ok.json()["decided_by"] == "admin"
    again = client.post(f"/api/v1/findings/{blank[0]['id']}/decide/", {"decision": "keep"}, format="json")
    assert again.status_code == 409 and again.json()["error"]["code"] == "already_decided"
    dropped = client.get("/api/v1/projects/digits/findings/", {"decision": "drop"}).json()["results"]
    assert [f["id"] for f in dropped] == [blank[0]["id"]]

    rule = client.post("/api/v1/projects/digits/findings/rules/", {"rule": "drop_unreadable"}, format="json")
    assert rule.json() == {"rule": "drop_unreadable", "decided": 1}
    denied = api(annotator).post(f"/api/v1/findings/{ids[0]}/decide/", {"decision": "keep"}, format="json")
    assert denied.status_code in (403, 404) and Finding.objects.get(pk=ids[0]).decision in ("open", "drop")


def test_scan_api_queues_the_task(dirty, admin_user, api, django_capture_on_commit_callbacks, monkeypatch):
    sent = []
    monkeypatch.setattr(findings_scan_task, "delay", lambda **kw: sent.append(kw))
    with django_capture_on_commit_callbacks(execute=True):
        answer = api(admin_user).post("/api/v1/projects/digits/findings/scan/")
    assert answer.status_code == 202 and sent == [{"project_id": dirty.pk}]
