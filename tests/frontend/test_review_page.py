"""The review page: reviewers, engineers and admins open it; annotators get a 403 page, outsiders a 404."""

import pytest

from crucible.core.models import Role
from labeling import services
from labeling.models import Annotation, QueueItem, ReviewTask
from tests.labeling.conftest import CLASSES, add_assets


@pytest.fixture
def to_review(project, engineer, member):
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    add_assets(project, 2)
    services.queue_items_add(project=project, user=engineer)
    worker = member(project, Role.ANNOTATOR, "worker")
    item = QueueItem.objects.filter(project=project).order_by("pk").first()
    a = Annotation.objects.create(
        item=item, annotator=worker, result={"label": "cat"}, time_spent_ms=900, idempotency_key="k1"
    )
    ReviewTask.objects.create(project=project, item=item, annotation=a, reason="sample")
    return project


def test_review_page_renders_for_reviewers(client, to_review, member, django_assert_max_num_queries):
    client.force_login(member(to_review, Role.REVIEWER, "rev"))
    with django_assert_max_num_queries(12):
        resp = client.get(f"/projects/{to_review.name}/review/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert "frontend/js/review.js" in html and 'id="review-config"' in html
    assert 'id="count-open">1<' in html and 'id="count-fixed">0<' in html
    assert 'data-name="cat" data-key="c"' in html and "<kbd>A</kbd> accepts" in html
    assert '"kind": "single_label"' in html


def test_review_page_without_a_schema_says_so(client, project, engineer):
    client.force_login(engineer)
    resp = client.get(f"/projects/{project.name}/review/")
    assert resp.status_code == 200
    assert b"no label classes yet" in resp.content and b"review.js" not in resp.content


def test_review_page_is_403_for_annotators_and_404_for_outsiders(client, to_review, make_user):
    client.force_login(to_review.memberships.get(user__username="worker").user)
    resp = client.get(f"/projects/{to_review.name}/review/")
    assert resp.status_code == 403 and b"Not allowed here" in resp.content
    client.force_login(make_user("outsider"))
    assert client.get(f"/projects/{to_review.name}/review/").status_code == 404


def test_review_page_sends_anonymous_to_login(client, to_review):
    resp = client.get(f"/projects/{to_review.name}/review/")
    assert resp.status_code == 302 and resp["Location"].startswith("/login/")
