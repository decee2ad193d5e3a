"""login, projects, configuration and error reporting, against the real API on a live server."""

import json
import stat
import subprocess
import sys

from crucible.client import ApiError, Client
from crucible.core.models import Project
from tests.cli.conftest import Cli, one_error_line


def test_importing_the_cli_does_not_import_django():
    code = "import crucible.cli, crucible.client, sys; assert 'django' not in sys.modules, 'django imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_login_writes_a_private_config_that_later_commands_use(anon_cli, make_user, config_file, live_server):
    make_user("alice", staff=True)
    result = anon_cli("login", "--url", live_server.url, "--username", "alice", "--password", "pw-alice")
    assert result.exit_code == 0, result.output + result.stderr
    assert "logged in" in result.output and "alice" in result.output

    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    saved = json.loads(config_file.read_text())
    assert saved["url"] == live_server.url and saved["username"] == "alice" and saved["token"]

    # Neither CRUCIBLE_URL nor CRUCIBLE_TOKEN: everything comes from the file.
    from_file = Cli({**anon_cli.env, "CRUCIBLE_URL": None})
    created = from_file("project", "create", "mnist", "--description", "digits")
    assert created.exit_code == 0, created.stderr
    assert Project.objects.get(name="mnist").created_by.username == "alice"


def test_login_prompts_for_the_password(anon_cli, make_user, live_server, config_file):
    make_user("alice")
    result = anon_cli("login", "--url", live_server.url, "--username", "alice", input="pw-alice\n")
    assert result.exit_code == 0, result.stderr
    assert "pw-alice" not in result.output
    assert config_file.exists()


def test_login_overwrites_an_open_config_with_mode_0600(anon_cli, make_user, live_server, config_file):
    make_user("alice")
    config_file.parent.mkdir(parents=True)
    config_file.write_text("{}")
    config_file.chmod(0o644)
    assert anon_cli("login", "--url", live_server.url, "--username", "alice", "--password", "pw-alice").exit_code == 0
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600


def test_bad_password_is_one_line_and_writes_nothing(anon_cli, make_user, live_server, config_file):
    make_user("alice")
    result = anon_cli("login", "--url", live_server.url, "--username", "alice", "--password", "nope")
    assert one_error_line(result) == "error: wrong username or password (bad_credentials)"
    assert not config_file.exists()


def test_project_create_and_list(cli):
    created = cli("project", "create", "digits", "--description", "handwritten digits")
    assert created.exit_code == 0, created.stderr
    assert "project digits created" in created.output

    listed = cli("project", "list")
    assert listed.exit_code == 0
    assert "digits" in listed.output and "admin" in listed.output

    as_json = json.loads(cli("project", "list", "--json").output)
    assert [(p["name"], p["role"], p["description"]) for p in as_json["results"]] == [
        ("digits", "admin", "handwritten digits")
    ]
    global_flag = json.loads(cli("--json", "project", "show", "digits").output)
    assert global_flag["name"] == "digits"


def test_duplicate_project_is_one_line(cli, project):
    result = cli("project", "create", project.name)
    assert (
        one_error_line(result)
        == f"error: a project named '{project.name}' already exists; name: taken (duplicate_name)"
    )
    assert Project.objects.count() == 1


def test_unknown_project_is_one_line(cli):
    assert one_error_line(cli("project", "show", "nope")) == "error: project 'nope' not found"


def test_not_logged_in_says_how_to_log_in(anon_cli):
    line = one_error_line(anon_cli("project", "list"))
    assert "(not_authenticated)" in line and "crucible login" in line


def test_no_server_configured(anon_cli):
    line = one_error_line(Cli({**anon_cli.env, "CRUCIBLE_URL": None})("project", "list"))
    assert "no server configured" in line


def test_connection_refused_is_one_line_naming_the_url(cli, closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    line = one_error_line(Cli({**cli.env, "CRUCIBLE_URL": url})("project", "list"))
    assert line == f"error: cannot connect to {url} (Connection refused)"


def test_client_raises_api_error_with_the_server_fields(live_server, transactional_db, admin_user):
    from crucible.core.services import token_for

    client = Client(live_server.url, token_for(user=admin_user))
    try:
        client.project_create("has space")
    except ApiError as exc:
        assert (exc.status, exc.code) == (400, "invalid")
        assert exc.fields == {"name": "invalid name"}
    else:
        raise AssertionError("no ApiError")
    assert client.me()["username"] == "admin"


def test_usage_errors_exit_2(cli):
    result = cli("classify", "digits/TestA@zero", "x.png")
    assert result.exit_code == 2
    assert "epoch after '@'" in result.stderr
    assert cli("dataset", "show", "no-slash").exit_code == 2


def test_the_real_process_fails_with_one_line_and_status_1(closed_port, tmp_path):
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CRUCIBLE_URL": f"http://127.0.0.1:{closed_port}",
        "CRUCIBLE_TOKEN": "t",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "crucible.cli", "run", "list", "digits"], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"error: cannot connect to http://127.0.0.1:{closed_port} (Connection refused)"]
    assert proc.stdout == ""
