"""The CLI against a real server: pytest-django's live_server and the API's own token."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from crucible.cli import main
from crucible.core.services import token_for


@dataclass
class Cli:
    env: dict[str, str | None]

    def __call__(self, *args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, list(args), env=self.env, input=input, catch_exceptions=False)


@pytest.fixture
def config_file(tmp_path) -> Path:
    return tmp_path / "conf" / "config.json"


@pytest.fixture
def anon_cli(live_server, transactional_db, config_file) -> Cli:
    """The CLI pointed at the live server, with no token and no config file yet."""
    return Cli(
        {
            "CRUCIBLE_URL": live_server.url,
            "CRUCIBLE_TOKEN": None,
            "CRUCIBLE_CONFIG": str(config_file),
            "CRUCIBLE_POLL_INTERVAL": "0.05",
        }
    )


@pytest.fixture
def cli(anon_cli, admin_user) -> Cli:
    """The CLI logged in as the superuser `admin` through CRUCIBLE_TOKEN."""
    return Cli({**anon_cli.env, "CRUCIBLE_TOKEN": token_for(user=admin_user)})


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_error_line(result: Result) -> str:
    """The single `error: ...` line of a failed command (no traceback, nothing else on stderr)."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    return lines[0]


def make_digit_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (28, 28)) -> Path:
    """A folder of class subfolders holding small distinct PNGs."""
    root.mkdir(parents=True, exist_ok=True)
    for label, count in classes.items():
        (root / label).mkdir(exist_ok=True)
        for i in range(count):
            img = Image.new("L", size, color=0)
            img.putpixel((i % size[0], int(label) % size[1] if label.isdigit() else 0), 255)
            img.putpixel((size[0] - 1, size[1] - 1), (i * 7 + len(label)) % 256)
            img.save(root / label / f"{label}_{i}.png")
    return root
