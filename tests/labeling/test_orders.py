"""Queue orders (sequential, random, uncertainty, relabel-first), queue settings and skip modes."""

import uuid

import pytest

from crucible.core.errors import Forbidden, ValidationFailed
from crucible.core.models import Role
from labeling import services
from labeling.models import Lease, QueueItem

from .conftest import add_assets


def _drain(project, user) -> list[int]:
    """Claim and submit one item at a time until nothing is left; the items in the order they came."""
    seen = []
    while True:
        leases = services.lease_claim_next(project=project, annotator=user)
        if not leases:
            return seen
        lease = leases[0]
        seen.append(lease.item_id)
        services.annotation_submit(
            item_id=lease.item_id,
            annotator=user,
            result={"label": "cat"},
            time_spent_ms=1,
            idempotency_key=uuid.uuid4().hex,
        )


def _ids_by(**order) -> list[int]:
    return list(QueueItem.objects.order_by(*order["by"]).values_list("pk", flat=True))


def _set_order(project, engineer, order: str) -> None:
    services.queue_settings_set(project=project, user=engineer, order=order)


def test_sequential_is_priority_then_id(queue, project, engineer, annotator):
    queue(4)
    urgent = add_assets(project, 1, start=500)
    services.queue_items_add(project=project, user=engineer, project_asset_ids=urgent, priority=3)
    expected = _ids_by(by=["-priority", "pk"])
    assert _drain(project, annotator) == expected
    assert QueueItem.objects.get(pk=expected[0]).project_asset_id == urgent[0]


def test_random_follows_the_stored_keys_and_is_stable(queue, project, engineer, annotator, member):
    queue(12)
    _set_order(project, engineer, "random")
    # Keys chosen so that the random order is the reverse of the sequential one.
    ids = list(QueueItem.objects.order_by("pk").values_list("pk", flat=True))
    for i, pk in enumerate(ids):
        QueueItem.objects.filter(pk=pk).update(random_key=1 - (i + 1) / 100)
    expected = _ids_by(by=["-priority", "random_key", "pk"])
    assert expected == ids[::-1] and expected != ids
    first = services.lease_claim_next(project=project, annotator=annotator)
    assert [lease.item_id for lease in first] == expected[:3]
    # The same keys give the same order to another annotator.
    for lease in first:
        services.lease_release(lease_id=lease.pk, annotator=annotator)
    other = member(project, Role.ANNOTATOR, "ann2")
    assert _drain(project, other) == expected


def test_random_keeps_priority_first(queue, project, engineer, annotator):
    queue(5)
    urgent = add_assets(project, 1, start=500)
    services.queue_items_add(project=project, user=engineer, project_asset_ids=urgent, priority=9)
    _set_order(project, engineer, "random")
    assert _drain(project, annotator) == _ids_by(by=["-priority", "random_key", "pk"])


def test_uncertainty_from_the_service_comes_first_and_unscored_last(queue, project, engineer, annotator):
    queue(6)
    _set_order(project, engineer, "uncertainty")
    items = list(QueueItem.objects.order_by("pk"))
    scores = {items[4].project_asset_id: 0.9, items[1].project_asset_id: 0.5, items[3].project_asset_id: 0.7}
    assert services.queue_uncertainty_set(project=project, scores=scores) == 3
    expected = [items[4].pk, items[3].pk, items[1].pk, items[0].pk, items[2].pk, items[5].pk]
    assert _drain(project, annotator) == expected


def test_uncertainty_refuses_non_finite_scores(queue, project):
    queue(1)
    item = QueueItem.objects.get()
    with pytest.raises(ValidationFailed) as exc:
        services.queue_uncertainty_set(project=project, scores={item.project_asset_id: float("nan")})
    assert exc.value.code == "invalid_uncertainty"
    assert QueueItem.objects.get().uncertainty is None


def test_relabel_first_puts_relabelled_items_first(queue, project, engineer, annotator):
    queue(5)
    _set_order(project, engineer, "relabel_first")
    items = list(QueueItem.objects.order_by("pk"))
    marked = [items[3].project_asset_id, items[2].project_asset_id]
    assert services.queue_items_relabel(project=project, user=engineer, project_asset_ids=marked, reason="blurry") == 2
    assert _drain(project, annotator) == [items[2].pk, items[3].pk, items[0].pk, items[1].pk, items[4].pk]


def test_relabel_of_a_done_item_makes_it_claimable_again_with_one_more_required(
    queue, project, engineer, annotator, member
):
    queue(2)
    _set_order(project, engineer, "relabel_first")
    done = _drain(project, annotator)
    assert QueueItem.objects.filter(state="done").count() == 2
    item = QueueItem.objects.get(pk=done[1])
    count = services.queue_items_relabel(
        project=project, user=engineer, project_asset_ids=[item.project_asset_id], reason="wrong class"
    )
    assert count == 1
    item.refresh_from_db()
    assert (item.state, item.relabel, item.required_annotations, item.claimed, item.submitted_count) == (
        "open",
        True,
        2,
        1,
        1,
    )
    # The first annotator annotated it already; someone else gets it, and it is done again after that.
    assert services.lease_claim_next(project=project, annotator=annotator) == []
    other = member(project, Role.ANNOTATOR, "ann2")
    assert _drain(project, other) == [item.pk]
    item.refresh_from_db()
    assert (item.state, item.required_annotations, item.claimed, item.submitted_count) == ("done", 2, 2, 2)


def test_relabel_adds_an_item_for_an_asset_never_queued(queue, project, engineer, annotator):
    queue(2)
    _set_order(project, engineer, "relabel_first")
    fresh = add_assets(project, 1, start=700, label="dog")
    assert services.queue_items_relabel(project=project, user=engineer, project_asset_ids=fresh, reason="check") == 1
    new = QueueItem.objects.get(project_asset_id=fresh[0])
    assert new.relabel and new.state == "open"
    assert _drain(project, annotator)[0] == new.pk
    with pytest.raises(Forbidden):
        services.queue_items_relabel(project=project, user=annotator, project_asset_ids=fresh, reason="x")


def test_skip_later_comes_back_to_me_only_when_nothing_else_is_left(queue, project, annotator, member):
    queue(5)
    first = services.lease_claim_next(project=project, annotator=annotator)
    skipped = first[0].item_id
    services.lease_release(lease_id=first[0].pk, annotator=annotator, mode="later")
    assert Lease.objects.get(pk=first[0].pk).release_reason == "skipped_later"
    # The others still get it as usual.
    other = member(project, Role.ANNOTATOR, "ann2")
    assert skipped in [lease.item_id for lease in services.lease_claim_next(project=project, annotator=other)]
    Lease.objects.filter(annotator=other).delete()
    QueueItem.objects.update(claimed=0)
    # Me: every other item first, then the skipped one.
    Lease.objects.filter(annotator=annotator, released_at__isnull=True).delete()
    order = _drain(project, annotator)
    assert order[-1] == skipped and sorted(order) == sorted(QueueItem.objects.values_list("pk", flat=True))


def test_skip_later_fills_the_prefetch_only_after_fresh_items(queue, project, annotator):
    queue(4)
    leases = services.lease_claim_next(project=project, annotator=annotator)
    services.lease_release(lease_id=leases[0].pk, annotator=annotator, mode="later")
    topped = services.lease_claim_next(project=project, annotator=annotator)
    # The fourth item fills the empty place; the skipped one is not given back while it is there.
    assert leases[0].item_id not in [lease.item_id for lease in topped]
    assert len(topped) == 3
    services.lease_release(lease_id=topped[0].pk, annotator=annotator, mode="requeue")
    again = services.lease_claim_next(project=project, annotator=annotator)
    assert [lease.item_id for lease in again][-1] == leases[0].item_id


def test_skip_drop_never_comes_back_to_me(queue, project, annotator, member):
    queue(2)
    first = services.lease_claim_next(project=project, annotator=annotator)
    dropped = first[0].item_id
    services.lease_release(lease_id=first[0].pk, annotator=annotator, mode="drop")
    assert Lease.objects.get(pk=first[0].pk).release_reason == "dropped"
    assert dropped not in _drain(project, annotator)
    assert services.lease_claim_next(project=project, annotator=annotator) == []
    other = member(project, Role.ANNOTATOR, "ann2")
    assert _drain(project, other) == [dropped]


def test_an_unknown_skip_mode_is_refused(queue, project, annotator):
    queue(1)
    (lease,) = services.lease_claim_next(project=project, annotator=annotator)
    with pytest.raises(ValidationFailed) as exc:
        services.lease_release(lease_id=lease.pk, annotator=annotator, mode="forever")
    assert exc.value.code == "invalid_skip_mode"
    assert Lease.objects.get(pk=lease.pk).released_at is None


def test_release_api_takes_a_mode(api, queue, project, annotator):
    queue(3)
    leases = services.lease_claim_next(project=project, annotator=annotator)
    resp = api(annotator).post(f"/api/v1/labeling/leases/{leases[0].pk}/release/", {"mode": "later"}, format="json")
    assert resp.status_code == 200, resp.json()
    assert resp.json()["mode"] == "later"
    resp = api(annotator).post(f"/api/v1/labeling/leases/{leases[1].pk}/release/")
    assert resp.status_code == 200 and resp.json()["mode"] == "requeue"
    resp = api(annotator).post(f"/api/v1/labeling/leases/{leases[2].pk}/release/", {"mode": "x"}, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_skip_mode"


def test_settings_api_put_and_get(api, queue, project, engineer, annotator, settings):
    queue(2)
    url = f"/api/v1/projects/{project.name}/queue/settings/"
    body = api(annotator).get(url).json()
    assert body["order"] == "sequential" and body["lease_ttl_seconds"] == settings.LABELING_LEASE_TTL
    assert body["lease_ttl_default"] is True and "relabel_first" in body["orders"]
    resp = api(engineer).put(url, {"order": "random", "lease_ttl_seconds": 120}, format="json")
    assert resp.status_code == 200, resp.json()
    body = api(annotator).get(url).json()
    assert (body["order"], body["lease_ttl_seconds"], body["lease_ttl_default"]) == ("random", 120, False)
    # The project's TTL applies to claims.
    (lease, *_) = services.lease_claim_next(project=project, annotator=annotator)
    assert 110 <= (lease.expires_at - lease.created_at).total_seconds() <= 130


def test_a_bad_order_is_a_400_with_a_code(api, project, engineer):
    url = f"/api/v1/projects/{project.name}/queue/settings/"
    resp = api(engineer).put(url, {"order": "priority; DROP TABLE x"}, format="json")
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "invalid_order" and "order" in resp.json()["error"]["fields"]
    resp = api(engineer).put(url, {"order": "random", "lease_ttl_seconds": 5}, format="json")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "invalid_queue_settings"
    assert api(engineer).get(url).json()["order"] == "sequential"


def test_annotators_cannot_change_settings(api, project, annotator):
    url = f"/api/v1/projects/{project.name}/queue/settings/"
    resp = api(annotator).put(url, {"order": "random"}, format="json")
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"
    assert api(annotator).get(url).json()["order"] == "sequential"
