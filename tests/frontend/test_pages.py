"""The console's pages: what an engineer sees, and who sees nothing."""

import json

import pytest
from django.urls import reverse

from crucible.core.models import Membership, Project, Role
from tests.frontend.builders import add_epochs, make_assets, make_dataset, make_import, make_run


@pytest.fixture
def world(project, engineer):
    """A project with an import, labelled assets, a dataset and runs with lineage."""
    job = make_import(project, engineer)
    make_import(project, engineer, status="running", total=100, processed=40, imported=38, duplicates=2, errors=[])
    make_assets(project, job)
    dataset = make_dataset(project, engineer)
    run = make_run(dataset, engineer, status="done")
    add_epochs(run, 1, 30)
    clone = make_run(dataset, engineer, name="TestA-Clone", cloned_from=run, status="running")
    add_epochs(clone, 1, 3)
    cont = make_run(dataset, engineer, name="TestB", parent_run=run, parent_epoch=30, status="queued")
    return {"job": job, "dataset": dataset, "run": run, "clone": clone, "cont": cont}


def page(client, user, url):
    client.force_login(user)
    return client.get(url)


def test_login_page_renders_the_form(client, db):
    resp = client.get(reverse("frontend:login"))
    assert resp.status_code == 200
    assert b'name="username"' in resp.content and b'name="password"' in resp.content


def test_login_form_logs_in_and_goes_home(client, engineer):
    resp = client.post(reverse("frontend:login"), {"username": "eng", "password": "pw-eng"})
    assert resp.status_code == 302 and resp["Location"] == reverse("frontend:home")


def test_wrong_password_says_so(client, engineer):
    resp = client.post(reverse("frontend:login"), {"username": "eng", "password": "nope"})
    assert resp.status_code == 200
    assert b"did not match" in resp.content


def test_logout_is_a_post_and_returns_to_login(client, engineer):
    client.force_login(engineer)
    resp = client.post(reverse("frontend:logout"))
    assert resp.status_code == 302 and resp["Location"] == reverse("frontend:login")
    assert client.get(reverse("frontend:home")).status_code == 302


def test_home_lists_projects_with_role(client, project, engineer, make_user):
    other = Project.objects.create(name="other")
    Membership.objects.create(project=other, user=engineer, role=Role.ANNOTATOR)
    Project.objects.create(name="secret")
    resp = page(client, engineer, "/")
    html = resp.content.decode()
    assert resp.status_code == 200
    assert 'href="/projects/digits/"' in html and "engineer" in html
    assert "other" in html and 'href="/projects/other/"' not in html  # annotator: no console link
    assert "secret" not in html
    assert 'href="/admin/"' not in html  # not staff
    assert 'href="/api/v1/docs/"' in html


def test_staff_sees_the_admin_link(client, admin_user, project):
    assert 'href="/admin/"' in page(client, admin_user, "/").content.decode()


def test_project_page_shows_imports_classes_datasets_runs(client, engineer, world, django_assert_max_num_queries):
    client.force_login(engineer)
    with django_assert_max_num_queries(12):
        resp = client.get("/projects/digits/")
    html = resp.content.decode()
    assert resp.status_code == 200
    assert "/data/train_small" in html and "6000" in html
    assert "train_small/3/broken.png" in html and "not an image" in html  # unreadable files by name
    assert 'data-status="running"' in html and "40 / 100" in html
    assert "10 classes, 30 labelled images" in html
    assert f'href="/datasets/{world["dataset"].pk}/"' in html and "grayscale 28\u00d728" in html
    assert ">4552<" in html  # train total
    assert f'href="/runs/{world["run"].pk}/"' in html and "TestA-Clone" in html and "TestB" in html
    assert "99.00%" in html  # TestA's best validation accuracy
    assert 'id="import-form"' in html and 'id="dataset-form"' in html
    assert f'data-url="/api/v1/projects/{world["job"].project_id}/imports/"' in html


def test_project_page_query_count_does_not_grow_with_rows(client, engineer, world, django_assert_max_num_queries):
    for i in range(10):
        dataset = make_dataset(world["dataset"].project, engineer, name=f"more{i}")
        make_run(dataset, engineer, name=f"run{i}")
        make_import(world["dataset"].project, engineer)
    client.force_login(engineer)
    with django_assert_max_num_queries(12):
        assert client.get("/projects/digits/").status_code == 200


def test_project_page_by_id_works_too(client, engineer, project):
    assert page(client, engineer, f"/projects/{project.pk}/").status_code == 200


def test_reviewer_reads_without_write_forms(client, project, member, world):
    reviewer = member(project, Role.REVIEWER, "rev")
    html = page(client, reviewer, "/projects/digits/").content.decode()
    assert "TestA" in html
    assert 'id="import-form"' not in html and 'id="dataset-form"' not in html
    html = page(client, reviewer, f"/datasets/{world['dataset'].pk}/").content.decode()
    assert 'id="run-form"' not in html
    html = page(client, reviewer, f"/runs/{world['run'].pk}/").content.decode()
    assert 'id="abort-btn"' not in html and "clone-btn" not in html


def test_dataset_page_shows_spec_counts_and_run_form(client, engineer, world, django_assert_max_num_queries):
    ds = world["dataset"]
    client.force_login(engineer)
    with django_assert_max_num_queries(10):
        resp = client.get(f"/datasets/{ds.pk}/")
    html = resp.content.decode()
    assert resp.status_code == 200
    assert "Dataset minidata" in html and "1234" in html and "ab" * 32 in html
    assert 'id="hist-train"' in html and 'id="hist-val"' in html and 'id="hist-test"' not in html
    data = json.loads(resp.context["chart"] and json.dumps(resp.context["chart"]))
    assert data["counts"]["train"]["9"] == 466
    assert f'data-url="/api/v1/datasets/{ds.pk}/runs/"' in html
    assert f'data-url="/api/v1/datasets/{ds.pk}/gallery/"' in html
    assert 'value="30"' in html and 'value="64"' in html and 'value="0.01"' in html
    assert f'<option value="{world["run"].pk}" data-last-epoch="30">' in html  # continue-from choices
    assert "vendor/chartjs/chart.umd.min.js" in html


def test_materializing_dataset_has_no_run_form_yet(client, engineer, project):
    ds = make_dataset(project, engineer, status="materializing", counts={}, content_hash="")
    html = page(client, engineer, f"/datasets/{ds.pk}/").content.decode()
    assert 'data-status="materializing"' in html and 'id="run-form"' not in html
    assert "refreshes when they are ready" in html


def test_run_page_shows_progress_config_lineage_epochs(client, engineer, world, django_assert_max_num_queries):
    run = world["run"]
    client.force_login(engineer)
    with django_assert_max_num_queries(10):
        resp = client.get(f"/runs/{run.pk}/")
    html = resp.content.decode()
    assert resp.status_code == 200
    assert "Run TestA" in html and "lenet" in html and "<code>42</code>" in html
    assert 'id="run-epoch">30<' in html and 'id="run-total">30<' in html
    assert "TestA-Clone" in html and "TestB" in html and "from epoch 30" in html
    assert html.count('<tr><td class="num">') == 30  # one row per epoch
    assert f'href="/api/v1/runs/{run.pk}/model/?epoch=30"' in html
    assert f'data-url="/api/v1/runs/{run.pk}/classify/"' in html
    assert f'data-url="/api/v1/runs/{run.pk}/classify-many/"' in html
    assert 'id="abort-btn" class="danger" hidden' in html  # finished: nothing to abort
    payload = resp.context["payload"]
    assert len(payload["epochs"]) == 30 and payload["status"] == "done"


def test_clone_page_links_back_to_its_origin(client, engineer, world):
    html = page(client, engineer, f"/runs/{world['clone'].pk}/").content.decode()
    assert f'href="/runs/{world["run"].pk}/">TestA</a>' in html
    html = page(client, engineer, f"/runs/{world['cont'].pk}/").content.decode()
    assert f'href="/runs/{world["run"].pk}/">TestA</a> @ epoch 30' in html
    assert "No epoch finished yet" in html


@pytest.mark.parametrize("which", ["project", "dataset", "run"])
def test_annotator_gets_a_readable_403(client, annotator, world, which):
    url = {
        "project": "/projects/digits/",
        "dataset": f"/datasets/{world['dataset'].pk}/",
        "run": f"/runs/{world['run'].pk}/",
    }[which]
    resp = page(client, annotator, url)
    assert resp.status_code == 403
    html = resp.content.decode()
    assert "Not allowed here" in html and "annotator" in html
    assert "TestA" not in html and "minidata" not in html


@pytest.mark.parametrize("which", ["project", "dataset", "run", "missing-dataset", "missing-run"])
def test_outsider_gets_404(client, make_user, world, which):
    outsider = make_user("outsider")
    url = {
        "project": "/projects/digits/",
        "dataset": f"/datasets/{world['dataset'].pk}/",
        "run": f"/runs/{world['run'].pk}/",
        "missing-dataset": "/datasets/999999/",
        "missing-run": "/runs/999999/",
    }[which]
    resp = page(client, outsider, url)
    assert resp.status_code == 404
    assert "minidata" not in resp.content.decode() and "TestA" not in resp.content.decode()


@pytest.mark.parametrize("url", ["/", "/projects/digits/", "/datasets/1/", "/runs/1/"])
def test_anonymous_is_sent_to_login(client, db, url):
    resp = client.get(url)
    assert resp.status_code == 302
    assert resp["Location"].startswith("/login/?next=")


def test_static_files_are_found(client, db):
    from django.contrib.staticfiles import finders

    for name in [
        "frontend/console.css",
        "frontend/js/api.js",
        "frontend/js/charts.js",
        "frontend/js/project.js",
        "frontend/js/dataset.js",
        "frontend/js/run.js",
        "vendor/chartjs/chart.umd.min.js",
    ]:
        assert finders.find(name), name
