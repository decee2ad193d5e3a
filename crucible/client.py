"""A small Python client for Crucible's REST API v1 (docs/api.md).

It speaks only HTTP: no Django, nothing of the server is imported, so it can be used from any machine
that reaches the server.

    client = Client("http://crucible:8000", token)
    run = client.resolve_run("digits/TestA")
    answer = client.classify(run["id"], "two.png", epoch=10)

Every failure is an `ApiError`: the server's JSON error body, or code `connection` when the server
cannot be reached. Idempotent GETs are retried on connection errors (urllib3's `Retry`); writes are
sent once.
"""

from __future__ import annotations

import contextlib
import csv
import json
import mimetypes
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

JSON = dict[str, Any]

#: Statuses after which a job, dataset or run does not change any more.
IMPORT_FINISHED = frozenset({"done", "failed"})
DATASET_FINISHED = frozenset({"ready", "failed"})
RUN_FINISHED = frozenset({"done", "failed", "aborted"})
EXPORT_FINISHED = frozenset({"done", "failed"})


class ApiError(Exception):
    """An error answered by the server (`{"error": {code, message, fields}}`) or met on the way to it.

    `status` is the HTTP status, 0 when no answer came back (code `connection` or `timeout`).
    """

    def __init__(self, status: int, code: str, message: str, fields: dict[str, Any] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields or {}

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"ApiError(status={self.status}, code={self.code!r}, message={self.message!r}, fields={self.fields!r})"


# -- references ---------------------------------------------------------------------------------------


def parse_run_ref(text: str) -> tuple[str, int | None]:
    """`RUN@EPOCH` -> (RUN, EPOCH); `RUN` -> (RUN, None). RUN is an id or PROJECT/NAME; EPOCH counts from 1."""
    ref, sep, epoch = text.strip().rpartition("@")
    if not sep:
        return text.strip(), None
    if not ref:
        raise ValueError(f"{text!r}: the run is missing before '@'")
    if not epoch.isdigit() or int(epoch) < 1:
        raise ValueError(f"{text!r}: the epoch after '@' must be a whole number from 1")
    return ref, int(epoch)


def parse_object_ref(text: str) -> int | tuple[str, str]:
    """An id (`12`) or `PROJECT/NAME` (-> ("PROJECT", "NAME")); anything else is a ValueError."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    project, sep, name = text.partition("/")
    if not sep or not project or not name:
        raise ValueError(f"{text!r}: expected PROJECT/NAME or an id")
    return project, name


# -- archives -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def zipped(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """The zip to upload for `path`: the file itself when it is a zip, else the folder zipped in a temp file.

    Entries are named relative to the folder, so its class subfolders become the zip's top level.
    """
    path = Path(path)
    if path.is_file():
        with path.open("rb") as fh:
            yield fh
        return
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    with tempfile.TemporaryFile(suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for file in sorted(path.rglob("*")):
                if file.is_file() and not any(part.startswith(".") for part in file.relative_to(path).parts):
                    zf.write(file, file.relative_to(path).as_posix())
        tmp.seek(0)
        yield tmp


def _zip_name(path: Path) -> str:
    return path.name if path.is_file() else f"{path.resolve().name or 'upload'}.zip"


def _mime(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def _listed_names(listing: Path, kind: str) -> list[str]:
    """The relative paths a manifest (CSV or JSON) or a DIGITS list names; [] when it cannot be read
    here (the server then says what is wrong with it)."""
    data = listing.read_bytes()
    encoding = "utf-16" if data.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig"
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    try:
        if kind == "digits":
            return ["labels.txt"] + [
                line.rsplit(maxsplit=1)[0] for line in text.splitlines() if len(line.split()) >= 2 and line[0] != "#"
            ]
        if listing.suffix.lower() == ".json":
            items = json.loads(text)
            return [i if isinstance(i, str) else str(i.get("path", "")) for i in items if isinstance(i, str | dict)]
        rows = list(csv.reader(text.splitlines()))
        column = [c.strip().lower() for c in rows[0]].index("path") if rows else -1
        return [row[column] for row in rows[1:] if len(row) > column >= 0]
    except (ValueError, AttributeError, TypeError, csv.Error):
        return []


@contextlib.contextmanager
def _zip_listed(listing: Path, kind: str) -> Iterator[IO[bytes]]:
    """A manifest or DIGITS list zipped with the files it names, relative to its folder. Files named
    outside that folder or missing are left out: the server reports each as not found."""
    base = listing.parent.resolve()
    with tempfile.TemporaryFile(suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(listing, listing.name)
            for name in dict.fromkeys(_listed_names(listing, kind)):
                file = (base / name.strip()).resolve()
                if name.strip() and file.is_file() and file.is_relative_to(base) and file != listing.resolve():
                    zf.write(file, file.relative_to(base).as_posix())
        tmp.seek(0)
        yield tmp


# -- the client ---------------------------------------------------------------------------------------


class Client:
    """Crucible's REST API v1 over a `requests.Session`; methods return the decoded JSON answers."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float | tuple[float, float] = (10.0, 300.0),
        retries: int = 3,
        backoff: float = 0.3,
    ):
        self.url = (url if "://" in url else f"http://{url}").rstrip("/")
        self.api = self.url + "/api/v1/"
        self.timeout = timeout
        self.token = token
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=0,
            other=0,
            allowed_methods=frozenset({"GET", "HEAD"}),
            backoff_factor=backoff,
            raise_on_status=False,
        )
        # GETs are idempotent and retried; writes go through a session that sends them once.
        self._read = self._session(HTTPAdapter(max_retries=retry))
        self._write = self._session(HTTPAdapter(max_retries=0))

    def _session(self, adapter: HTTPAdapter) -> requests.Session:
        session = requests.Session()
        session.headers["Accept"] = "application/json"
        session.headers["User-Agent"] = "crucible-client/0.1"
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def close(self) -> None:
        self._read.close()
        self._write.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> requests.Response:
        """Send one request under /api/v1/; an error answer or a failed connection raises ApiError."""
        url = urljoin(self.api, path.lstrip("/"))
        headers = kwargs.pop("headers", {})
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        session = self._read if method.upper() in ("GET", "HEAD") else self._write
        try:
            resp = session.request(method, url, headers=headers, timeout=self.timeout, stream=stream, **kwargs)
        except requests.Timeout as exc:
            raise ApiError(0, "timeout", f"no answer from {self.url} in time ({_reason(exc)})") from exc
        except requests.ConnectionError as exc:
            reason = _reason(exc)
            if "timed out" in reason:  # a read timeout that used up the retries arrives as a ConnectionError
                raise ApiError(0, "timeout", f"no answer from {self.url} in time ({reason})") from exc
            raise ApiError(0, "connection", f"cannot connect to {self.url} ({reason})") from exc
        except requests.RequestException as exc:
            raise ApiError(0, "connection", f"cannot send the request to {url} ({exc})") from exc
        if resp.status_code >= 400:
            raise _error_from(resp)
        return resp

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self.request(method, path, **kwargs)
        try:
            return resp.json()
        except ValueError as exc:
            raise ApiError(resp.status_code, "bad_response", f"{method} {resp.url}: the answer is not JSON") from exc

    def get(self, path: str, **params: Any) -> Any:
        return self._json("GET", path, params={k: v for k, v in params.items() if v is not None} or None)

    def post(self, path: str, body: JSON | None = None, **kwargs: Any) -> Any:
        if body is not None:
            kwargs["json"] = body
        return self._json("POST", path, **kwargs)

    # -- core -----------------------------------------------------------------------------------------

    def login(self, username: str, password: str) -> JSON:
        """Exchange a username and password for a token; the client uses it from then on."""
        answer = self.post("auth/token/", {"username": username, "password": password})
        self.token = answer["token"]
        return answer

    def me(self) -> JSON:
        return self.get("me/")

    def projects(self) -> list[JSON]:
        return self.get("projects/")["results"]

    def project_create(self, name: str, description: str = "") -> JSON:
        return self.post("projects/", {"name": name, "description": description})

    def project(self, ref: str | int) -> JSON:
        return self.get(f"projects/{ref}/")

    def member_set(self, project: str | int, username: str, role: str) -> JSON:
        return self.post(f"projects/{project}/members/", {"username": username, "role": role})

    # -- imports --------------------------------------------------------------------------------------

    def import_upload(self, project: str | int, path: str | os.PathLike[str]) -> JSON:
        """Upload a local zip, or a local folder of class subfolders zipped on the fly; -> the queued job."""
        path = Path(path)
        with zipped(path) as fh:
            return self.post(f"projects/{project}/imports/", files={"file": (_zip_name(path), fh, "application/zip")})

    def import_server(self, project: str | int, path: str) -> JSON:
        """Import a folder on the server (under its CRUCIBLE_IMPORT_ROOTS); -> the queued job."""
        return self.post(f"projects/{project}/imports/", {"path": path})

    def import_source(
        self,
        project: str | int,
        source_kind: str,
        *,
        path: str | None = None,
        local: str | os.PathLike[str] | None = None,
        urls: list[str] | None = None,
        **fields: str | None,
    ) -> JSON:
        """Start an import of another kind (manifest, digits, urls, s3, text_csv, coco, yolo, voc); -> the job.

        `path` names a file on the server (or s3://bucket/prefix), `local` a file sent with the request
        (a local manifest or DIGITS list that is not a zip is sent zipped with the files it lists), `urls`
        the URLs themselves; `fields` are the source's own (column, label_column, bucket, prefix).
        """
        url = f"projects/{project}/imports/"
        data = {"source_kind": source_kind, **{k: v for k, v in fields.items() if v is not None}}
        if urls is not None:
            return self.post(url, {**data, "urls": urls})
        if local is None:
            return self.post(url, {**data, "path": path})
        local = Path(local)
        if source_kind in ("manifest", "digits") and not zipfile.is_zipfile(local):
            with _zip_listed(local, source_kind) as fh:
                return self.post(url, data=data, files={"file": (f"{local.stem}.zip", fh, "application/zip")})
        with local.open("rb") as fh:
            return self.post(url, data=data, files={"file": (local.name, fh, _mime(local))})

    def imports(self, project: str | int) -> list[JSON]:
        return self.get(f"projects/{project}/imports/")["results"]

    def import_get(self, job_id: int) -> JSON:
        return self.get(f"imports/{job_id}/")

    def classes(self, project: str | int) -> list[JSON]:
        return self.get(f"projects/{project}/classes/")["results"]

    def queue_status(self, project: str | int) -> JSON:
        """The labelling queue of a project: items by state, live leases, submissions."""
        return self.get(f"projects/{project}/queue/status/")

    def agreement(self, project: str | int) -> JSON:
        """Agreement between the project's annotators: percent, Fleiss' kappa, per-pair figures."""
        return self.get(f"projects/{project}/agreement/")

    # -- label exports --------------------------------------------------------------------------------

    def labels_export(self, project: str | int, format: str) -> JSON:
        """Start an export of the project's labels (`jsonl`, `csv` or `folder`); -> the queued job."""
        return self.post(f"projects/{project}/exports/", {"format": format})

    def export_get(self, job_id: int) -> JSON:
        return self.get(f"labeling/exports/{job_id}/")

    def export_download(
        self,
        job_id: int,
        path: str | os.PathLike[str],
        *,
        on_chunk: Callable[[int], None] | None = None,
    ) -> Path:
        """Stream a finished export's file to `path` (through a `.part` file renamed at the end)."""
        target = Path(path)
        with self.request("GET", f"labeling/exports/{job_id}/file/", stream=True) as resp:
            if target.is_dir():
                name = _attachment_name(resp.headers.get("Content-Disposition", "")) or f"export{job_id}"
                target = target / name
            return self._save_stream(resp, target, on_chunk)

    # -- label imports --------------------------------------------------------------------------------

    def labels_import(self, project: str | int, path: str | os.PathLike[str], format: str) -> JSON:
        """Upload a label file (jsonl, csv, folder, coco, yolo or voc) to be matched onto the project's
        assets; -> the queued job."""
        path = Path(path)
        with path.open("rb") as fh:
            return self.post(
                f"projects/{project}/label-imports/",
                data={"format": format},
                files={"file": (path.name, fh, "application/octet-stream")},
            )

    def label_import_get(self, job_id: int) -> JSON:
        return self.get(f"labeling/label-imports/{job_id}/")

    # -- datasets -------------------------------------------------------------------------------------

    def dataset_create(
        self,
        project: str | int,
        *,
        name: str,
        channels: int,
        width: int,
        height: int,
        resize_mode: str,
        val_percent: int | None = None,
        test_percent: int | None = None,
        min_per_class: int | None = None,
        max_per_class: int | None = None,
        split_seed: int | None = None,
        parent: int | None = None,
    ) -> JSON:
        """Create a dataset version; it answers at once with status `materializing`."""
        body = {
            "name": name,
            "channels": channels,
            "width": width,
            "height": height,
            "resize_mode": resize_mode,
            "val_percent": val_percent,
            "test_percent": test_percent,
            "min_per_class": min_per_class,
            "max_per_class": max_per_class,
            "split_seed": split_seed,
            "parent": parent,
        }
        required = {"name", "channels", "width", "height", "resize_mode"}
        return self.post(
            f"projects/{project}/datasets/", {k: v for k, v in body.items() if v is not None or k in required}
        )

    def datasets(self, project: str | int, *, name: str | None = None) -> list[JSON]:
        return self.get(f"projects/{project}/datasets/", name=name)["results"]

    def dataset(self, dataset_id: int) -> JSON:
        return self.get(f"datasets/{dataset_id}/")

    def gallery(self, dataset_id: int, *, split: str = "train", per_class: int = 8) -> JSON:
        return self.get(f"datasets/{dataset_id}/gallery/", split=split, per_class=per_class)

    def dataset_diff(self, a: int, b: int, *, limit: int = 200) -> JSON:
        """Label-level differences from dataset version `a` to `b` (ids) of one project."""
        return self.get(f"datasets/{a}/diff/{b}/", limit=limit)

    def resolve_dataset(self, ref: str | int) -> JSON:
        """A dataset by id or `PROJECT/NAME`."""
        return self._resolve("dataset", ref, self.dataset, self.datasets)

    # -- cleaning: findings, frozen versions, the evaluation set ----------------------------------------

    def dataset_create_frozen(self, project: str | int, **spec: Any) -> JSON:
        """Create a dataset version and freeze it at once; on a leak (409 `leak`) nothing is created."""
        required = {"name", "channels", "width", "height", "resize_mode"}
        body = {k: v for k, v in spec.items() if v is not None or k in required}
        return self.post(f"projects/{project}/datasets/", {**body, "freeze": True})

    def dataset_freeze(self, dataset_id: int) -> JSON:
        """Freeze an existing dataset version (409 `version_frozen`, `leak`, `content_mismatch`)."""
        return self.post(f"datasets/{dataset_id}/freeze/")

    def dataset_explore(self, dataset_id: int, **filters: Any) -> JSON:
        """One page of a version's items: label, split, finding_kind, changed_since, after, limit."""
        return self.get(f"datasets/{dataset_id}/explore/", **filters)

    def findings(
        self,
        project: str | int,
        *,
        kind: str | None = None,
        decision: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> JSON:
        """One page of a project's findings: {"results": [...], "next": after-id or None}."""
        return self.get(f"projects/{project}/findings/", kind=kind, decision=decision, after=after, limit=limit)

    def findings_all(self, project: str | int, **filters: Any) -> list[JSON]:
        """Every finding matching the filters, page after page."""
        out: list[JSON] = []
        after = None
        while True:
            page = self.findings(project, after=after, limit=1000, **filters)
            out.extend(page["results"])
            after = page.get("next")
            if not after:
                return out

    def findings_scan(self, project: str | int) -> JSON:
        """Queue a cleaning scan of the project."""
        return self.post(f"projects/{project}/findings/scan/")

    def label_errors_scan(self, dataset_id: int, **options: Any) -> JSON:
        """Queue a label error scan of a dataset version."""
        return self.post(f"datasets/{dataset_id}/label-errors/", options)

    def label_error_scan(self, scan_id: int) -> JSON:
        return self.get(f"label-error-scans/{scan_id}/")

    def finding_decide(self, finding_id: int, *, decision: str, note: str = "", label: str | None = None) -> JSON:
        body: JSON = {"decision": decision, "note": note}
        if label is not None:
            body["label"] = label
        return self.post(f"findings/{finding_id}/decide/", body)

    def findings_decide_rule(self, project: str | int, rule: str) -> JSON:
        """Decide every open finding a rule covers; {"rule": ..., "decided": n}."""
        return self.post(f"projects/{project}/findings/rules/", {"rule": rule})

    def evaluation_set(self, project: str | int) -> JSON:
        return self.get(f"projects/{project}/evaluation-set/")

    def evaluation_set_update(self, project: str | int, *, add: Sequence[str] = (), remove: Sequence[str] = ()) -> JSON:
        return self.post(f"projects/{project}/evaluation-set/", {"add": list(add), "remove": list(remove)})

    # -- runs -----------------------------------------------------------------------------------------

    def run_start(self, dataset_id: int, *, name: str, **config: Any) -> JSON:
        """Start a training run on a dataset; options left out (None) take the server's defaults."""
        body = {"name": name, **{k: v for k, v in config.items() if v is not None}}
        return self.post(f"datasets/{dataset_id}/runs/", body)

    def runs(self, project: str | int, *, name: str | None = None) -> list[JSON]:
        return self.get(f"projects/{project}/runs/", name=name)["results"]

    def run(self, run_id: int) -> JSON:
        return self.get(f"runs/{run_id}/")

    def run_abort(self, run_id: int) -> JSON:
        return self.post(f"runs/{run_id}/abort/", {})

    def run_clone(self, run_id: int, *, name: str | None = None, new_seed: bool = False) -> JSON:
        return self.post(f"runs/{run_id}/clone/", {"name": name, "new_seed": new_seed})

    def resolve_run(self, ref: str | int) -> JSON:
        """A run by id or `PROJECT/NAME` (without `@EPOCH`: see `parse_run_ref`)."""
        return self._resolve("run", ref, self.run, self.runs)

    def classify(self, run_id: int, image: str | os.PathLike[str], *, epoch: int | None = None) -> JSON:
        """Top-5 of one image, preprocessed the way the run's dataset was."""
        image = Path(image)
        data = {"epoch": epoch} if epoch is not None else None
        with image.open("rb") as fh:
            return self.post(f"runs/{run_id}/classify/", data=data, files={"image": (image.name, fh, _mime(image))})

    def classify_many(
        self,
        run_id: int,
        source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        epoch: int | None = None,
    ) -> JSON:
        """Classify a folder or zip (class subfolders give the true labels), or a list of image files."""
        data = {"epoch": epoch} if epoch is not None else None
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            with zipped(path) as fh:
                files: Any = {"file": (_zip_name(path), fh, "application/zip")}
                return self.post(f"runs/{run_id}/classify-many/", data=data, files=files)
        with contextlib.ExitStack() as stack:
            files = [
                ("images", (Path(p).name, stack.enter_context(Path(p).open("rb")), _mime(Path(p)))) for p in source
            ]
            return self.post(f"runs/{run_id}/classify-many/", data=data, files=files)

    def model_download(
        self,
        run_id: int,
        dest: str | os.PathLike[str] | None = None,
        *,
        epoch: int | None = None,
        on_start: Callable[[int | None], None] | None = None,
        on_chunk: Callable[[int], None] | None = None,
    ) -> Path:
        """Stream the model archive to `dest` (a file, a folder, or None for the server's file name here).

        The bytes go to a `.part` file renamed at the end, so an interrupted download leaves no
        archive that looks complete. `on_start(total_bytes|None)` and `on_chunk(n)` report progress.
        """
        params = {"epoch": epoch} if epoch is not None else None
        with self.request("GET", f"runs/{run_id}/model/", params=params, stream=True) as resp:
            name = _attachment_name(resp.headers.get("Content-Disposition", "")) or f"run{run_id}.tar.gz"
            target = Path(dest) if dest is not None else Path(name)
            if target.is_dir():
                target = target / name
            size = resp.headers.get("Content-Length")
            if on_start:
                on_start(int(size) if size and size.isdigit() else None)
            return self._save_stream(resp, target, on_chunk)

    # -- helpers --------------------------------------------------------------------------------------

    def _save_stream(
        self, resp: requests.Response, target: Path, on_chunk: Callable[[int], None] | None = None
    ) -> Path:
        """Write a streamed answer to `target` through a `.part` file renamed at the end, so an
        interrupted download leaves nothing that looks complete."""
        part = target.with_name(target.name + ".part")
        try:
            with part.open("wb") as out:
                for chunk in resp.iter_content(chunk_size=1 << 16):
                    out.write(chunk)
                    if on_chunk:
                        on_chunk(len(chunk))
        except requests.RequestException as exc:
            part.unlink(missing_ok=True)
            raise ApiError(0, "connection", f"the download from {self.url} broke off ({_reason(exc)})") from exc
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        part.replace(target)
        return target

    def _resolve(
        self,
        kind: str,
        ref: str | int,
        by_id: Callable[[int], JSON],
        by_name: Callable[..., list[JSON]],
    ) -> JSON:
        try:
            parsed = ref if isinstance(ref, int) else parse_object_ref(ref)
        except ValueError:
            raise ApiError(400, "invalid", f"{kind} {ref!r}: expected PROJECT/NAME or an id") from None
        if isinstance(parsed, int):
            try:
                return by_id(parsed)
            except ApiError as exc:
                if exc.status == 404:
                    raise ApiError(404, "not_found", f"{kind} {parsed} not found") from exc
                raise
        project, name = parsed
        found = [obj for obj in by_name(project, name=name) if obj.get("name") == name]
        if not found:
            raise ApiError(404, "not_found", f"{kind} '{project}/{name}' not found")
        return found[0]


def _error_from(resp: requests.Response) -> ApiError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return ApiError(
            resp.status_code,
            str(error.get("code") or "error"),
            str(error.get("message") or resp.reason),
            error.get("fields") if isinstance(error.get("fields"), dict) else {},
        )
    method = resp.request.method if resp.request is not None else ""
    return ApiError(
        resp.status_code, f"http_{resp.status_code}", f"{method} {resp.url}: HTTP {resp.status_code} {resp.reason}"
    )


def _reason(exc: BaseException) -> str:
    """The root cause of a requests error in a few words ("Connection refused"), not urllib3's repr."""
    cause: BaseException = exc
    for _ in range(8):  # requests wraps urllib3's MaxRetryError(reason=...) and ProtocolError(msg, inner)
        inner = getattr(cause, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in reversed(cause.args) if isinstance(a, BaseException)), None)
        if inner is None:
            break
        cause = inner
    text = str(cause) or type(cause).__name__
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match.group(1).strip()
    return re.sub(r"^\S+Pool\(host=[^)]*\): ", "", text)  # urllib3's "HTTPConnectionPool(host=.., port=..): "


def _attachment_name(disposition: str) -> str | None:
    match = re.search(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)\"?", disposition)
    return Path(match.group(1)).name if match else None
