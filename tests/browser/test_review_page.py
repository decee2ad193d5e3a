"""The review page in a real browser: a reviewer accepts, rejects with a comment and fixes with the keys,
and keeps a vote of a box disagreement; the server's state follows."""

import pytest
from playwright.sync_api import expect

from crucible.core.models import Membership, Project, Role, User
from curation.models import ProjectAsset
from labeling import services
from labeling.models import Annotation, QueueItem, ReviewTask
from tests.browser.conftest import log_in
from tests.labeling.conftest import CLASSES, add_assets

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The machine running the suite may be busy: waits are generous, they end as soon as the page is ready.
expect.set_options(timeout=20_000)


@pytest.fixture
def page(page):
    page.set_default_timeout(90_000)
    return page


def _users(project: Project) -> tuple[User, User]:
    engineer = User.objects.create_user(username="eng", password="pw-eng")
    Membership.objects.create(project=project, user=engineer, role=Role.ENGINEER)
    reviewer = User.objects.create_user(username="rev", password="pw-rev")
    Membership.objects.create(project=project, user=reviewer, role=Role.REVIEWER)
    return engineer, reviewer


def _member(project: Project, name: str) -> User:
    user = User.objects.create_user(username=name, password=f"pw-{name}")
    Membership.objects.create(project=project, user=user, role=Role.ANNOTATOR)
    return user


def _submit_all(project: Project, annotator: User, answer) -> None:
    n = 0
    while leases := services.lease_claim_next(project=project, annotator=annotator):
        for lease in leases:
            services.annotation_submit(
                item_id=lease.item_id,
                annotator=annotator,
                result=answer(n),
                time_spent_ms=1200,
                idempotency_key=f"{annotator.username}-{lease.item_id}",
            )
            n += 1


@pytest.fixture
def sampled(transactional_db):
    """Three cat/dog/bird items, each labelled "cat" by ann and every submission sampled for review."""
    project = Project.objects.create(name="pets")
    engineer, _reviewer = _users(project)
    services.label_schema_set(project=project, user=engineer, classes=CLASSES)
    services.queue_settings_set(project=project, user=engineer, review_rate=1.0, gold_rate=0.0)
    add_assets(project, 3, with_files=True)
    services.queue_items_add(project=project, user=engineer)
    _submit_all(project, _member(project, "ann"), lambda n: {"label": "cat"})
    assert ReviewTask.objects.filter(project=project, state="open").count() == 3
    return project


def test_reviewer_accepts_rejects_and_fixes_with_the_keys(page, sampled, shot):
    first, second, third = ReviewTask.objects.filter(project=sampled).order_by("pk")
    log_in(page, "rev", "pw-rev")
    page.goto("/projects/pets/review/")
    expect(page.locator("#reviewer")).to_have_attribute("data-ready", "true")
    expect(page.locator("#count-open")).to_have_text("3")
    expect(page.locator("#review-annotator")).to_have_text("by ann")
    expect(page.locator("#review-chips .chip")).to_have_text("cat")
    expect(page.locator("#review-position")).to_have_text("1 of 3 loaded")
    page.wait_for_function("document.getElementById('review-image').naturalWidth > 0")
    shot(page, "review-page")

    page.keyboard.press("a")
    expect(page.locator("#count-accepted")).to_have_text("1")
    expect(page.locator("#count-open")).to_have_text("2")

    page.keyboard.press("r")
    expect(page.locator("#reject-form")).to_be_visible()
    page.keyboard.press("Enter")  # no comment yet: refused on the page
    expect(page.locator("#review-error")).to_contain_text("needs a comment")
    page.fill("#reject-comment", "this one is a dog")
    page.keyboard.press("Enter")
    expect(page.locator("#count-rejected")).to_have_text("1")

    page.keyboard.press("f")
    expect(page.locator("#fix-bar")).to_be_visible()
    page.keyboard.press("d")
    expect(page.locator("#fix-chips .chip")).to_have_text("dog")
    page.keyboard.press("Enter")
    expect(page.locator("#count-fixed")).to_have_text("1")
    expect(page.locator("#review-message")).to_have_text("No open reviews left. Well done.")
    expect(page.locator("#count-session")).to_have_text("3")

    states = dict(ReviewTask.objects.filter(project=sampled).values_list("pk", "state"))
    assert states == {first.pk: "accepted", second.pk: "rejected", third.pk: "fixed"}
    second.refresh_from_db()
    third.refresh_from_db()
    assert second.comment == "this one is a dog" and second.reviewer.username == "rev"
    assert third.fixed_result == {"label": "dog"}
    assert Annotation.objects.get(pk=first.annotation_id).status == "accepted"
    assert Annotation.objects.get(pk=second.annotation_id).status == "rejected"
    assert Annotation.objects.get(pk=third.annotation_id).status == "fixed"
    assert ProjectAsset.objects.get(pk=third.item.project_asset_id).label == "dog"
    assert page.js_errors == []


def test_reviewer_keeps_a_vote_of_a_box_disagreement_and_fixes_another(page, transactional_db, shot):
    project = Project.objects.create(name="boxes")
    engineer, _reviewer = _users(project)
    services.label_schema_set(project=project, user=engineer, classes=CLASSES, kind="boxes")
    services.queue_settings_set(project=project, user=engineer, review_rate=0.0, gold_rate=0.0)
    add_assets(project, 2, with_files=True)
    services.queue_items_add(project=project, user=engineer, required_annotations=2)
    cat = {"label": "cat", "x": 2.0, "y": 2.0, "w": 12.0, "h": 10.0}
    dog = {"label": "dog", "x": 14.0, "y": 12.0, "w": 12.0, "h": 14.0}
    _submit_all(project, _member(project, "ann"), lambda n: {"boxes": [cat]})
    _submit_all(project, _member(project, "bea"), lambda n: {"boxes": [cat, dog]})
    review, other = ReviewTask.objects.filter(project=project, state="open").order_by("pk")
    assert review.reason == other.reason == "disagreement"

    log_in(page, "rev", "pw-rev")
    page.goto("/projects/boxes/review/")
    expect(page.locator("#reviewer")).to_have_attribute("data-ready", "true")
    expect(page.locator("#review-annotator")).to_have_text("2 votes, no majority")
    expect(page.locator("#votes-list li")).to_have_count(2)
    expect(page.locator("#reject-btn")).to_be_disabled()
    expect(page.locator("#review-boxes g")).to_have_count(1)  # ann's vote is shown first
    page.keyboard.press("2")
    expect(page.locator("#review-boxes g")).to_have_count(2)
    expect(page.locator("#votes-list li.shown")).to_contain_text("bea")
    page.wait_for_function("document.getElementById('review-image').naturalWidth > 0")
    shot(page, "review-page-boxes")
    page.keyboard.press("a")
    expect(page.locator("#count-accepted")).to_have_text("1")

    # The other item: bea's vote again, its second box (dog) relabelled bird with the keys.
    expect(page.locator("#review-position")).to_have_text("1 of 1 loaded")
    page.keyboard.press("2")
    page.keyboard.press("f")
    expect(page.locator("#review-boxes g.selected")).to_have_count(1)
    page.keyboard.press("Tab")
    page.keyboard.press("b")
    expect(page.locator("#fix-chips .chip")).to_have_text(["cat \u00d7 1", "bird \u00d7 1"])
    page.keyboard.press("Enter")
    expect(page.locator("#count-fixed")).to_have_text("1")
    other.refresh_from_db()
    assert other.state == "fixed"
    assert sorted(b["label"] for b in other.fixed_result["boxes"]) == ["bird", "cat"]
    assert sorted(b["label"] for b in QueueItem.objects.get(pk=other.item_id).consensus_result["boxes"]) == [
        "bird",
        "cat",
    ]

    review.refresh_from_db()
    bea_vote = Annotation.objects.get(item=review.item, annotator__username="bea")
    assert review.state == "accepted" and review.fixed_result == bea_vote.result
    item = QueueItem.objects.get(pk=review.item_id)
    assert item.consensus_result == {"boxes": [cat, dog]}
    assert page.js_errors == []
