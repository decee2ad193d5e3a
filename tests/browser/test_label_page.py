"""The annotator page in a real browser: labelling with the keyboard only, no lost submission, boxes drawn
with the mouse, multi-label, text items, undo, a paused annotator and returned work."""

import hashlib
import io
import json
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from PIL import Image, ImageDraw
from playwright.sync_api import expect

from crucible.core.models import Membership, Project, Role, User
from curation.models import Asset, ProjectAsset
from curation.texts import text_assets_import
from labeling import gold, review, services
from labeling.models import Annotation, Lease, QueueItem, ReviewTask
from tests.browser.conftest import log_in
from tests.labeling.conftest import CLASSES, add_assets

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
KEYS = {c["name"]: c["key"] for c in CLASSES}


@pytest.fixture(scope="module", autouse=True)
def warm_server(browser, live_server):
    """The first page the live server and the browser serve can take long on a busy machine: served
    once here, with time to spare, so that a test's own 30 s waits measure the page and not the start."""
    context = browser.new_context(base_url=live_server.url)
    context.new_page().goto("/login/", timeout=180_000)
    context.close()


def use_tmp_media(settings, tmp_path) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }


@pytest.fixture
def media(transactional_db, settings, tmp_path):
    use_tmp_media(settings, tmp_path)


@pytest.fixture
def queue(transactional_db, settings, tmp_path):
    use_tmp_media(settings, tmp_path)
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
    assert [p["item"] for p in pending] == [item] and pending[0]["result"] == {"label": "dog"}
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


def make_team(kind: str = "single_label") -> tuple[Project, User, User]:
    """The project "pets" of the given schema kind, with an engineer and an annotator."""
    engineer = User.objects.create_user(username="eng", password="pw-eng")
    annotator = User.objects.create_user(username="ann", password="pw-ann")
    project = Project.objects.create(name="pets")
    Membership.objects.create(project=project, user=engineer, role=Role.ENGINEER)
    Membership.objects.create(project=project, user=annotator, role=Role.ANNOTATOR)
    services.label_schema_set(project=project, user=engineer, classes=CLASSES, kind=kind)
    return project, engineer, annotator


def add_photo(project: Project, width: int, height: int) -> None:
    """A stored RGB picture of the given size (larger than the stage's scale-up limit for pixel art)."""
    image = Image.new("RGB", (width, height), (34, 60, 92))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width // 6, height // 6, width // 2, height * 5 // 6), fill=(230, 160, 60))
    draw.rectangle((width * 3 // 4, height * 5 // 8, width - 1, height - 1), fill=(80, 190, 120))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    data = buffer.getvalue()
    sha = hashlib.sha256(data).hexdigest()
    name = default_storage.save(f"assets/{sha}.png", ContentFile(data))
    asset = Asset.objects.create(
        sha256=sha, storage_name=name, size_bytes=len(data), width=width, height=height, mode="RGB", format="PNG"
    )
    ProjectAsset.objects.create(project=project, asset=asset)


def drag(page, start: tuple[float, float], end: tuple[float, float]) -> None:
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=8)
    page.mouse.up()


def test_boxes_drawn_with_the_mouse_are_stored_in_image_pixels(page, media, shot):
    project, engineer, _ = make_team("boxes")
    add_photo(project, 400, 240)
    services.queue_items_add(project=project, user=engineer)
    log_in(page, "ann", "pw-ann")
    page.goto("/projects/pets/label/")
    item = current_item(page)
    layer = page.locator("#box-layer")
    expect(layer).to_be_visible()
    r = layer.bounding_box()
    scale = r["width"] / 400
    assert scale > 1.5 and abs(r["height"] / 240 - scale) < 0.01  # shown scaled up, proportions kept

    def at(x: float, y: float) -> tuple[float, float]:
        return r["x"] + x * scale, r["y"] + y * scale

    expect(page.locator(".class-key.selected")).to_have_attribute("data-name", "cat")  # new boxes: the first class
    drag(page, at(40, 30), at(140, 110))  # a cat
    page.keyboard.press("d")
    drag(page, at(300, 150), at(460, 300))  # a dog, dragged past the image's corner: clamped to it
    expect(page.locator("#box-layer .box")).to_have_count(2)
    expect(page.locator("#box-layer .box.selected")).to_have_count(0)  # the key chose the class, nothing relabelled

    drag(page, at(90, 70), at(110, 80))  # the cat moved by (20, 10)
    drag(page, at(160, 120), at(180, 140))  # its bottom-right corner handle dragged by (20, 20)
    page.mouse.click(*at(350, 200))  # the dog selected, then made a bird
    page.keyboard.press("b")
    drag(page, at(200, 20), at(260, 60))  # a third box (a bird), then deleted
    expect(page.locator("#box-layer .box")).to_have_count(3)
    page.mouse.click(*at(230, 40))
    expect(page.locator("#box-layer .box.selected")).to_have_attribute("data-label", "bird")
    page.keyboard.press("Delete")
    expect(page.locator("#box-layer .box")).to_have_count(2)
    expect(page.locator("#chips")).to_have_text("2 boxes")
    page.mouse.click(*at(100, 60))  # the cat selected: handles on screen
    shot(page, "label-07-boxes")
    page.keyboard.press("Enter")
    expect(page.locator("#stage-message")).to_have_text("Nothing left to label in pets. Thanks!")
    page.wait_for_function("localStorage.length === 0")

    boxes = Annotation.objects.get(item_id=QueueItem.objects.get(pk=item).pk).result["boxes"]
    expected = [("cat", 60, 40, 120, 100), ("bird", 300, 150, 100, 90)]
    assert sorted(b["label"] for b in boxes) == ["bird", "cat"]
    for label, x, y, w, h in expected:
        (box,) = [b for b in boxes if b["label"] == label]
        got = (box["x"], box["y"], box["w"], box["h"])
        assert all(abs(g - e) <= 2 for g, e in zip(got, (x, y, w, h), strict=True)), (label, got)
        assert box["x"] + box["w"] <= 400 and box["y"] + box["h"] <= 240
    assert page.js_errors == []


def test_multi_label_keys_toggle_classes_shown_as_chips(page, media, shot):
    project, engineer, _ = make_team("multi_label")
    add_assets(project, 2, with_files=True)
    services.queue_items_add(project=project, user=engineer)
    log_in(page, "ann", "pw-ann")
    page.goto("/projects/pets/label/")
    first = current_item(page)
    for key in "cdcb":  # cat on, dog on, cat off, bird on
        page.keyboard.press(key)
    expect(page.locator("#chips .chip")).to_have_text(["dog", "bird"])
    expect(page.locator(".class-key.selected")).to_have_count(2)
    shot(page, "label-08-multi")
    page.keyboard.press("Enter")
    second = current_item(page, first)
    expect(page.locator("#chips .chip")).to_have_count(0)
    page.keyboard.press("Enter")  # no class at all is an answer too
    expect(page.locator("#stage-message")).to_have_text("Nothing left to label in pets. Thanks!")
    page.wait_for_function("localStorage.length === 0")
    stored = {a.item_id: a.result for a in Annotation.objects.all()}
    assert stored == {first: {"labels": ["bird", "dog"]}, second: {"labels": []}}


def test_a_text_item_is_shown_as_text_and_labelled(page, media, shot):
    project, engineer, _ = make_team()
    text = "<b>Not bold</b> & the cat sat on the mat.\nIt did not move all afternoon."
    text_assets_import(project=project, user=engineer, texts=[text])
    services.queue_items_add(project=project, user=engineer)
    log_in(page, "ann", "pw-ann")
    page.goto("/projects/pets/label/")
    item = current_item(page)
    shown = page.locator("#item-text")
    expect(shown).to_be_visible()
    expect(page.locator("#item-image")).to_be_hidden()
    assert shown.text_content() == text  # the markup is shown as text, not run as HTML
    expect(page.locator("#item-text b")).to_have_count(0)
    assert float(shown.evaluate("el => parseFloat(getComputedStyle(el).fontSize)")) >= 18
    page.keyboard.press("d")
    shot(page, "label-09-text")
    page.keyboard.press("Enter")
    expect(page.locator("#stage-message")).to_have_text("Nothing left to label in pets. Thanks!")
    page.wait_for_function("localStorage.length === 0")
    assert Annotation.objects.get(item_id=item).result == {"label": "dog"}


def test_z_undoes_the_last_submission_while_its_lease_lives(page, queue, shot):
    log_in(page, "ann", "pw-ann")
    page.goto("/projects/pets/label/")
    item = current_item(page)
    page.keyboard.press("c")
    page.keyboard.press("Enter")
    current_item(page, item)
    expect(page.locator("#today-count")).to_have_text("1")  # the server has it

    page.keyboard.press("z")
    expect(page.locator("#stage")).to_have_attribute("data-item", str(item))
    expect(page.locator("#stage")).to_have_attribute("data-state", "ready")
    expect(page.locator(".class-key.selected")).to_have_attribute("data-name", "cat")  # the answer given
    expect(page.locator("#today-count")).to_have_text("0")
    assert Annotation.objects.get(item_id=item).status == Annotation.Status.WITHDRAWN
    shot(page, "label-10-undone")

    page.keyboard.press("d")
    page.keyboard.press("Enter")
    current_item(page, item)
    expect(page.locator("#today-count")).to_have_text("1")
    assert Annotation.objects.get(item_id=item, status=Annotation.Status.SUBMITTED).result == {"label": "dog"}

    # Once the lease it was submitted through has run out, it stays.
    Lease.objects.filter(item_id=item).update(expires_at=timezone.now() - timedelta(seconds=1))
    page.keyboard.press("z")
    expect(page.locator("#label-note")).to_contain_text("Too late to undo")
    expect(page.locator("#stage")).not_to_have_attribute("data-item", str(item))
    assert Annotation.objects.get(item_id=item, status=Annotation.Status.SUBMITTED).result == {"label": "dog"}
    assert page.js_errors == []


def test_z_takes_back_a_submission_not_yet_sent(page, queue):
    page.route("**/api/v1/labeling/items/*/annotations/", lambda route: route.abort())
    log_in(page, "ann", "pw-ann")
    page.goto("/projects/pets/label/")
    item = current_item(page)
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    current_item(page, item)
    expect(page.locator("#pending-info")).to_contain_text("waiting to be sent")
    page.keyboard.press("z")
    expect(page.locator("#stage")).to_have_attribute("data-item", str(item))
    expect(page.locator(".class-key.selected")).to_have_attribute("data-name", "bird")
    page.wait_for_function("localStorage.length === 0")
    # The item is back once its image is on screen again; keys before that are not taken.
    expect(page.locator("#stage")).to_have_attribute("data-state", "ready")

    page.unroute("**/api/v1/labeling/items/*/annotations/")
    page.keyboard.press("c")
    page.keyboard.press("Enter")
    current_item(page, item)
    expect(page.locator("#today-count")).to_have_text("1")
    assert [(a.item_id, a.result) for a in Annotation.objects.all()] == [(item, {"label": "cat"})]


def test_a_paused_annotator_sees_the_reason_and_checks_again(page, queue, shot):
    engineer = User.objects.get(username="eng")
    annotator = User.objects.get(username="ann")
    reason = "Gold accuracy 60% over your last 10 gold items: please reread the guide."
    gold.annotator_pause(project=queue, user=engineer, annotator_id=annotator.pk, reason=reason)
    log_in(page, "ann", "pw-ann")
    page.goto("/projects/pets/label/")
    expect(page.locator("#paused-reason")).to_have_text(reason)
    expect(page.locator("#stage")).to_have_attribute("data-state", "paused")
    expect(page.locator("#check-again")).to_be_visible()
    expect(page.locator("#submit-btn")).to_be_disabled()
    shot(page, "label-11-paused")

    page.locator("#check-again").click()
    expect(page.locator("#label-note")).to_have_text("Still paused.")
    expect(page.locator("#paused-reason")).to_have_text(reason)
    expect(page.locator("#check-again")).to_be_enabled()
    gold.annotator_resume(project=queue, user=engineer, annotator_id=annotator.pk)
    page.locator("#check-again").click()
    current_item(page)
    expect(page.locator("#paused-box")).to_be_hidden()


def test_returned_work_is_revised_with_the_reviewers_comment(page, queue, shot):
    engineer = User.objects.get(username="eng")
    annotator = User.objects.get(username="ann")
    services.queue_settings_set(project=queue, user=engineer, review_rate=1.0)  # every submission is reviewed
    lease = services.lease_claim_next(project=queue, annotator=annotator)[0]
    first = services.annotation_submit(
        item_id=lease.item_id, annotator=annotator, result={"label": "cat"}, time_spent_ms=900, idempotency_key="k1"
    )
    task = ReviewTask.objects.get(annotation=first)
    review.review_decide(review_id=task.pk, user=engineer, action="reject", comment="Look again: that is a dog.")

    log_in(page, "ann", "pw-ann")
    page.goto("/projects/pets/label/")
    banner = page.locator("#returned-btn")
    expect(banner).to_have_text("1 returned by review")
    banner.click()
    expect(page.locator("#review-comment")).to_have_text("Look again: that is a dog.")
    expect(page.locator("#stage")).to_have_attribute("data-item", str(lease.item_id))
    expect(page.locator("#stage")).to_have_attribute("data-state", "ready")
    expect(page.locator(".class-key.selected")).to_have_attribute("data-name", "cat")  # the answer returned
    shot(page, "label-12-returned")
    page.keyboard.press("d")
    page.keyboard.press("Enter")
    expect(page.locator("#review-note")).to_be_hidden()
    expect(banner).to_be_hidden()
    current_item(page, lease.item_id)  # back to the queue
    revision = Annotation.objects.get(revision_of=first)
    assert (revision.item_id, revision.result) == (lease.item_id, {"label": "dog"})


def test_the_annotators_figures_come_from_the_server_and_are_refreshed(page, queue):
    asked = []

    def figures(route):
        asked.append(route.request.url)
        body = {
            "today": 40 + len(asked),
            "total": 300,
            "per_hour": 182.6,
            "gold": {"answered": 23, "correct": 21, "accuracy": 21 / 23, "per_class": {}},
            "paused": False,
            "reason": "",
            "returned": 0,
        }
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route("**/api/v1/projects/*/me/", figures)
    log_in(page, "ann", "pw-ann")
    page.goto("/projects/pets/label/")
    expect(page.locator("#gold-accuracy")).to_have_text("91% (23)")
    expect(page.locator("#per-hour")).to_have_text("183")
    expect(page.locator("#today-count")).to_have_text("41")
    item = None
    for _ in range(5):
        item = current_item(page, item)
        page.keyboard.press("c")
        page.keyboard.press("Enter")
    expect(page.locator("#today-count")).to_have_text("42")  # asked again after five submissions
    assert len(asked) == 2
    expect(page.locator("#returned-btn")).to_be_hidden()
