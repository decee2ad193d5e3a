"""`make run`: migrate, create the admin, start web + worker + beat, load the demo project.

Everything runs in the foreground; SIGINT or SIGTERM stops every process started here. Running it
again reuses the database, the files and the admin account that exist.
"""

import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from crucible.core.models import User


def _die_with_parent() -> None:
    """On Linux, receive SIGTERM when the parent process dies, so that nothing outlives `make run`."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Command(BaseCommand):
    help = "Run Crucible on this machine: web server, Celery worker and beat, with the demo project."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--no-demo", action="store_true", help="do not load the demo project")

    def handle(self, *args: Any, port: int, host: str, no_demo: bool, **options: Any) -> None:
        _die_with_parent()  # `make` does not pass SIGTERM on to its recipe
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        username, password = self._ensure_admin()

        self.children: list[subprocess.Popen] = []
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(settings.CRUCIBLE_TORCH_THREADS)}
        python = sys.executable
        celery = [python, "-m", "celery", "-A", "crucible.celery_app"]
        self._spawn(
            "worker",
            [
                *celery,
                "worker",
                "-Q",
                "ingest,train,eval,default",
                "-c",
                "2",
                "--loglevel",
                "INFO",
                "-n",
                "embedded@%h",
            ],
            env,
        )
        self._spawn(
            "beat", [*celery, "beat", "--loglevel", "INFO", "-s", str(settings.DATA_DIR / "celerybeat-schedule")], env
        )
        self._spawn(
            "web",
            [
                python,
                "-m",
                "gunicorn",
                "crucible.wsgi:application",
                "--bind",
                f"{host}:{port}",
                "--workers",
                "2",
                "--threads",
                "4",
                "--timeout",
                "300",
                "--access-logfile",
                "-",
            ],
            env,
        )
        if not no_demo:
            self._spawn("demo", [python, "manage.py", "load_demo", "--owner", username], env, optional=True)

        url = f"http://{host}:{port}/"
        self.stdout.write(self.style.SUCCESS(f"\nCrucible is running at {url}"))
        self.stdout.write(f"  log in as {username!r} with password {password!r}")
        self.stdout.write(f"  API docs: {url}api/v1/docs/   data: {settings.DATA_DIR}")
        self._print_demo_logins(url)
        self.stdout.write("  press Ctrl-C to stop\n")
        self._supervise()

    def _print_demo_logins(self, url: str) -> None:
        """The demo annotator and reviewer, once load_demo has made them (it prints them too)."""
        path = Path(settings.DATA_DIR) / "demo_passwords.json"
        if os.environ.get("CRUCIBLE_DEMO_PASSWORD"):
            passwords = {
                "annotator": os.environ["CRUCIBLE_DEMO_PASSWORD"],
                "reviewer": os.environ["CRUCIBLE_DEMO_PASSWORD"],
            }
        elif path.exists():
            try:
                passwords = json.loads(path.read_text())
            except (OSError, ValueError):
                return
        else:
            return
        for name in ("annotator", "reviewer"):
            if name in passwords:
                self.stdout.write(f"  demo {name}: log in as {name!r} with password {passwords[name]!r}")
        self.stdout.write(f"  label the demo digits at {url}projects/demo-labels/label/")

    def _ensure_admin(self) -> tuple[str, str]:
        username = os.environ.get("CRUCIBLE_ADMIN_USERNAME", "admin")
        password_file = Path(settings.DATA_DIR) / "admin_password"
        password = os.environ.get("CRUCIBLE_ADMIN_PASSWORD") or (
            password_file.read_text().strip() if password_file.exists() else secrets.token_urlsafe(12)
        )
        user = User.objects.filter(username=username).first()
        if user is None:
            user = User.objects.create_superuser(username=username, password=password)
        elif os.environ.get("CRUCIBLE_ADMIN_PASSWORD"):
            user.set_password(password)
            user.save(update_fields=["password"])
        elif not password_file.exists():
            return username, "(unchanged; set CRUCIBLE_ADMIN_PASSWORD to reset it)"
        if not os.environ.get("CRUCIBLE_ADMIN_PASSWORD"):
            password_file.write_text(password)
            password_file.chmod(0o600)
        return username, password

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str], optional: bool = False) -> None:
        proc = subprocess.Popen(cmd, env=env, cwd=settings.BASE_DIR, preexec_fn=_die_with_parent)
        proc.crucible_name = name  # type: ignore[attr-defined]
        proc.crucible_optional = optional  # type: ignore[attr-defined]
        self.children.append(proc)

    def _on_signal(self, signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def _supervise(self) -> None:
        code = 0
        try:
            while True:
                for proc in list(self.children):
                    rc = proc.poll()
                    if rc is None:
                        continue
                    self.children.remove(proc)
                    if proc.crucible_optional:  # type: ignore[attr-defined]
                        if rc:
                            self.stderr.write(f"{proc.crucible_name} exited with status {rc}")  # type: ignore[attr-defined]
                        continue
                    self.stderr.write(f"{proc.crucible_name} stopped (status {rc}); stopping everything")  # type: ignore[attr-defined]
                    code = rc or 1
                    raise KeyboardInterrupt
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self._stop_all()
        sys.exit(code)

    def _stop_all(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for proc in self.children:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 20
        for proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.stdout.write("stopped")
