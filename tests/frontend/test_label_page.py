"""The annotator page: every member of the project may open it, nobody else sees it."""

import json

import pytest

from crucible.core.models import Project, Role
from labeling import services

CLASSES = [{"name": "cat", "key": "c"}, {"name": "dog", "key": "d"}, {"name": "bird", "key": "b"}]


@pytest.fixture
def schema(project, engineer):
    return services.label_schema_set(project=project, user=engineer, classes=CLASSES)


def config(resp) -> dict:
    html = resp.content.decode()
    start = html.index('<script id="label-config" type="application/json">') + len(
        '<script id="label-config" type="application/json">'
    )
    return json.loads(html[start : html.index("</script>", start)])


@pytest.mark.parametrize("role", [Role.ANNOTATOR, Role.ENGINEER, Role.REVIEWER])
def test_label_page_renders_for_members(client, project, schema, member, role):
    client.force_login(member(project, role, f"user-{role}"))
    resp = client.get(f"/projects/{project.name}/label/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert "frontend/js/label.js" in html
    for cls in CLASSES:
        assert f'data-key="{cls["key"]}"' in html and cls["name"] in html
    assert "<kbd>Z</kbd> to undo" in html and "<kbd>S</kbd> to skip" in html
    cfg = config(resp)
    assert cfg["project_id"] == project.pk and cfg["today_count"] == 0
    assert cfg["kind"] == "single_label" and cfg["figures_every"] >= 1
    assert [c["key"] for c in cfg["classes"]] == ["c", "d", "b"]


def test_label_page_by_id_and_without_schema(client, project, annotator):
    client.force_login(annotator)
    resp = client.get(f"/projects/{project.pk}/label/")
    assert resp.status_code == 200
    assert b"has no label classes yet" in resp.content and b"label.js" not in resp.content


def test_label_page_is_404_for_outsiders(client, project, schema, make_user):
    client.force_login(make_user("outsider"))
    resp = client.get(f"/projects/{project.name}/label/")
    assert resp.status_code == 404
    assert b"cat" not in resp.content


def test_label_page_sends_anonymous_to_login(client, project, schema):
    resp = client.get(f"/projects/{project.name}/label/")
    assert resp.status_code == 302 and resp["Location"].startswith("/login/")


def test_home_links_members_to_the_label_page(client, project, annotator, engineer):
    Project.objects.create(name="secret")
    client.force_login(annotator)
    html = client.get("/").content.decode()
    assert f'href="/projects/{project.name}/label/"' in html
    assert 'href="/projects/secret/label/"' not in html
    assert f'href="/projects/{project.name}/"' not in html  # annotators do not open the project page
    client.force_login(engineer)
    html = client.get("/").content.decode()
    assert f'href="/projects/{project.name}/label/"' in html and f'href="/projects/{project.name}/"' in html


@pytest.mark.parametrize(
    ("kind", "help_text"),
    [
        ("single_label", "to pick it"),
        ("multi_label", "to switch it on or off"),
        ("boxes", "Drag on the image to draw a box"),
    ],
)
def test_label_page_renders_the_schema_kind(client, project, engineer, annotator, kind, help_text):
    services.label_schema_set(project=project, user=engineer, classes=CLASSES, kind=kind)
    client.force_login(annotator)
    resp = client.get(f"/projects/{project.name}/label/")
    html = resp.content.decode()
    assert config(resp)["kind"] == kind
    assert f'data-kind="{kind}"' in html and help_text in html
    others = {"single_label": "to pick it", "multi_label": "switch it on or off", "boxes": "Drag on the image"}
    assert not any(text in html for k, text in others.items() if k != kind)
    # Boxes get a colour per class (the colour of their boxes), in the order of the classes.
    swatches = [f'<i class="swatch c{i}"></i>' for i in range(len(CLASSES))]
    assert all(s in html for s in swatches) == (kind == "boxes")
    assert ('class="chips"' in html) == (kind != "single_label")


def test_label_page_leaves_out_the_hints_of_keys_taken_by_classes(client, project, engineer, annotator):
    classes = [{"name": "zebra", "key": "z"}, {"name": "snake", "key": "S"}]
    services.label_schema_set(project=project, user=engineer, classes=classes)
    client.force_login(annotator)
    html = client.get(f"/projects/{project.name}/label/").content.decode()
    assert 'data-key="z"' in html and 'data-key="S"' in html
    assert "<kbd>Z</kbd> to undo" not in html and "<kbd>S</kbd> to skip" not in html
    assert "Undo <kbd>Z</kbd>" not in html and "Skip <kbd>S</kbd>" not in html
    assert 'id="undo-btn"' in html and 'id="skip-btn"' in html  # the buttons stay


def test_label_page_has_places_for_the_annotators_figures_and_returned_work(client, project, schema, annotator):
    client.force_login(annotator)
    html = client.get(f"/projects/{project.name}/label/").content.decode()
    for element in ("today-count", "per-hour", "gold-accuracy", "returned-btn", "review-comment", "paused-reason"):
        assert f'id="{element}"' in html
    assert 'id="check-again"' in html and "Check again" in html
