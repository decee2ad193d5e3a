"""The annotator page in a real browser: labelling with the keyboard only, and no lost submission."""

import json

import pytest
from django.core.files.storage import default_storage
from playwright.sync_api import expect

from crucible.core.models import Membership, Project, Role, User
from labeling import services
from labeling.models import Annotation, QueueItem
from tests.browser.conftest import log_in
from tests.labeling.conftest import CLASSES, add_assets

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
KEYS = {c["name"]: c["key"] for c in CLASSES}


@pytest.fixture
def queue(transactional_db, settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }
    engineer = User.objects.create_user(username="eng", password="pw-eng")
    annotator = User.objects.create_user(username="ann", password="pw-ann")
    project = Project.objects.create(name="pets")
    Membership.objects.create(project=project, user=engineer, role=Role.ENGINEER)
    Membership.objects.create(project=project, user=annotator, role=Role.ANNOTATOR)
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    add_assets(project, 25, with_files=True)
    assert default_storage.exists(project.assets.first().asset.storage_name)
    services.queue_items_add(project=project, user=engineer)
    return project


def current_item(page, previous: int | None = None) -> int:
    """The item shown once its image is on screen (and it is not `previous`)."""
    stage = page.locator("#stage")
    expect(stage).to_have_attribute("data-state", "ready")
    if previous is not None:
        expect(stage).not_to_have_attribute("data-item", str(previous))
        expect(stage).to_have_attribute("data-state", "ready")
    return int(stage.get_attribute("data-item"))


def test_annotator_labels_twenty_items_with_the_keyboard_only(page, queue, shot):
    log_in(page, "ann", "pw-ann")
    expect(page.locator("a.label-link")).to_have_text("Label")
    page.click("a.label-link")
    page.wait_for_url("**/projects/pets/label/")
    expect(page.locator("#class-list .class-key")).to_have_count(3)
    shot(page, "label-01-first-item")

    chosen: dict[int, str] = {}
    skipped = None
    item = None
    names = [c["name"] for c in CLASSES]
    for i in range(21):
        item = current_item(page, item)
        if i == 7:
            page.keyboard.press("s")
            skipped = item
            continue
        name = names[i % 3]
        page.keyboard.press(KEYS[name])
        expect(page.locator(".class-key.selected")).to_have_attribute("data-name", name)
        if i == 3:
            shot(page, "label-02-selected")
        page.keyboard.press("Enter")
        chosen[item] = name

    expect(page.locator("#today-count")).to_have_text("20")
    expect(page.locator("#session-count")).to_have_text("20")
    expect(page.locator("#per-minute")).not_to_have_text("—")
    shot(page, "label-03-after-twenty")
    stored = {a.item_id: a.result["label"] for a in Annotation.objects.filter(annotator__username="ann")}
    assert stored == chosen and len(stored) == 20
    assert skipped not in stored
    assert QueueItem.objects.get(pk=skipped).state == "open"
    assert page.evaluate("localStorage.length") == 0
    assert page.js_errors == []

    # The rest of the queue, then the end of it.
    for _ in range(4):
        item = current_item(page, item)
        page.keyboard.press("c")
        page.keyboard.press("Enter")
    expect(page.locator("#stage-message")).to_have_text("Nothing left to label in pets. Thanks!")
    expect(page.locator("#today-count")).to_have_text("24")
    shot(page, "label-04-empty")


def test_a_lost_submission_is_retried_after_reload(page, queue, shot):
    log_in(page, "ann", "pw-ann")
    blocked = {"on": True, "sent": 0}

    def lose_the_answer(route):
        # The first request reaches the server, but its answer never comes back; later ones fail outright.
        if blocked["on"]:
            if blocked["sent"] == 0:
                route.fetch()
            blocked["sent"] += 1
            route.abort()
        else:
            route.continue_()

    page.route("**/api/v1/labeling/items/*/annotations/", lose_the_answer)
    page.goto("/projects/pets/label/")
    item = current_item(page)
    page.keyboard.press("d")
    page.keyboard.press("Enter")
    current_item(page, item)
    expect(page.locator("#pending-info")).to_contain_text("waiting to be sent")
    shot(page, "label-05-pending")
    annotator_id = User.objects.get(username="ann").pk
    pending = json.loads(page.evaluate(f"localStorage.getItem('crucible.label.pending.{annotator_id}')"))
    assert [p["item"] for p in pending] == [item] and pending[0]["label"] == "dog"
    assert Annotation.objects.count() == 1  # stored, though the page does not know it

    blocked["on"] = False
    page.reload()
    expect(page.locator("#stage")).to_have_attribute("data-state", "ready")
    page.wait_for_function("localStorage.length === 0")
    expect(page.locator("#pending-info")).to_be_hidden()
    expect(page.locator("#today-count")).to_have_text("1")  # counted once, not again for the retry
    annotations = list(Annotation.objects.all())
    assert len(annotations) == 1
    assert (annotations[0].item_id, annotations[0].result, annotations[0].idempotency_key) == (
        item,
        {"label": "dog"},
        pending[0]["key"],
    )
    shot(page, "label-06-after-reload")
