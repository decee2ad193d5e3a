"""A real Celery worker process, pointed at the test database, for the end-to-end tests.

The worker is started by the test session (in `make test` and in CI alike) once pytest-django has
created the test database, and stopped at the end. It listens on every queue of the platform.
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

QUEUES = "ingest,train,eval,default"


def _worker_database_url() -> str:
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = db.get("USER") or "postgres"
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or 5432
    return f"postgres://{user}{password}@{host}:{port}/{db['NAME']}"


@pytest.fixture(scope="session")
def celery_worker_process(django_db_setup, django_db_blocker) -> Iterator[subprocess.Popen]:
    log_path = Path(settings.DATA_DIR) / "e2e-worker.log"
    env = {
        **os.environ,
        "DATABASE_URL": _worker_database_url(),
        "CONN_MAX_AGE": "0",  # the test session drops this database at the end
        "CRUCIBLE_DATA_DIR": str(settings.DATA_DIR),
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "PYTHONUNBUFFERED": "1",
    }
    celery = [sys.executable, "-m", "celery", "-A", "crucible.celery_app"]
    subprocess.run([*celery, "purge", "-f", "-Q", QUEUES], env=env, check=False, capture_output=True, timeout=60)
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            *celery,
            "worker",
            "-Q",
            QUEUES,
            "-c",
            "1",
            "--loglevel",
            "INFO",
            "-n",
            f"e2e-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=settings.BASE_DIR,
    )
    deadline = time.monotonic() + 120
    while "ready." not in log_path.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the Celery worker did not start:\n" + log_path.read_text()[-3000:])
        time.sleep(0.3)
    yield proc
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def wait_for(predicate, *, timeout: float = 180, what: str = "condition", worker=None):
    """Poll until predicate() is truthy; on timeout fail with the worker's last log lines."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = ""
            log_path = Path(settings.DATA_DIR) / "e2e-worker.log"
            if log_path.exists():
                tail = log_path.read_text()[-3000:]
            raise AssertionError(f"timed out waiting for {what}\nworker log:\n{tail}")
        time.sleep(0.5)
