"""The queue console page in a real browser: the throughput chart is drawn and the settings form stores."""

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from crucible.core.models import Membership, Project, Role, User
from labeling import services
from labeling.models import Annotation, QueueItem, QueueSettings
from tests.browser.conftest import log_in
from tests.labeling.conftest import CLASSES, add_assets

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


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
