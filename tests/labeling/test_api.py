import pytest

from crucible.core.models import Project, Role
from labeling import services
from labeling.models import Annotation, Lease

from .conftest import CLASSES


def _next(api, user, project):
    resp = api(user).post(f"/api/v1/projects/{project.name}/queue/next/")
    assert resp.status_code == 200, resp.json()
    return resp.json()["results"]


def test_schema_put_by_engineer_and_read_by_annotator(api, project, engineer, annotator):
    resp = api(engineer).put(f"/api/v1/projects/{project.name}/label-schema/", {"classes": CLASSES}, format="json")
    assert resp.status_code == 200, resp.json()
    body = api(annotator).get(f"/api/v1/projects/{project.name}/label-schema/").json()
    assert body["kind"] == "single_label" and body["classes"] == CLASSES
    resp = api(annotator).put(f"/api/v1/projects/{project.name}/label-schema/", {"classes": CLASSES}, format="json")
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"


def test_schema_with_a_repeated_key_is_a_400(api, project, engineer):
    classes = [{"name": "cat", "key": "c"}, {"name": "cow", "key": "c"}]
    resp = api(engineer).put(f"/api/v1/projects/{project.name}/label-schema/", {"classes": classes}, format="json")
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_schema"
    assert "classes[1].key" in resp.json()["error"]["fields"]
    assert api(engineer).get(f"/api/v1/projects/{project.name}/label-schema/").status_code == 404


def test_annotator_labels_through_the_api(api, queue, project, engineer, annotator):
    queue(4, with_files=True)
    leases = _next(api, annotator, project)
    assert len(leases) == 3 and len({x["item"] for x in leases}) == 3
    again = _next(api, annotator, project)
    assert [(x["lease"], x["item"]) for x in again] == [(x["lease"], x["item"]) for x in leases]
    first = leases[0]
    image = api(annotator).get(first["image_url"])
    assert image.status_code == 200 and image["Content-Type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    body = {"result": {"label": "dog"}, "time_spent_ms": 800, "idempotency_key": "abc"}
    resp = api(annotator).post(f"/api/v1/labeling/items/{first['item']}/annotations/", body, format="json")
    assert resp.status_code == 201, resp.json()
    again = api(annotator).post(f"/api/v1/labeling/items/{first['item']}/annotations/", body, format="json")
    assert again.status_code == 201 and again.json()["id"] == resp.json()["id"]
    assert Annotation.objects.count() == 1
    # The image is readable only while the lease is held.
    assert api(annotator).get(first["image_url"]).status_code == 404
    status = api(engineer).get(f"/api/v1/projects/{project.name}/queue/status/").json()
    assert status == {
        "items": {"open": 3, "done": 1},
        "items_total": 4,
        "live_leases": 2,
        "expired_unswept": 0,
        "submissions": 1,
    }


def test_submit_without_lease_is_409_and_unknown_class_400(api, queue, project, annotator, member):
    queue(4)
    other = member(project, Role.ANNOTATOR, "ann2")
    mine = _next(api, annotator, project)
    theirs = _next(api, other, project)
    assert (len(mine), len(theirs)) == (3, 1)
    body = {"result": {"label": "cat"}, "time_spent_ms": 10, "idempotency_key": "k"}
    resp = api(annotator).post(f"/api/v1/labeling/items/{theirs[0]['item']}/annotations/", body, format="json")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "not_leased"
    bad = {**body, "result": {"label": "zebra"}}
    resp = api(annotator).post(f"/api/v1/labeling/items/{mine[0]['item']}/annotations/", bad, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "unknown_class"
    assert Annotation.objects.count() == 0


def test_heartbeat_and_release(api, queue, project, annotator):
    queue(1)
    (lease,) = _next(api, annotator, project)
    resp = api(annotator).post(f"/api/v1/labeling/leases/{lease['lease']}/heartbeat/")
    assert resp.status_code == 200 and resp.json()["expires_at"] >= lease["expires_at"]
    resp = api(annotator).post(f"/api/v1/labeling/leases/{lease['lease']}/release/")
    assert resp.status_code == 200
    resp = api(annotator).post(f"/api/v1/labeling/leases/{lease['lease']}/release/")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "not_leased"
    assert _next(api, annotator, project) == []


def test_annotator_of_another_project_sees_nothing(api, queue, project, annotator, make_user):
    queue(1, with_files=True)
    (lease,) = _next(api, annotator, project)
    other = Project.objects.create(name="other")
    outsider = make_user("outsider")
    other.memberships.create(user=outsider, role=Role.ANNOTATOR)
    client = api(outsider)
    assert client.post(f"/api/v1/projects/{project.name}/queue/next/").status_code == 404
    assert client.get(f"/api/v1/projects/{project.name}/label-schema/").status_code == 404
    assert client.get(lease["image_url"]).status_code == 404
    assert client.post(f"/api/v1/labeling/leases/{lease['lease']}/heartbeat/").status_code == 404
    assert client.post(f"/api/v1/labeling/leases/{lease['lease']}/release/").status_code == 404
    body = {"result": {"label": "cat"}, "time_spent_ms": 10, "idempotency_key": "k"}
    resp = client.post(f"/api/v1/labeling/items/{lease['item']}/annotations/", body, format="json")
    assert resp.status_code == 404
    assert Lease.objects.get().released_at is None


@pytest.mark.parametrize("role", [Role.ANNOTATOR])
def test_annotators_cannot_see_queue_status_or_add_items(api, queue, project, member, role):
    queue(1)
    user = member(project, role, "someone")
    assert api(user).get(f"/api/v1/projects/{project.name}/queue/status/").status_code == 403
    assert api(user).post(f"/api/v1/projects/{project.name}/queue/items/", {}, format="json").status_code == 403


def test_reviewer_reads_status_engineer_adds_items(api, project, engineer, member):
    from .conftest import add_assets

    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    ids = add_assets(project, 3)
    resp = api(engineer).post(
        f"/api/v1/projects/{project.name}/queue/items/",
        {"project_asset_ids": ids[:2], "priority": 3, "required_annotations": 2},
        format="json",
    )
    assert resp.status_code == 201 and resp.json() == {"added": 2}
    reviewer = member(project, Role.REVIEWER, "rev")
    status = api(reviewer).get(f"/api/v1/projects/{project.name}/queue/status/").json()
    assert status["items"] == {"open": 2, "done": 0}
    resp = api(engineer).post(
        f"/api/v1/projects/{project.name}/queue/items/", {"required_annotations": 0}, format="json"
    )
    assert resp.status_code == 400
