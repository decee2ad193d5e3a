import pytest

from crucible.core.models import Project


def test_token_login_and_me(client, make_user):
    make_user("alice", staff=True)
    resp = client.post(
        "/api/v1/auth/token/", {"username": "alice", "password": "pw-alice"}, content_type="application/json"
    )
    assert resp.status_code == 200
    token = resp.json()["token"]
    me = client.get("/api/v1/me/", HTTP_AUTHORIZATION=f"Token {token}")
    assert me.json()["username"] == "alice"


def test_wrong_password_is_a_json_error(client, make_user):
    make_user("alice")
    resp = client.post(
        "/api/v1/auth/token/", {"username": "alice", "password": "nope"}, content_type="application/json"
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["code"] == "bad_credentials"


def test_anonymous_gets_json_401(client, db):
    resp = client.get("/api/v1/projects/")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "not_authenticated"


def test_staff_creates_project_and_becomes_admin(api, make_user):
    alice = make_user("alice", staff=True)
    resp = api(alice).post("/api/v1/projects/", {"name": "mnist"}, format="json")
    assert resp.status_code == 201, resp.json()
    assert resp.json()["role"] == "admin"
    listed = api(alice).get("/api/v1/projects/").json()["results"]
    assert [p["name"] for p in listed] == ["mnist"]


@pytest.mark.parametrize("name", ["", "a/b", "123", "has space"])
def test_bad_project_names_are_refused(api, make_user, name):
    alice = make_user("alice", staff=True)
    resp = api(alice).post("/api/v1/projects/", {"name": name}, format="json")
    assert resp.status_code == 400
    assert "error" in resp.json()
    assert not Project.objects.exists()


def test_duplicate_project_name_conflicts(api, project, admin_user):
    resp = api(admin_user).post("/api/v1/projects/", {"name": project.name}, format="json")
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "duplicate_name"


def test_annotator_cannot_create_projects_nor_see_others(api, project, annotator, make_user):
    other = Project.objects.create(name="secret")
    resp = api(annotator).post("/api/v1/projects/", {"name": "mine"}, format="json")
    assert resp.status_code == 403
    names = [p["name"] for p in api(annotator).get("/api/v1/projects/").json()["results"]]
    assert names == [project.name]
    assert api(annotator).get(f"/api/v1/projects/{other.pk}/").status_code == 404


def test_project_admin_adds_member(api, project, admin_user, make_user):
    make_user("bob")
    resp = api(admin_user).post(
        f"/api/v1/projects/{project.name}/members/", {"username": "bob", "role": "engineer"}, format="json"
    )
    assert resp.status_code == 200
    assert resp.json() == {"username": "bob", "role": "engineer"}


def test_schema_and_swagger_are_served(api, admin_user):
    assert api(admin_user).get("/api/v1/schema/").status_code == 200
    assert api(admin_user).get("/api/v1/docs/").status_code == 200
