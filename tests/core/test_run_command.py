"""`make run`'s command: starts web, worker and beat on the embedded default, and stops them all."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _descendants(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True, check=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_run_serves_the_console_and_sigterm_stops_every_process(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY"}}
    env.update(CRUCIBLE_MODE="embedded", CRUCIBLE_DATA_DIR=str(tmp_path), CRUCIBLE_ADMIN_PASSWORD="s3cret-pass")
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "crucible_run", "--no-demo", "--port", str(port)],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + 120
            while True:
                assert proc.poll() is None, log.read_text()[-3000:]
                try:
                    if requests.get(f"http://127.0.0.1:{port}/login/", timeout=10).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
            text = log.read_text()
            assert f"http://127.0.0.1:{port}/" in text
            assert re.search(r"log in as 'admin' with password 's3cret-pass'", text)
            token = requests.post(
                f"http://127.0.0.1:{port}/api/v1/auth/token/",
                json={"username": "admin", "password": "s3cret-pass"},
                timeout=10,
            )
            assert token.status_code == 200
            # web (master and workers), the Celery worker and its pool, and beat
            while len(started := _descendants(proc.pid)) < 4:
                time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
            deadline = time.monotonic() + 30
            while any(_alive(pid) for pid in started) and time.monotonic() < deadline:
                time.sleep(0.5)
            assert not [pid for pid in started if _alive(pid)]
        finally:
            if proc.poll() is None:
                proc.kill()
            for pid in _descendants(proc.pid):
                os.kill(pid, signal.SIGKILL)
