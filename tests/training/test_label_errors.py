"""Label error scans: real digits with planted wrong labels go through import, a dataset version, the
K-fold job on the train queue, confident learning, findings and the relabel queue."""

import io

import numpy as np
import pytest
from PIL import Image

from curation import services as curation_services
from curation.models import Finding, ProjectAsset
from curation.tasks import dataset_materialize, import_run
from labeling.models import LabelSchema, QueueItem
from labeling.services import annotation_submit, lease_claim_next
from training.engine.crossval import Rows, label_suspects, out_of_sample_probs
from training.engine.loop import TrainConfig
from training.models import LabelErrorScan
from training.tasks import label_errors_task

CLASSES = ("0", "1", "7")
PER_CLASS = 60
FLIPPED = 6


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def noisy_project(project, admin_user, settings, tmp_path, digits, storage_dir, django_capture_on_commit_callbacks):
    """PER_CLASS real digits of each class as class folders, FLIPPED of the "1"s filed under "7"."""
    settings.CRUCIBLE_IMPORT_ROOTS = [str(tmp_path)]
    x, y = digits
    root = tmp_path / "digits"
    planted = set()
    for name in CLASSES:
        (root / name).mkdir(parents=True)
    for name in CLASSES:
        idx = np.flatnonzero(y == int(name))[:PER_CLASS]
        for n, i in enumerate(idx):
            folder = name
            if name == "1" and n < FLIPPED:
                folder = "7"
                planted.add(f"{folder}/{name}-{n}.png")
            (root / folder / f"{name}-{n}.png").write_bytes(_png(x[i, 0]))
    with django_capture_on_commit_callbacks():
        job = curation_services.import_start(project=project, user=admin_user, path=str(root))
    import_run.apply(kwargs={"job_id": job.pk})
    with django_capture_on_commit_callbacks():
        version = curation_services.dataset_version_create(
            project=project,
            user=admin_user,
            name="noisy",
            channels=1,
            width=28,
            height=28,
            resize_mode="squash",
            split_seed=1,
        )
    dataset_materialize.apply(kwargs={"version_id": version.pk})
    version.refresh_from_db()
    assert version.status == "ready", version.error
    return project, version, planted


def test_crossval_probabilities_are_out_of_sample_and_find_flipped_labels(digits, tmp_path):
    x, y = digits
    x, y = x[:400], y[:400].copy()
    flipped = np.arange(0, 400, 40)  # 10 labels moved to the next class
    y[flipped] = (y[flipped] + 1) % 10
    probs = out_of_sample_probs(
        x=x, y=y, num_classes=10, config=TrainConfig(epochs=3, lr_step_epochs=2), seed=1, work_dir=tmp_path, folds=3
    )
    assert probs.shape == (400, 10)
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    suspects = label_suspects(labels=y, probs=probs)
    found = {s.index for s in suspects}
    assert len(found & set(flipped.tolist())) >= 6  # most planted errors are caught
    assert suspects == sorted(suspects, key=lambda s: s.quality)  # most suspicious first


def test_rows_read_chosen_rows_of_several_parts_in_the_order_asked(digits):
    x, _ = digits
    a, b = x[:30], x[30:50]
    rows = Rows([a, b]).take(np.array([45, 3, 29, 30, 3]))
    assert rows.shape == (5, 1, 28, 28) and len(rows) == 5
    expected = np.concatenate([a, b])[[45, 3, 29, 30, 3]]
    assert np.array_equal(rows[:], expected)
    assert np.array_equal(rows[np.array([4, 0])], expected[[4, 0]])
    assert np.array_equal(rows[2], expected[2])
    assert rows[1:3].flags.writeable and rows[1:3].flags.c_contiguous


def test_crossval_over_split_parts_equals_crossval_over_one_array(digits, tmp_path):
    x, y = digits
    x, y = x[:120], y[:120]
    config = TrainConfig(epochs=1, lr_step_epochs=1)
    whole = out_of_sample_probs(
        x=np.ascontiguousarray(x), y=y, num_classes=10, config=config, seed=2, work_dir=tmp_path / "a", folds=2
    )
    parts = out_of_sample_probs(
        x=Rows([x[:70], x[70:]]), y=y, num_classes=10, config=config, seed=2, work_dir=tmp_path / "b", folds=2
    )
    assert np.array_equal(whole, parts)


def test_crossval_refuses_a_class_smaller_than_the_folds(digits, tmp_path):
    x, y = digits
    y = y[:50].copy()
    y[:] = 0
    y[0:2] = 1
    with pytest.raises(ValueError, match="at least 5 items"):
        out_of_sample_probs(x=x[:50], y=y, num_classes=2, config=TrainConfig(epochs=1), seed=1, work_dir=tmp_path)


def test_scan_records_findings_with_provenance_and_fills_the_relabel_queue(
    noisy_project, api, admin_user, django_capture_on_commit_callbacks
):
    project, version, planted = noisy_project
    client = api(admin_user)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(
            f"/api/v1/datasets/{version.pk}/label-errors/",
            {"folds": 3, "epochs": 4, "relabel_top": 5, "seed": 11, "device": "cpu"},
            format="json",
        )
    assert response.status_code == 202, response.json()
    assert response.json()["status"] == "queued" and len(callbacks) == 1
    scan_id = response.json()["id"]
    label_errors_task.apply(kwargs={"scan_id": scan_id})

    scan = client.get(f"/api/v1/label-error-scans/{scan_id}/").json()
    assert scan["status"] == "done", scan["error"]
    assert scan["items"] == PER_CLASS * len(CLASSES) and scan["folds_done"] == 3
    assert scan["suspects"] >= 1 and scan["device_used"] == "cpu"

    findings = list(Finding.objects.filter(project=project, kind="label_error").select_related("project_asset"))
    assert len(findings) == scan["suspects"]
    paths = {f.project_asset.source_path for f in findings}
    assert len(paths & planted) >= FLIPPED // 2  # the planted "1"s filed as "7" are among the suspects
    top = min(findings, key=lambda f: f.evidence["rank"])
    assert top.evidence["scan"] == scan_id and "3-fold" in top.evidence["model"]
    assert top.evidence["given"] != top.evidence["suggested"] and top.evidence["sent_to_relabel"] is True

    # The top suspects wait in the relabel queue, under a schema made from the dataset's classes.
    assert LabelSchema.objects.filter(project=project).exists()
    relabel = QueueItem.objects.filter(project=project, relabel=True, state="open")
    assert relabel.count() == scan["sent_to_relabel"] == min(5, scan["suspects"])
    sent = {f.project_asset_id for f in findings if f.evidence["sent_to_relabel"]}
    assert set(relabel.values_list("project_asset_id", flat=True)) == sent

    # The annotators' answers come back onto the findings: the suggested class fixes the label, the given
    # one confirms it.
    by_asset = {f.project_asset_id: f for f in findings}
    answers = {}
    while True:
        leases = lease_claim_next(project=project, annotator=admin_user)
        if not leases:
            break
        for lease in leases:
            finding = by_asset[lease.item.project_asset_id]
            keep = not answers  # the first one keeps its label
            label = finding.evidence["given"] if keep else finding.evidence["suggested"]
            answers[finding.pk] = ("confirmed" if keep else "fixed", label)
            annotation_submit(
                item_id=lease.item_id,
                annotator=admin_user,
                result={"label": label},
                time_spent_ms=900,
                idempotency_key=f"relabel-{lease.item_id}",
            )
    assert len(answers) == scan["sent_to_relabel"]
    for finding_id, (verdict, label) in answers.items():
        finding = Finding.objects.select_related("project_asset").get(pk=finding_id)
        assert (finding.verdict, finding.verdict_label) == (verdict, label)
        assert finding.decision == ("keep" if verdict == "confirmed" else "relabel") and finding.rule == "annotators"
        assert finding.project_asset.label == label
    untouched = Finding.objects.filter(project=project, kind="label_error").exclude(pk__in=list(answers))
    assert all(f.verdict == "" and f.decision == "open" for f in untouched)

    # A second delivery of the finished task changes nothing.
    label_errors_task.apply(kwargs={"scan_id": scan_id})
    assert Finding.objects.filter(project=project, kind="label_error").count() == len(findings)
    assert QueueItem.objects.filter(project=project, relabel=True).count() == scan["sent_to_relabel"]


def test_scan_input_is_checked_and_nothing_is_queued(noisy_project, api, admin_user, annotator, project):
    _, version, _ = noisy_project
    client = api(admin_user)
    bad = client.post(f"/api/v1/datasets/{version.pk}/label-errors/", {"folds": 1, "device": "tpu"}, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_scan"
    assert set(bad.json()["error"]["fields"]) >= {"folds", "device"}
    missing = client.post("/api/v1/datasets/999999/label-errors/", {}, format="json")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    forbidden = api(annotator).post(f"/api/v1/datasets/{version.pk}/label-errors/", {}, format="json")
    assert forbidden.status_code in (403, 404)
    assert LabelErrorScan.objects.count() == 0
    assert ProjectAsset.objects.filter(project=project).count() == PER_CLASS * len(CLASSES)
