"""Schema kinds: multi-label and box results through the queue, renames, merges, drops and their refusals."""

import uuid

from curation.models import LabelEvent, ProjectAsset
from labeling import services
from labeling.models import Annotation, LabelSchema, QueueItem

from .conftest import CLASSES, add_assets


def _submit(project, user, result):
    lease = services.lease_claim_next(project=project, annotator=user)[0]
    return services.annotation_submit(
        item_id=lease.item_id, annotator=user, result=result, time_spent_ms=5, idempotency_key=uuid.uuid4().hex
    )


def _settings(project, engineer, **kw):
    services.queue_settings_set(project=project, user=engineer, review_rate=0, gold_rate=0, **kw)


def test_box_schema_decides_the_asset_annotation_and_refuses_boxes_outside(project, engineer, annotator, member, api):
    services.label_schema_set(project=project, user=engineer, classes=CLASSES, kind="boxes")
    _settings(project, engineer)
    add_assets(project, 1)
    services.queue_items_add(project=project, user=engineer, required_annotations=2)
    other = member(project, "annotator", "ann2")
    lease = api(annotator).post(f"/api/v1/projects/{project.name}/queue/next/").json()["results"][0]
    url = f"/api/v1/labeling/items/{lease['item']}/annotations/"
    outside = {"result": {"boxes": [{"label": "cat", "x": 20, "y": 0, "w": 10, "h": 5}]}, "time_spent_ms": 1}
    resp = api(annotator).post(url, {**outside, "idempotency_key": "k1"}, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "box_outside_image"
    assert Annotation.objects.count() == 0
    inside = {"boxes": [{"label": "cat", "x": 2, "y": 2, "w": 10, "h": 10}]}
    resp = api(annotator).post(url, {"result": inside, "time_spent_ms": 1, "idempotency_key": "k2"}, format="json")
    assert resp.status_code == 201 and resp.json()["status"] == "submitted"
    _submit(project, other, {"boxes": [{"label": "cat", "x": 4, "y": 2, "w": 10, "h": 10}]})
    item = QueueItem.objects.get()
    pa = ProjectAsset.objects.get()
    assert item.state == "done" and item.consensus_label is None
    assert item.consensus_result == {"boxes": [{"label": "cat", "x": 3.0, "y": 2.0, "w": 10.0, "h": 10.0}]}
    assert pa.annotation == item.consensus_result and pa.label == ""
    assert LabelEvent.objects.get().via == "consensus"


def test_multi_label_consensus_and_rename_rewrites_everything(project, engineer, annotator):
    services.label_schema_set(project=project, user=engineer, classes=CLASSES, kind="multi_label")
    _settings(project, engineer)
    add_assets(project, 1)
    services.queue_items_add(project=project, user=engineer)
    _submit(project, annotator, {"labels": ["dog", "cat"]})
    assert ProjectAsset.objects.get().annotation == {"labels": ["cat", "dog"]}
    renamed = [{"name": "kitten", "key": "c", "renamed_from": "cat"}, *CLASSES[1:]]
    services.label_schema_set(project=project, user=engineer, classes=renamed, kind="multi_label")
    assert Annotation.objects.get().result == {"labels": ["dog", "kitten"]}
    assert QueueItem.objects.get().consensus_result == {"labels": ["dog", "kitten"]}
    assert ProjectAsset.objects.get().annotation == {"labels": ["dog", "kitten"]}
    assert LabelEvent.objects.filter(via="edit").count() == 1


def test_removing_a_used_class_needs_drop_or_merge(project, engineer, annotator, api):
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    _settings(project, engineer)
    add_assets(project, 2)
    services.queue_items_add(project=project, user=engineer)
    _submit(project, annotator, {"label": "cat"})
    _submit(project, annotator, {"label": "dog"})
    url = f"/api/v1/projects/{project.name}/label-schema/"
    resp = api(engineer).put(url, {"classes": CLASSES[1:]}, format="json")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "class_in_use"
    assert resp.json()["error"]["fields"] == {"classes": ["cat"]}
    assert LabelSchema.objects.get().classes.count() == 3  # nothing changed
    body = {"classes": CLASSES[1:], "removed": {"cat": {"action": "merge", "into": "dog"}}}
    resp = api(engineer).put(url, body, format="json")
    assert resp.status_code == 200, resp.json()
    assert sorted(ProjectAsset.objects.values_list("label", flat=True)) == ["dog", "dog"]
    assert sorted(a.result["label"] for a in Annotation.objects.all()) == ["dog", "dog"]
    # Dropping a single label withdraws the answers that used it.
    body = {"classes": CLASSES[2:], "removed": {"dog": {"action": "drop"}}}
    assert api(engineer).put(url, body, format="json").status_code == 200
    assert set(Annotation.objects.values_list("status", flat=True)) == {"withdrawn"}
    assert set(ProjectAsset.objects.values_list("label", flat=True)) == {""}


def test_kind_cannot_change_once_annotated(project, engineer, annotator, api):
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    url = f"/api/v1/projects/{project.name}/label-schema/"
    # Before any annotation the kind may change freely.
    resp = api(engineer).put(url, {"kind": "boxes", "classes": CLASSES}, format="json")
    assert resp.status_code == 200 and resp.json()["kind"] == "boxes"
    resp = api(engineer).put(url, {"kind": "single_label", "classes": CLASSES}, format="json")
    assert resp.status_code == 200
    _settings(project, engineer)
    add_assets(project, 1)
    services.queue_items_add(project=project, user=engineer)
    _submit(project, annotator, {"label": "cat"})
    resp = api(engineer).put(url, {"kind": "multi_label", "classes": CLASSES}, format="json")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "kind_in_use"
    assert LabelSchema.objects.get().kind == "single_label"
    resp = api(engineer).put(url, {"kind": "polygons", "classes": CLASSES}, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_schema"
