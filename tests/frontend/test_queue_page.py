"""The queue console page: engineers, admins and reviewers read it; annotators get a 403 page, outsiders a 404."""

import pytest

from crucible.core.models import Role
from labeling import services
from labeling.models import Annotation, AnnotatorStatus, QueueItem, ReviewTask
from tests.labeling.conftest import CLASSES, add_assets


@pytest.fixture
def queued(project, engineer, member):
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    add_assets(project, 3)
    services.queue_items_add(project=project, user=engineer, required_annotations=2)
    worker = member(project, Role.ANNOTATOR, "worker")
    item = QueueItem.objects.filter(project=project).order_by("pk").first()
    Annotation.objects.create(
        item=item, annotator=worker, result={"label": "cat"}, time_spent_ms=2500, idempotency_key="k1"
    )
    return project


def test_queue_page_renders_for_engineers(client, queued, engineer, django_assert_max_num_queries):
    client.force_login(engineer)
    with django_assert_max_num_queries(25):
        resp = client.get(f"/projects/{queued.name}/queue/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert 'id="throughput-chart"' in html and "frontend/js/queue.js" in html and "chart.umd.min.js" in html
    assert 'id="stat-open">3<' in html and 'id="stat-submissions">1<' in html
    assert '<tr data-required="2">' in html
    assert 'data-annotator="worker"' in html and "2.5 s" in html
    assert 'id="settings-form"' in html and f'data-url="/api/v1/projects/{queued.pk}/queue/settings/"' in html
    assert 'id="add-items-form"' in html and f'data-url="/api/v1/projects/{queued.pk}/queue/items/"' in html
    assert '<option value="random">' in html


def test_queue_page_by_id_for_reviewers_without_forms(client, queued, member):
    client.force_login(member(queued, Role.REVIEWER, "rev"))
    resp = client.get(f"/projects/{queued.pk}/queue/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert 'id="throughput-chart"' in html and 'data-annotator="worker"' in html
    assert 'id="settings-form"' not in html and 'id="add-items-form"' not in html


def test_queue_page_for_admins_of_an_empty_project(client, project, admin_user):
    client.force_login(admin_user)
    resp = client.get(f"/projects/{project.name}/queue/")
    assert resp.status_code == 200
    assert b"Nothing queued yet." in resp.content and b"No annotators yet" in resp.content


def test_queue_page_is_403_for_annotators(client, queued, annotator):
    client.force_login(annotator)
    resp = client.get(f"/projects/{queued.name}/queue/")
    assert resp.status_code == 403
    assert b"Not allowed here" in resp.content and b"worker" not in resp.content


def test_queue_page_is_404_for_outsiders(client, queued, make_user):
    client.force_login(make_user("outsider"))
    resp = client.get(f"/projects/{queued.name}/queue/")
    assert resp.status_code == 404
    assert b"worker" not in resp.content


def test_queue_page_sends_anonymous_to_login(client, queued):
    resp = client.get(f"/projects/{queued.name}/queue/")
    assert resp.status_code == 302 and resp["Location"].startswith("/login/")


def test_project_page_links_to_the_queue(client, project, engineer):
    client.force_login(engineer)
    html = client.get(f"/projects/{project.name}/").content.decode()
    assert f'href="/projects/{project.name}/queue/">Queue</a>' in html
    assert f'href="/projects/{project.name}/label/">Label</a>' in html


@pytest.fixture
def reviewed(queued, engineer):
    """The queued project with a gold item answered twice (once right), a paused annotator and reviews."""
    worker = queued.memberships.get(user__username="worker").user
    items = list(QueueItem.objects.filter(project=queued).order_by("pk"))
    gold = items[2]
    QueueItem.objects.filter(pk=gold.pk).update(is_gold=True, gold_result={"label": "dog"})
    for i, correct in enumerate([True, False]):
        Annotation.objects.create(
            item=gold,
            annotator=worker,
            result={"label": "dog" if correct else "cat"},
            time_spent_ms=1000,
            idempotency_key=f"g{i}",
            is_gold=True,
            gold_correct=correct,
        )
    AnnotatorStatus.objects.create(project=queued, annotator=worker, paused=True, reason="too many gold misses")
    sampled = Annotation.objects.get(idempotency_key="k1")
    ReviewTask.objects.create(project=queued, item=sampled.item, annotation=sampled, reason="sample")
    ReviewTask.objects.create(project=queued, item=items[1], reason="disagreement")
    return queued


def test_queue_page_shows_gold_pauses_and_review_outcomes(client, reviewed, engineer, django_assert_max_num_queries):
    client.force_login(engineer)
    with django_assert_max_num_queries(30):
        resp = client.get(f"/projects/{reviewed.name}/queue/")
    html = resp.content.decode()
    assert resp.status_code == 200
    # The annotator row: gold accuracy 1 of 2, paused with its reason, and a Resume button.
    assert 'data-paused="true" class="paused"' in html and "too many gold misses" in html
    assert '50% <span class="muted small">1/2</span>' in html
    assert 'class="resume-btn"' in html and 'class="pause-btn danger"' not in html
    # The gold items: one, answered twice, once correctly.
    assert "1 item, 1 of 2 answers correct" in html
    assert 'id="gold-table"' in html and '<span class="chip">dog</span>' in html
    # Review outcomes: two open, and the worker's open sampled review.
    assert 'id="review-open">2<' in html and 'id="review-accepted">0<' in html
    assert 'id="review-table"' in html and f'href="/projects/{reviewed.name}/review/">Review (2)</a>' in html
    # Agreement is read by the page's script from the API.
    assert f'data-url="/api/v1/projects/{reviewed.pk}/agreement/"' in html


def test_queue_page_for_reviewers_has_no_pause_buttons(client, reviewed, member):
    client.force_login(member(reviewed, Role.REVIEWER, "rev"))
    html = client.get(f"/projects/{reviewed.name}/queue/").content.decode()
    assert "too many gold misses" in html and 'class="resume-btn"' not in html
