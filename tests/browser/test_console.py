"""The engineer console in a real browser: log in, project, dataset, a run that trains while watched."""

import json
import re

import pytest
from playwright.sync_api import expect

from crucible.core.models import Membership, Project, Role, User
from tests.browser.conftest import log_in
from tests.frontend.builders import (
    CLASSES,
    add_epochs,
    make_assets,
    make_dataset,
    make_import,
    make_items,
    make_run,
    red_two_png,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def world(transactional_db):
    engineer = User.objects.create_user(username="eng", password="pw-eng")
    project = Project.objects.create(name="digits", description="The DIGITS walkthrough: 28x28 digits 0-9")
    Membership.objects.create(project=project, user=engineer, role=Role.ENGINEER)
    job = make_import(project, engineer)
    make_import(
        project,
        engineer,
        source_label="upload.zip",
        source_kind="zip",
        status="failed",
        total=0,
        processed=0,
        imported=0,
        errors=[],
        message="the zip has no entries",
    )
    assets = make_assets(project, job, per_class=4, store=True)
    dataset = make_dataset(project, engineer)
    make_items(dataset, assets)
    done = make_run(dataset, engineer, status="done")
    add_epochs(done, 1, 30)
    return {"engineer": engineer, "project": project, "dataset": dataset, "done": done}


def test_login_and_project_page(page, world, shot):
    page.goto("/projects/digits/")
    assert "/login/" in page.url  # anonymous: sent to the login form
    shot(page, "01-login")
    log_in(page, "eng", "pw-eng")
    page.goto("/")
    expect(page.locator("table.grid")).to_contain_text("digits")
    expect(page.locator("table.grid")).to_contain_text("engineer")
    shot(page, "02-home")
    page.click("text=digits")
    page.wait_for_url("**/projects/digits/")
    expect(page.locator("#imports")).to_contain_text("/data/train_small")
    expect(page.locator("#imports")).to_contain_text("the zip has no entries")
    expect(page.locator(".classcell")).to_have_count(len(CLASSES))
    expect(page.locator("#datasets")).to_contain_text("minidata")
    expect(page.locator("#runs")).to_contain_text("TestA")

    # A folder outside the import roots: the API's error message is shown, nothing is added.
    page.check('input[name="kind"][value="folder"]')
    page.fill('input[name="path"]', "/etc")
    page.click("#import-form button[type=submit]")
    error = page.locator("#import-form .error-box")
    expect(error).to_be_visible()
    assert error.inner_text().strip()
    assert "HTTP" not in error.inner_text() and "{" not in error.inner_text()
    expect(page.locator("#import-table tr.import-row")).to_have_count(2)

    # A dataset that breaks the split rule: the API refuses it and the page says why.
    page.fill('#dataset-form input[name="name"]', "broken")
    page.fill('#dataset-form input[name="val_percent"]', "80")
    page.fill('#dataset-form input[name="test_percent"]', "40")
    page.click("#dataset-form button[type=submit]")
    expect(page.locator("#dataset-form .error-box")).to_be_visible()
    shot(page, "03-project")
    assert page.js_errors == []


def test_dataset_page_draws_histograms_and_gallery(page, world, shot):
    log_in(page, "eng", "pw-eng")
    page.goto(f"/datasets/{world['dataset'].pk}/")
    page.wait_for_function("() => window.Chart && Chart.getChart(document.getElementById('hist-train'))")
    chart = page.evaluate(
        """() => {
            const c = Chart.getChart(document.getElementById('hist-train'));
            return {labels: c.data.labels, data: c.data.datasets[0].data, bars: c.getDatasetMeta(0).data.length};
        }"""
    )
    assert chart["labels"] == CLASSES
    assert chart["data"][CLASSES.index("9")] == 466
    assert chart["bars"] == len(CLASSES)
    # The canvas has really been painted: some pixels are not transparent.
    painted = page.evaluate(
        """() => {
            const canvas = document.getElementById('hist-train');
            const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let n = 0; for (let i = 3; i < pixels.length; i += 4) if (pixels[i]) n++;
            return n;
        }"""
    )
    assert painted > 1000
    assert page.evaluate("() => !!Chart.getChart(document.getElementById('hist-val'))")
    # Gallery: thumbnails of every class, loaded through the API, drawn pixelated.
    expect(page.locator("#gallery .gallery-row")).to_have_count(len(CLASSES))
    page.wait_for_function(
        "() => [...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth === 28)"
    )
    rendering = page.eval_on_selector("#gallery img", "img => getComputedStyle(img).imageRendering")
    assert rendering == "pixelated"
    expect(page.locator("#run-form")).to_be_visible()
    shot(page, "04-dataset")
    assert page.js_errors == []


def test_run_curves_grow_while_the_page_is_open(page, world, shot):
    dataset = world["dataset"]
    run = make_run(dataset, world["engineer"], name="TestA-Clone", cloned_from=world["done"], status="running")
    log_in(page, "eng", "pw-eng")
    page.goto(f"/runs/{run.pk}/")
    count = "() => window.crucibleRun && window.crucibleRun.charts.loss.data.datasets[0].data.length"
    page.wait_for_function(f"{count} === 0")
    expect(page.locator("#download-epoch option")).to_have_text(["none yet"])
    add_epochs(run, 1, 3)  # the first epochs finish while the page is open
    page.wait_for_function(f"{count} === 3", timeout=15_000)
    expect(page.locator("#download-epoch option")).to_have_text(["3", "2", "1"])
    expect(page.locator("#download-link")).to_have_attribute("href", f"/api/v1/runs/{run.pk}/model/?epoch=3")
    expect(page.locator("#run-epoch")).to_have_text("3")
    expect(page.locator("#lineage")).to_contain_text("TestA")
    shot(page, "05-run-early")

    add_epochs(run, 4, 12)  # the worker finishes more epochs
    page.wait_for_function(f"{count} === 12", timeout=15_000)
    assert page.evaluate("() => window.crucibleRun.charts.accuracy.data.datasets[0].data.length") == 12
    expect(page.locator("#run-epoch")).to_have_text("12")
    expect(page.locator("#epoch-table tbody tr")).to_have_count(12)
    expect(page.locator("#download-epoch option")).to_have_count(12)
    width = page.eval_on_selector("#run-bar", "el => parseFloat(el.style.width)")
    assert width == pytest.approx(40.0, abs=0.1)

    run.refresh_from_db()
    run.status = "done"
    run.save(update_fields=["status"])
    expect(page.locator("#run-status")).to_have_text("done", timeout=15_000)
    expect(page.locator("#abort-btn")).to_be_hidden()
    shot(page, "06-run-grown")
    assert page.js_errors == []


CLASSIFY_ANSWER = {
    "top": [
        {"label": "7", "probability": 0.412},
        {"label": "2", "probability": 0.2121},
        {"label": "3", "probability": 0.15},
        {"label": "1", "probability": 0.1},
        {"label": "9", "probability": 0.05},
    ],
    "preprocessing": ["converted RGB to grayscale", "resized 64x64 to 28x28 (squash)"],
    "warnings": [
        {
            "code": "polarity",
            "message": "This image is dark on light; the training images are light on dark.",
            "advice": "Invert the image, or add such images to the dataset and retrain.",
        }
    ],
}


def test_classify_one_image_shows_top5_steps_and_warnings(page, world, shot, tmp_path):
    run = world["done"]
    answer = dict(CLASSIFY_ANSWER, run=run.pk, epoch=10)
    seen = {}

    # The page's rendering of the classify contract, independent of a trained checkpoint.
    def fulfil(route):
        seen["body"] = route.request.post_data_buffer
        seen["csrf"] = route.request.headers.get("x-csrftoken")
        route.fulfill(status=200, content_type="application/json", body=json.dumps(answer))

    page.route(re.compile(rf".*/api/v1/runs/{run.pk}/classify/$"), fulfil)
    image = tmp_path / "red-2.png"
    image.write_bytes(red_two_png())
    log_in(page, "eng", "pw-eng")
    page.goto(f"/runs/{run.pk}/")
    page.select_option("#classify-form select[name=epoch]", "10")
    page.set_input_files("#classify-form input[name=image]", str(image))
    page.click("#classify-form button[type=submit]")
    expect(page.locator("#classify-result")).to_be_visible()
    expect(page.locator("#classify-top li")).to_have_count(5)
    expect(page.locator("#classify-top li").first).to_contain_text("41.20%")
    expect(page.locator("#classify-steps")).to_contain_text("converted RGB to grayscale")
    expect(page.locator("#classify-warnings .warning")).to_contain_text("Invert the image")
    expect(page.locator("#classify-epoch")).to_have_text("model at epoch 10")
    assert seen["csrf"]
    assert b'name="epoch"' in seen["body"] and b"10" in seen["body"]
    shot(page, "07-classify")
    assert page.js_errors == []


def test_classify_error_from_the_api_is_readable(page, world, tmp_path):
    """The real API: a run with no checkpoint file for the epoch answers with an error body."""
    run = make_run(world["dataset"], world["engineer"], name="Empty", status="queued")
    image = tmp_path / "red-2.png"
    image.write_bytes(red_two_png())
    log_in(page, "eng", "pw-eng")
    page.goto(f"/runs/{run.pk}/")
    page.set_input_files("#classify-form input[name=image]", str(image))
    page.click("#classify-form button[type=submit]")
    error = page.locator("#classify-one .error-box")
    expect(error).to_be_visible()
    assert "no finished epoch" in error.inner_text()
    expect(page.locator("#classify-result")).to_be_hidden()


def _zip_of_classes(path):
    import zipfile

    from tests.frontend.builders import digit_png

    with zipfile.ZipFile(path, "w") as archive:
        for digit in range(2):
            for k in range(3):
                archive.writestr(f"small/{digit}/{k}.png", digit_png(digit, k))
    return path


def test_zip_import_row_follows_the_job(page, world, shot, tmp_path):
    from curation.models import ImportJob

    log_in(page, "eng", "pw-eng")
    page.goto("/projects/digits/")
    page.set_input_files("#import-form input[name=file]", str(_zip_of_classes(tmp_path / "small.zip")))
    page.click("#import-form button[type=submit]")
    rows = page.locator("#import-table tr.import-row")
    expect(rows).to_have_count(3)
    new_row = rows.first
    expect(new_row).to_contain_text("zip")
    job = ImportJob.objects.filter(project=world["project"]).order_by("-pk").first()
    assert new_row.get_attribute("data-import-id") == str(job.pk)
    # The worker (not running in this test) makes progress; the row follows without a reload.
    ImportJob.objects.filter(pk=job.pk).update(status="running", total=6, processed=3, imported=3)
    expect(new_row.locator('[data-field="progress"]')).to_have_text("3 / 6", timeout=10_000)
    ImportJob.objects.filter(pk=job.pk).update(
        status="done", processed=6, imported=5, duplicates=1, errors=[{"path": "small/1/2.png", "reason": "bad"}]
    )
    expect(new_row.locator('[data-field="status"]')).to_have_text("done", timeout=10_000)
    expect(new_row.locator('[data-field="imported"]')).to_have_text("5")
    expect(new_row).to_contain_text("1 unreadable")
    expect(page.locator("#classes-stale")).to_be_visible()
    assert page.js_errors == []


def test_forms_create_a_dataset_and_a_run_then_clone_it(page, world, shot):
    log_in(page, "eng", "pw-eng")
    page.goto("/projects/digits/")
    page.fill('#dataset-form input[name="name"]', "minidata2")
    page.fill('#dataset-form input[name="split_seed"]', "77")
    page.click("#dataset-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/datasets/\d+/$"))
    expect(page.locator("h1")).to_have_text("Dataset minidata2")
    expect(page.locator(".facts")).to_contain_text("77")
    page.wait_for_function(
        "() => document.querySelectorAll('#gallery img').length"
        " && [...document.querySelectorAll('#gallery img')].every(i => i.complete)"
    )
    shot(page, "08-dataset-materializing")

    page.goto(f"/datasets/{world['dataset'].pk}/")
    page.fill('#run-form input[name="name"]', "TestC")
    page.fill('#run-form input[name="seed"]', "7")
    page.select_option('#run-form select[name="from_run"]', str(world["done"].pk))
    page.fill('#run-form input[name="from_epoch"]', "25")
    page.click("#run-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/runs/\d+/$"))
    expect(page.locator("h1")).to_have_text("Run TestC")
    expect(page.locator("#lineage")).to_contain_text("TestA @ epoch 25")

    page.click(".clone-btn[data-new-seed=true]")
    page.wait_for_url(re.compile(r".*/runs/\d+/$"))
    expect(page.locator("#lineage dd").first).to_have_text("TestC")
    assert "<code>7</code>" not in page.content()  # a new seed, recorded
    shot(page, "09-run-clone")
    assert page.js_errors == []


def test_classify_many_shows_accuracy_and_confusion(page, world, shot, tmp_path):
    run = world["done"]
    answer = {
        "run": run.pk,
        "epoch": 30,
        "results": [
            {"name": "0/a.png", "label": "0", "top": [{"label": "0", "probability": 0.9}], "warnings": []},
            {"name": "0/b.png", "label": "0", "top": [{"label": "1", "probability": 0.6}], "warnings": []},
            {
                "name": "1/c.png",
                "label": "1",
                "top": [{"label": "1", "probability": 0.8}],
                "warnings": [{"code": "size", "message": "64x64, not 28x28", "advice": "Resize first."}],
            },
        ],
        "accuracy": 2 / 3,
        "confusion": {"labels": ["0", "1"], "matrix": [[1, 1], [0, 1]]},
    }
    page.route(
        re.compile(rf".*/api/v1/runs/{run.pk}/classify-many/$"),
        lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(answer)),
    )
    log_in(page, "eng", "pw-eng")
    page.goto(f"/runs/{run.pk}/")
    page.set_input_files("#classify-many-form input[name=file]", str(_zip_of_classes(tmp_path / "test.zip")))
    page.click("#classify-many-form button[type=submit]")
    expect(page.locator("#many-accuracy")).to_have_text("66.67%")
    cells = page.locator("#classify-many-result table.confusion tbody td")
    expect(cells).to_have_text(["1", "1", "0", "1"])
    expect(page.locator("#classify-many-result")).to_contain_text("1 image does not look like the training data")
    page.click("#classify-many-result summary")
    expect(page.locator("#classify-many-result tr.wrong")).to_have_count(1)
    shot(page, "10-classify-many")
    assert page.js_errors == []


def test_annotator_sees_a_readable_403(page, world, shot):
    annotator = User.objects.create_user(username="ann", password="pw-ann")
    Membership.objects.create(project=world["project"], user=annotator, role=Role.ANNOTATOR)
    log_in(page, "ann", "pw-ann")
    expect(page.locator("table.grid")).to_contain_text("annotator")
    assert page.locator('a[href="/projects/digits/"]').count() == 0
    response = page.goto(f"/datasets/{world['dataset'].pk}/")
    assert response.status == 403
    expect(page.locator("h1")).to_contain_text("Not allowed here")
    expect(page.locator("main")).not_to_contain_text("minidata")
    shot(page, "11-annotator-403")
