"""Text items: stored once by content, leased with their text inline, labelled like images."""

from curation.models import Asset, ProjectAsset
from curation.texts import text_assets_add
from labeling import services

from .conftest import CLASSES


def test_texts_are_stored_once_and_leased_inline(project, engineer, annotator, api):
    url = f"/api/v1/projects/{project.name}/texts/"
    resp = api(engineer).post(url, {"texts": ["héllo wörld", "second", "héllo wörld"]}, format="json")
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    assert body["created"] == 2 and body["project_asset_ids"][0] == body["project_asset_ids"][2]
    again = api(engineer).post(url, {"texts": ["second"]}, format="json").json()
    assert again == {"created": 0, "project_asset_ids": [body["project_asset_ids"][1]]}
    asset = Asset.objects.get(project_assets__pk=body["project_asset_ids"][0])
    assert (asset.kind, asset.format, asset.mode, asset.width, asset.height) == ("text", "TEXT", "text", 0, 0)
    assert asset.size_bytes == len("héllo wörld".encode())

    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    services.queue_settings_set(project=project, user=engineer, review_rate=0, gold_rate=0)
    services.queue_items_add(project=project, user=engineer)
    leases = api(annotator).post(f"/api/v1/projects/{project.name}/queue/next/").json()["results"]
    assert sorted(lease["text"] for lease in leases) == ["héllo wörld", "second"]
    assert {lease["kind"] for lease in leases} == {"text"}
    image = api(annotator).get(f"/api/v1/labeling/leases/{leases[0]['lease']}/image/")
    assert image.status_code == 404 and image.json()["error"]["code"] == "not_an_image"
    submit = f"/api/v1/labeling/items/{leases[0]['item']}/annotations/"
    resp = api(annotator).post(
        submit, {"result": {"label": "cat"}, "time_spent_ms": 3, "idempotency_key": "t1"}, format="json"
    )
    assert resp.status_code == 201
    assert ProjectAsset.objects.filter(label="cat").count() == 1


def test_too_long_text_is_refused_and_nothing_written(project, engineer, api):
    url = f"/api/v1/projects/{project.name}/texts/"
    resp = api(engineer).post(url, {"texts": ["fine", "x" * 10_001]}, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_texts"
    assert "texts[1]" in resp.json()["error"]["fields"]
    assert not Asset.objects.exists() and not ProjectAsset.objects.exists()


def test_boxes_on_a_text_item_are_invalid(project, engineer, annotator, api):
    ids = text_assets_add(project=project, user=engineer, texts=["a sentence"], labels=["dog"])
    assert ProjectAsset.objects.get(pk=ids[0]).label == "dog"
    services.label_schema_set(project=project, user=engineer, classes=CLASSES, kind="boxes")
    services.queue_items_add(project=project, user=engineer, project_asset_ids=ids)
    lease = services.lease_claim_next(project=project, annotator=annotator)[0]
    resp = api(annotator).post(
        f"/api/v1/labeling/items/{lease.item_id}/annotations/",
        {"result": {"boxes": []}, "time_spent_ms": 1, "idempotency_key": "b"},
        format="json",
    )
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_result"
