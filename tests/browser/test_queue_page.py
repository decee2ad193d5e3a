"""The queue console page in a real browser: the throughput chart is drawn and the settings form stores."""

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from crucible.core.models import Membership, Project, Role, User
from labeling import services
from labeling.models import Annotation, AnnotatorStatus, QueueItem, QueueSettings, ReviewTask
from tests.browser.conftest import log_in
from tests.labeling.conftest import CLASSES, add_assets

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The machine running the suite may be busy: waits are generous, they end as soon as the page is ready.
expect.set_options(timeout=20_000)


@pytest.fixture
def page(page):
    page.set_default_timeout(90_000)
    return page


@pytest.fixture
def queue(transactional_db):
    engineer = User.objects.create_user(username="eng", password="pw-eng")
    project = Project.objects.create(name="pets")
    Membership.objects.create(project=project, user=engineer, role=Role.ENGINEER)
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    add_assets(project, 12)
    services.queue_items_add(project=project, user=engineer, required_annotations=2)
    now = timezone.now()
    items = list(QueueItem.objects.filter(project=project).order_by("pk"))
    for n, name in enumerate(["ann", "bea"]):
        user = User.objects.create_user(username=name, password=f"pw-{name}")
        Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
        for i, item in enumerate(items[: 6 + 3 * n]):
            a = Annotation.objects.create(
                item=item, annotator=user, result={"label": "cat"}, time_spent_ms=1500 + 500 * i, idempotency_key=f"{i}"
            )
            Annotation.objects.filter(pk=a.pk).update(created_at=now - timezone.timedelta(hours=i % 5, minutes=n))
    add_assets(project, 4, start=100)  # unlabelled and not queued yet
    return project


def test_engineer_reads_the_queue_and_changes_its_order(page, queue, shot):
    log_in(page, "eng", "pw-eng")
    page.goto("/projects/pets/")
    page.click("a.queue-link")
    page.wait_for_url("**/projects/pets/queue/")
    canvas = page.locator("#throughput-chart")
    expect(canvas).to_have_attribute("data-drawn", "24")
    # Chart.js painted bars: some pixel of the canvas is not transparent.
    painted = page.evaluate(
        """() => {
          const c = document.getElementById('throughput-chart');
          const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
          let n = 0;
          for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
          return n;
        }"""
    )
    assert painted > 1000
    expect(page.locator('#annotator-table tr[data-annotator="bea"] td').nth(2)).to_have_text("9")
    expect(page.locator("#stat-submissions")).to_have_text("15")

    page.select_option('#settings-form select[name="order"]', "random")
    page.fill('#settings-form input[name="lease_ttl_seconds"]', "120")
    page.click('#settings-form button[type="submit"]')
    expect(page.locator("#settings-saved")).to_be_visible()
    expect(page.locator("#current-order")).to_have_text("random")
    row = QueueSettings.objects.get(project=queue)
    assert (row.order, row.lease_ttl_seconds) == ("random", 120)

    page.click('#add-items-form button[type="submit"]')
    expect(page.locator("#add-items-result")).to_contain_text("4 item(s) added")
    page.wait_for_load_state("load")
    expect(page.locator("#stat-open")).to_have_text("16")
    assert QueueItem.objects.filter(project=queue).count() == 16
    page.reload()
    expect(page.locator('#settings-form select[name="order"]')).to_have_value("random")
    expect(canvas).to_have_attribute("data-drawn", "24")
    shot(page, "queue-page")
    assert page.js_errors == []


def test_engineer_reads_agreement_and_pauses_an_annotator(page, queue, shot):
    # bea disagrees with ann on two of the six items both labelled; one of ann's answers is reviewed.
    items = list(QueueItem.objects.filter(project=queue).order_by("pk"))
    Annotation.objects.filter(item__in=items[:2], annotator__username="bea").update(result={"label": "dog"})
    reviewed = Annotation.objects.filter(item=items[0], annotator__username="ann").get()
    ReviewTask.objects.create(
        project=queue, item=items[0], annotation=reviewed, reason="sample", state="accepted", decided_at=timezone.now()
    )
    QueueItem.objects.filter(pk=items[11].pk).update(is_gold=True, gold_result={"label": "cat"})
    Annotation.objects.create(
        item=items[11],
        annotator=User.objects.get(username="ann"),
        result={"label": "cat"},
        time_spent_ms=900,
        idempotency_key="gold-1",
        is_gold=True,
        gold_correct=True,
    )

    log_in(page, "eng", "pw-eng")
    page.goto("/projects/pets/queue/")
    expect(page.locator("#agreement-scope")).to_contain_text("6 item(s) with two or more annotators", timeout=30_000)
    expect(page.locator("#agreement-percent")).to_have_text("66.7%")
    expect(page.locator('#agreement-pairs tr[data-pair="ann-bea"] td').nth(2)).to_have_text("6")
    expect(page.locator("#gold-summary")).to_have_text("1 item, 1 of 1 answers correct")
    expect(page.locator("#review-accepted")).to_have_text("1")
    ann_row = page.locator('#annotator-table tr[data-annotator="ann"]')
    expect(ann_row.locator(".gold-cell")).to_contain_text("100%")

    bea_row = page.locator('#annotator-table tr[data-annotator="bea"]')
    bea_row.locator(".pause-btn").click()
    bea_row.locator(".pause-reason-input").fill("labels dogs as cats")
    bea_row.locator(".pause-reason-input").press("Enter")
    expect(bea_row.locator(".status-paused")).to_have_text("paused")
    expect(bea_row.locator(".pause-reason")).to_have_text("labels dogs as cats")
    status = AnnotatorStatus.objects.get(project=queue, annotator__username="bea")
    assert status.paused and status.reason == "labels dogs as cats"
    shot(page, "queue-page-review")

    bea_row.locator(".resume-btn").click()
    expect(bea_row.locator(".status-active")).to_have_text("active")
    assert AnnotatorStatus.objects.get(project=queue, annotator__username="bea").paused is False
    page.reload()
    expect(bea_row.locator(".status-active")).to_have_text("active")
    assert page.js_errors == []
