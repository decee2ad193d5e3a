"""`crucible`: the command-line tool over the REST API (docs/api.md), built on `crucible.client`.

Configuration: CRUCIBLE_URL and CRUCIBLE_TOKEN, else the file `crucible login` writes
(~/.config/crucible/config.json, or $CRUCIBLE_CONFIG; mode 0600). Every command takes `--json`
(also `crucible --json ...`) and then prints the API's answer as JSON. A failure is one line on
stderr, `error: ...`, and exit status 1; usage errors are click's, exit status 2.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import click
from tqdm import tqdm

from crucible import __version__
from crucible.client import (
    DATASET_FINISHED,
    EXPORT_FINISHED,
    IMPORT_FINISHED,
    JSON,
    RUN_FINISHED,
    ApiError,
    Client,
    parse_object_ref,
    parse_run_ref,
)

# -- configuration ------------------------------------------------------------------------------------


def config_path() -> Path:
    if os.environ.get("CRUCIBLE_CONFIG"):
        return Path(os.environ["CRUCIBLE_CONFIG"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "crucible" / "config.json"


def load_config() -> dict[str, Any]:
    path = config_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise Failure(f"cannot read the configuration {path} ({exc}); run `crucible login` again") from None
    return data if isinstance(data, dict) else {}


def save_config(data: dict[str, Any]) -> Path:
    """Write the configuration readable by its owner only: it holds an API token."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode under os.open
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")
    return path


def poll_interval() -> float:
    try:
        return max(0.05, float(os.environ.get("CRUCIBLE_POLL_INTERVAL", "1")))
    except ValueError:
        return 1.0


# -- state, errors, output ----------------------------------------------------------------------------


class Failure(click.ClickException):
    """A failure the user can act on: one line on stderr, exit status 1, never a traceback."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def describe(exc: ApiError) -> str:
    """One line for an ApiError: the server's message, its code, and any other field errors."""
    parts = [exc.message]
    for key, value in exc.fields.items():
        text = value if isinstance(value, str) else json.dumps(value)
        if not re.search(rf"\b{re.escape(str(key))}\b", exc.message) and text not in exc.message:
            parts.append(f"{key}: {text}")
    line = "; ".join(parts)
    if exc.status >= 400 and exc.code not in ("not_found",) and not exc.code.startswith("http_"):
        line += f" ({exc.code})"
    if exc.status == 401:
        line += "; log in with `crucible login` or set CRUCIBLE_TOKEN"
    return " ".join(line.split())


@dataclass
class State:
    json: bool = False
    _client: Client | None = field(default=None, repr=False)

    @property
    def client(self) -> Client:
        if self._client is None:
            config = load_config()
            url = os.environ.get("CRUCIBLE_URL") or config.get("url")
            token = os.environ.get("CRUCIBLE_TOKEN") or config.get("token")
            if not url:
                raise Failure("no server configured: run `crucible login --url URL` or set CRUCIBLE_URL")
            self._client = Client(url, token)
        return self._client


pass_state = click.make_pass_decorator(State, ensure=True)


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(State).json = True


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--json", is_flag=True, expose_value=False, callback=_set_json, help="Print the API's answer as JSON."
    )(func)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def emit(state: State, data: Any, human: Callable[[], None]) -> None:
    """The API's answer as JSON under --json, else the human rendering."""
    if state.json:
        print_json(data)
    else:
        human()


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[int] = ()) -> None:
    cells = [[str(c) for c in headers], *[["" if c is None else str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        line = "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        click.echo(line.rstrip())
        if n == 0:
            click.echo("  ".join("-" * w for w in widths))


def bar(value: float, top: float, width: int = 20) -> str:
    return tqdm.format_meter(min(value, top), top or 1, 0, bar_format=f"{{bar:{width}}}")


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def label(obj: JSON) -> str:
    return f"{obj.get('project_name', obj.get('project'))}/{obj['name']}"


def ref_arg(kind: str) -> Callable[[click.Context, click.Parameter, str], str]:
    def check(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
        try:
            parse_object_ref(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        return value

    return check


def run_epoch_arg(_ctx: click.Context, _param: click.Parameter, value: str | None) -> tuple[str, int | None] | None:
    if value is None:
        return None
    try:
        ref, epoch = parse_run_ref(value)
        parse_object_ref(ref)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return ref, epoch


class Size(click.ParamType):
    """`28x28` (width x height) or `28` for a square."""

    name = "WxH"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[int, int]:
        if isinstance(value, tuple):
            return value
        w, _, h = str(value).lower().partition("x")
        if not w.isdigit() or not (h or w).isdigit():
            self.fail(f"{value!r} is not a size like 28x28", param, ctx)
        return int(w), int(h or w)


# -- the group ----------------------------------------------------------------------------------------


class CrucibleGroup(click.Group):
    """Turns ApiError and local file errors into one `error: ...` line and exit status 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ApiError as exc:
            raise Failure(describe(exc)) from None
        except OSError as exc:
            raise Failure(str(exc)) from None


@click.group(cls=CrucibleGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--json", "as_json", is_flag=True, help="Print the API's answers as JSON.")
@click.version_option(version=__version__, prog_name="crucible")
@click.pass_context
def main(ctx: click.Context, as_json: bool) -> None:
    """Crucible from the command line: import data, build datasets, train, classify, download models."""
    state = ctx.ensure_object(State)
    state.json = state.json or as_json


# -- login, projects ----------------------------------------------------------------------------------


@main.command()
@click.option("--url", envvar="CRUCIBLE_URL", required=True, help="The server, e.g. http://localhost:8000.")
@click.option("--username", prompt=True)
@click.option("--password", prompt=True, hide_input=True)
@json_option
@pass_state
def login(state: State, url: str, username: str, password: str) -> None:
    """Get an API token and save it with the server's URL for later commands."""
    with Client(url) as client:
        answer = client.login(username, password)
    path = save_config({"url": client.url, "token": answer["token"], "username": answer["username"]})
    out = {"url": client.url, "username": answer["username"], "config": str(path)}
    emit(state, out, lambda: click.echo(f"logged in to {client.url} as {answer['username']}; token saved in {path}"))


@main.group()
def project() -> None:
    """Projects: list, show and create."""


@project.command("list")
@json_option
@pass_state
def project_list(state: State) -> None:
    """The projects you are a member of, with your role."""
    projects = state.client.projects()
    emit(
        state,
        {"results": projects},
        lambda: table(
            ["ID", "NAME", "ROLE", "DESCRIPTION"],
            [[p["id"], p["name"], p.get("role") or "", p.get("description", "")] for p in projects],
            right=[0],
        ),
    )


@project.command("show")
@click.argument("ref", metavar="PROJECT")
@json_option
@pass_state
def project_show(state: State, ref: str) -> None:
    """One project (name or id) and your role in it."""
    p = state.client.project(ref)
    emit(
        state,
        p,
        lambda: click.echo(f"project {p['name']} (id {p['id']}), your role: {p.get('role')}\n{p['description']}"),
    )


@project.command("create")
@click.argument("name")
@click.option("--description", default="", help="What the project is for.")
@json_option
@pass_state
def project_create(state: State, name: str, description: str) -> None:
    """Create a project (staff only); you become its admin."""
    created = state.client.project_create(name, description)
    emit(state, created, lambda: click.echo(f"project {created['name']} created (id {created['id']})"))


# -- labelling queue ----------------------------------------------------------------------------------


@main.group()
def queue() -> None:
    """The labelling queue: status."""


@queue.command("status")
@click.argument("ref", metavar="PROJECT")
@json_option
@pass_state
def queue_status(state: State, ref: str) -> None:
    """Items by state, live leases and submissions of a project's labelling queue."""
    status = state.client.queue_status(ref)
    items = status.get("items", {})
    emit(
        state,
        status,
        lambda: table(
            ["OPEN", "DONE", "TOTAL", "LIVE LEASES", "SUBMISSIONS"],
            [
                [
                    items.get("open", 0),
                    items.get("done", 0),
                    status.get("items_total", 0),
                    status.get("live_leases", 0),
                    status.get("submissions", 0),
                ]
            ],
            right=[0, 1, 2, 3, 4],
        ),
    )


# -- labels -------------------------------------------------------------------------------------------


@main.group()
def labels() -> None:
    """A project's labels: export, and import onto its assets."""


@labels.command("export")
@click.argument("project")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "folder", "coco", "yolo", "voc"]),
    required=True,
    help="jsonl, csv or folder (a zip); coco (JSON), yolo or voc (zips holding the images).",
)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=True, writable=True), help="File to write.")
@json_option
@pass_state
def labels_export(state: State, project: str, fmt: str, output: str) -> None:
    """Export PROJECT's labels on the server, wait for it, and download the file to -o."""
    client = state.client
    job = wait_export(state, client.labels_export(project, fmt))
    if job["status"] != "done":
        raise Failure(f"export {job['id']} failed: {job.get('error') or 'no reason given'}")
    path = client.export_download(job["id"], output)
    out = {**job, "path": str(path), "bytes": path.stat().st_size}
    emit(
        state,
        out,
        lambda: click.echo(f"saved {path} ({out['bytes']} bytes, {job['rows']} labelled images, {fmt})"),
    )


def watch_job(
    state: State,
    job: JSON,
    *,
    noun: str,
    fetch: Callable[[int], JSON],
    count: tuple[str, str],
    gone: str,
    quiet: bool = False,
    leave: bool = True,
) -> JSON:
    """Poll a worker's job until it finishes, with a status line counting `count` = (field, unit)."""
    interval = poll_interval()
    field, unit = count
    spinner = tqdm(
        total=None,
        desc=f"{noun} {job['id']} {job['status']}",
        bar_format="{desc} {n_fmt} " + unit + " [{elapsed}]",
        disable=state.json or quiet,
        leave=leave,
    )
    try:
        while job["status"] not in EXPORT_FINISHED:
            time.sleep(interval)
            job = fetch(job["id"])
            spinner.set_description(f"{noun} {job['id']} {job['status']}")
            spinner.n = job.get(field) or 0
            spinner.refresh()
    except KeyboardInterrupt:
        spinner.close()
        stop_watching(f"{noun} {job['id']} {gone}")
    finally:
        spinner.close()
    return job


def wait_export(state: State, job: JSON) -> JSON:
    return watch_job(
        state,
        job,
        noun="export",
        fetch=state.client.export_get,
        count=("rows", "rows"),
        gone="is still being written on the server",
    )


LABEL_IMPORT_FORMATS = ["jsonl", "csv", "folder", "coco", "yolo", "voc"]


@labels.command("import")
@click.argument("project")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(LABEL_IMPORT_FORMATS),
    required=True,
    help="jsonl or csv; folder, yolo or voc (zips); coco (JSON).",
)
@click.option("--show", type=click.IntRange(0), default=10, show_default=True, help="Bad entries printed.")
@json_option
@pass_state
def labels_import(state: State, project: str, path: str, fmt: str, show: int) -> None:
    """Upload the label file PATH, wait while the server matches it onto PROJECT's assets (by sha256,
    else by file name), and print what was labelled, unmatched and refused."""
    client = state.client
    job = wait_label_import(state, client.labels_import(project, path, fmt))
    if state.json:
        print_json(job)
    else:
        errors = job.get("errors") or []
        click.echo(
            f"label import {job['id']} {job['status']}: {job.get('labelled', 0)} labelled, "
            f"{job.get('unmatched', 0)} unmatched, {len(errors)} errors"
        )
        for err in errors[:show]:
            click.echo(f"  {err.get('entry')}: {err.get('reason')}")
        if len(errors) > show:
            click.echo(f"  ... and {len(errors) - show} more (see --json)")
        if job.get("error") and job["status"] != "failed":
            click.echo(job["error"])
    if job["status"] == "failed":
        raise Failure(f"label import {job['id']} failed: {job.get('error') or 'no reason given'}")


def wait_label_import(state: State, job: JSON) -> JSON:
    # Nothing to watch when the job is already finished; the line is cleared once it is.
    return watch_job(
        state,
        job,
        noun="label import",
        fetch=state.client.label_import_get,
        count=("labelled", "labelled"),
        gone="goes on on the server",
        quiet=job["status"] in EXPORT_FINISHED,
        leave=False,
    )


def kappa(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


@labels.command("agreement")
@click.argument("project")
@json_option
@pass_state
def labels_agreement(state: State, project: str) -> None:
    """Agreement between PROJECT's annotators: percent, Fleiss' kappa, and a table of annotator pairs."""
    data = state.client.agreement(project)

    def human() -> None:
        click.echo(
            f"{data['kind']}: {data['items']} items with two or more annotators, {data['annotators']} annotators"
        )
        if not data["items"]:
            click.echo("nothing to compare yet")
            return
        boxes = data.get("boxes")
        line = f"agreement {pct(data['percent'])}"
        if boxes is None:
            line += f", Fleiss' kappa {kappa(data['fleiss_kappa'])} (over {data.get('fleiss_items', 0)} items)"
        else:
            line += f", mean IoU {kappa(boxes['mean_iou'])}, F1 {kappa(boxes['f1'])}"
        click.echo(line)
        if boxes is None:
            headers = ["A", "B", "ITEMS", "AGREEMENT", "COHEN KAPPA"]
            rows = [
                [p["a_name"], p["b_name"], p["items"], pct(p["percent"]), kappa(p["cohen_kappa"])]
                for p in data["pairs"]
            ]
        else:
            headers = ["A", "B", "ITEMS", "AGREEMENT", "MEAN IOU", "F1"]
            rows = [
                [p["a_name"], p["b_name"], p["items"], pct(p["percent"]), kappa(p.get("mean_iou")), kappa(p.get("f1"))]
                for p in data["pairs"]
            ]
        table(headers, rows, right=list(range(2, len(headers))))

    emit(state, data, human)


# -- imports ------------------------------------------------------------------------------------------


@main.command("import")
@click.argument("project")
@click.argument("path")
@click.option("--server", is_flag=True, help="PATH is a folder on the server, under its import roots.")
@click.option("--wait", is_flag=True, help="Show the import's progress until it is done, then a summary.")
@click.option("--manifest", "source_kind", flag_value="manifest", help="PATH is a CSV or JSON manifest (path,label).")
@click.option("--digits", "source_kind", flag_value="digits", help="PATH is a DIGITS list (path label_index lines).")
@click.option("--urls", "source_kind", flag_value="urls", help="PATH lists http(s) URLs (or url,label CSV).")
@click.option("--s3", "source_kind", flag_value="s3", help="PATH is s3://bucket/prefix (class folders below it).")
@click.option("--text-csv", "source_kind", flag_value="text_csv", help="PATH is a CSV of texts (with --column).")
@click.option("--format", "annotation_format", type=click.Choice(["coco", "yolo", "voc"]), help="PATH is such a zip.")
@click.option("--column", default=None, help="--text-csv: the column that holds the texts.")
@click.option("--label-column", default=None, help="--text-csv: the column that holds the labels.")
@json_option
@pass_state
def import_(
    state: State,
    project: str,
    path: str,
    server: bool,
    wait: bool,
    source_kind: str | None = None,
    annotation_format: str | None = None,
    column: str | None = None,
    label_column: str | None = None,
) -> None:
    """Import PATH into PROJECT: a local folder of class subfolders (zipped and uploaded), or a zip.

    Other sources: --manifest, --digits, --urls, --text-csv (a local file, or one on the server with
    --server), --s3 s3://bucket/prefix, and --format coco|yolo|voc for a zip of images and annotations.
    """
    client = state.client
    if source_kind or annotation_format:
        job = import_other_source(
            state,
            project,
            path,
            server=server,
            kind=source_kind,
            annotation_format=annotation_format,
            column=column,
            label_column=label_column,
        )
    elif server:
        job = client.import_server(project, path)
    else:
        if not Path(path).exists():
            raise Failure(f"{path}: no such local file or folder (use --server for a folder on the server)")
        if Path(path).is_file() and not zipfile.is_zipfile(path):
            raise Failure(f"{path}: not a zip file; give a zip or a folder of class subfolders")
        job = client.import_upload(project, path)
    if not state.json:
        click.echo(f"import {job['id']} {job['status']}: {job.get('source_label') or path} into {project}")
    if wait:
        job = wait_import(state, job)
    if state.json:
        print_json(job)
    elif wait:
        import_summary(job)
    if job["status"] == "failed":
        raise Failure(f"import {job['id']} failed: {job.get('message') or 'no reason given'}")


def import_other_source(
    state: State,
    project: str,
    path: str,
    *,
    server: bool,
    kind: str | None,
    annotation_format: str | None,
    column: str | None,
    label_column: str | None,
) -> JSON:
    """Start an import of a manifest, DIGITS list, URL list, S3 prefix, text CSV or annotated zip."""
    if kind and annotation_format:
        raise Failure(f"--format {annotation_format} and --{kind.replace('_', '-')} are two sources; give one")
    kind = kind or annotation_format or ""
    if kind == "text_csv" and not column:
        raise Failure("--text-csv needs --column, the column that holds the texts")
    if kind != "text_csv" and (column or label_column):
        raise Failure("--column and --label-column go with --text-csv")
    fields = {"column": column, "label_column": label_column}
    if kind == "s3":
        if not path.startswith("s3://"):
            raise Failure(f"{path}: --s3 takes s3://bucket/prefix")
        return state.client.import_source(project, kind, path=path)
    if server:
        if kind in ("coco", "yolo", "voc"):
            raise Failure(f"--format {kind} takes a local zip, not a server path")
        return state.client.import_source(project, kind, path=path, **fields)
    local = Path(path)
    if not local.is_file():
        raise Failure(f"{path}: no such local file (use --server for a file on the server)")
    if kind in ("coco", "yolo", "voc") and not zipfile.is_zipfile(local):
        raise Failure(f"{path}: not a zip file; --format {kind} takes a zip of images and annotations")
    return state.client.import_source(project, kind, local=local, **fields)


@main.command("import-status")
@click.argument("job_id", metavar="JOB", type=int)
@click.option("--wait", is_flag=True, help="Show the import's progress until it is done.")
@json_option
@pass_state
def import_status(state: State, job_id: int, wait: bool) -> None:
    """An import job's progress and, once finished, its summary with the unreadable files."""
    job = state.client.import_get(job_id)
    if wait:
        job = wait_import(state, job)
    emit(state, job, lambda: import_summary(job))
    if job["status"] == "failed":
        raise Failure(f"import {job['id']} failed: {job.get('message') or 'no reason given'}")


def wait_import(state: State, job: JSON) -> JSON:
    client, interval = state.client, poll_interval()
    progress = tqdm(total=job.get("total") or None, unit="file", desc=f"import {job['id']}", disable=state.json)
    try:
        while True:
            if job.get("total") and progress.total != job["total"]:
                progress.total = job["total"]
            progress.n = job.get("processed", 0)
            progress.set_postfix(
                imported=job.get("imported", 0),
                duplicates=job.get("duplicates", 0),
                errors=len(job.get("errors") or []),
            )
            if job["status"] in IMPORT_FINISHED:
                return job
            time.sleep(interval)
            job = client.import_get(job["id"])
    except KeyboardInterrupt:
        progress.close()
        stop_watching(
            f"import {job['id']} goes on on the server: `crucible import-status {job['id']} --wait` to watch it again"
        )
    finally:
        progress.close()


def import_summary(job: JSON, limit: int = 20) -> None:
    errors = job.get("errors") or []
    click.echo(
        f"import {job['id']} {job['status']}: {job.get('processed', 0)} of {job.get('total', 0)} files, "
        f"{job.get('imported', 0)} imported, {job.get('duplicates', 0)} duplicates, {len(errors)} unreadable"
    )
    for err in errors[:limit]:
        click.echo(f"  {err.get('path')}: {err.get('reason')}")
    if len(errors) > limit:
        click.echo(f"  ... and {len(errors) - limit} more (see --json)")
    if job.get("message") and job["status"] != "failed":
        click.echo(job["message"])


def stop_watching(hint: str) -> NoReturn:
    click.echo(f"stopped watching; {hint}", err=True)
    raise click.exceptions.Exit(130)


# -- datasets -----------------------------------------------------------------------------------------


@main.group()
def dataset() -> None:
    """Dataset versions: create, list, show, diff."""


def split_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a new version's resizing and split (`dataset create` and `dataset freeze`)."""
    options = [
        click.option(
            "--resize",
            type=click.Choice(["squash", "crop", "fill", "half_crop"]),
            default="squash",
            show_default=True,
            help="How images of another shape are brought to --size.",
        ),
        click.option(
            "--val", "val_percent", type=int, help="Percent of each class for validation (server default 25)."
        ),
        click.option("--test", "test_percent", type=int, help="Percent of each class for test (server default 0)."),
        click.option("--min-per-class", type=int, help="Leave out classes with fewer images."),
        click.option("--max-per-class", type=int, help="Take at most this many images of a class."),
        click.option("--seed", "split_seed", type=int, help="Split seed (random and recorded when left out)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@dataset.command("create")
@click.argument("project")
@click.option("--name", required=True)
@click.option("--grayscale/--color", "grayscale", default=None, help="1 channel or 3 (required).")
@click.option("--size", type=Size(), required=True, help="Width x height the images are resized to, e.g. 28x28.")
@split_options
@click.option(
    "--parent",
    metavar="DATASET",
    help="The version this one follows (PROJECT/NAME or id).",
)
@click.option("--wait", is_flag=True, help="Wait until the dataset is ready, then show it.")
@json_option
@pass_state
def dataset_create(
    state: State,
    project: str,
    grayscale: bool | None,
    size: tuple[int, int],
    wait: bool,
    parent: str | None,
    **spec: Any,
) -> None:
    """Freeze a dataset version of PROJECT's labelled images."""
    if grayscale is None:
        raise click.UsageError("choose --grayscale or --color")
    parent_id = state.client.resolve_dataset(parent)["id"] if parent else None
    created = state.client.dataset_create(
        project,
        channels=1 if grayscale else 3,
        width=size[0],
        height=size[1],
        resize_mode=spec.pop("resize"),
        parent=parent_id,
        **spec,
    )
    if not state.json:
        click.echo(f"dataset {label(created)} (id {created['id']}) {created['status']}")
    if wait:
        created = wait_dataset(state, created)
        if not state.json:
            dataset_print(created)
    elif state.json:
        print_json(created)
    if created["status"] == "failed":
        raise Failure(f"dataset {label(created)} failed: {created.get('error') or 'no reason given'}")


def wait_dataset(state: State, ds: JSON) -> JSON:
    client, interval = state.client, poll_interval()
    spinner = tqdm(
        total=None, desc=f"dataset {label(ds)} {ds['status']}", bar_format="{desc} [{elapsed}]", disable=state.json
    )
    try:
        while ds["status"] not in DATASET_FINISHED:
            time.sleep(interval)
            ds = client.dataset(ds["id"])
            spinner.set_description(f"dataset {label(ds)} {ds['status']}")
            spinner.update(0)
    except KeyboardInterrupt:
        spinner.close()
        stop_watching(f"dataset {label(ds)} is still being written on the server")
    finally:
        spinner.close()
    if state.json:
        print_json(ds)
    return ds


@dataset.command("show")
@click.argument("ref", metavar="DATASET", callback=ref_arg("dataset"))
@json_option
@pass_state
def dataset_show(state: State, ref: str) -> None:
    """A dataset's spec, split seed and images per class per split (PROJECT/NAME or id)."""
    ds = state.client.resolve_dataset(ref)
    emit(state, ds, lambda: dataset_print(ds))


def dataset_print(ds: JSON) -> None:
    click.echo(f"dataset {label(ds)} (id {ds['id']})  status: {ds['status']}")
    if ds.get("error"):
        click.echo(f"error: {ds['error']}")
    colour = {1: "grayscale", 3: "color"}.get(ds.get("channels"), f"{ds.get('channels')} channels")
    click.echo(f"images: {colour}, {ds.get('width')}x{ds.get('height')}, resize {ds.get('resize_mode')}")
    click.echo(
        f"split: val {ds.get('val_percent')}%, test {ds.get('test_percent')}%, seed {ds.get('split_seed')}"
        + (f", min/class {ds['min_per_class']}" if ds.get("min_per_class") is not None else "")
        + (f", max/class {ds['max_per_class']}" if ds.get("max_per_class") is not None else "")
    )
    if ds.get("content_hash"):
        click.echo(f"content hash: {ds['content_hash']}")
    counts: dict[str, dict[str, int]] = ds.get("counts") or {}
    classes = list(ds.get("class_names") or sorted({c for split in counts.values() for c in split}))
    if not classes:
        return
    splits = [s for s in ("train", "val", "test") if any((counts.get(s) or {}).values())] or ["train", "val"]
    totals = {c: sum((counts.get(s) or {}).get(c, 0) for s in splits) for c in classes}
    top = max(totals.values(), default=0)
    click.echo("")
    rows = [[c, *[(counts.get(s) or {}).get(c, 0) for s in splits], totals[c], bar(totals[c], top)] for c in classes]
    sums = [sum((counts.get(s) or {}).values()) for s in splits]
    rows.append(["total", *sums, sum(sums), ""])
    table(["CLASS", *[s.upper() for s in splits], "ALL", ""], rows, right=range(1, len(splits) + 2))


@dataset.command("diff")
@click.argument("a", metavar="A", callback=ref_arg("dataset"))
@click.argument("b", metavar="B", callback=ref_arg("dataset"))
@click.option("--limit", type=click.IntRange(0, 10_000), default=200, show_default=True, help="Items listed per kind.")
@click.option("--show", type=click.IntRange(0), default=10, show_default=True, help="Items printed per kind.")
@json_option
@pass_state
def dataset_diff(state: State, a: str, b: str, limit: int, show: int) -> None:
    """What changed from dataset version A to B (PROJECT/NAME or ids): added, removed, relabelled, moved."""
    first, second = state.client.resolve_dataset(a), state.client.resolve_dataset(b)
    diff = state.client.dataset_diff(first["id"], second["id"], limit=limit)
    emit(state, diff, lambda: dataset_diff_print(diff, label(first), label(second), show))


def dataset_diff_print(diff: JSON, a_name: str, b_name: str, show: int) -> None:
    s = diff["summary"]
    click.echo(
        f"{a_name} -> {b_name}: {s['added']} added, {s['removed']} removed, {s['relabelled']} relabelled, "
        f"{s['moved']} moved split, {s['unchanged']} unchanged"
    )
    for change in diff.get("spec_changed") or []:
        click.echo(f"spec: {change['field']} {change['a']} -> {change['b']}")
    classes = [c for c in diff.get("classes") or [] if any(v for k, v in c.items() if k != "label")]
    if classes:
        click.echo("")
        rows = [
            [c["label"], c["added"], c["removed"], c["relabelled_in"], c["relabelled_out"], c["moved"], c["unchanged"]]
            for c in classes
        ]
        table(["CLASS", "ADDED", "REMOVED", "RELABELLED IN", "RELABELLED OUT", "MOVED", "UNCHANGED"], rows, range(1, 7))
    for kind, items in (diff.get("items") or {}).items():
        if not items or not show:
            continue
        click.echo("")
        click.echo(f"{kind} ({s.get(kind, len(items))}):")
        for item in items[:show]:
            old = f"{item['old_label']} ({item['old_split']})" if item.get("old_label") is not None else "-"
            new = f"{item['new_label']} ({item['new_split']})" if item.get("new_label") is not None else "-"
            who = item.get("changed_by")
            by = ""
            if who:
                through = f" {who['ref']}" if who.get("ref") is not None else ""
                by = f"  by {who.get('actor') or 'system'} via {who['via']}{through}"
            click.echo(f"  {item['sha256'][:12]}  {old} -> {new}{by}")
        if s.get(kind, 0) > min(show, len(items)):
            click.echo(f"  ... and {s[kind] - min(show, len(items))} more (see --json, --limit)")


@dataset.command("list")
@click.argument("project")
@json_option
@pass_state
def dataset_list(state: State, project: str) -> None:
    """PROJECT's dataset versions, newest first."""
    items = state.client.datasets(project)

    def human() -> None:
        rows = []
        for ds in items:
            totals = ds.get("totals") or {}
            rows.append(
                [
                    ds["id"],
                    ds["name"],
                    ds["status"],
                    "gray" if ds.get("channels") == 1 else "color",
                    f"{ds.get('width')}x{ds.get('height')}",
                    ds.get("resize_mode"),
                    len(ds.get("class_names") or []),
                    totals.get("train", 0),
                    totals.get("val", 0),
                    totals.get("test", 0),
                ]
            )
        table(
            ["ID", "NAME", "STATUS", "MODE", "SIZE", "RESIZE", "CLASSES", "TRAIN", "VAL", "TEST"], rows, [0, 6, 7, 8, 9]
        )

    emit(state, {"results": items}, human)


@dataset.command("freeze")
@click.argument("project")
@click.option("--name", required=True, help="The version's name.")
@click.option("--grayscale/--color", "grayscale", default=None, help="1 channel or 3 (creates the version).")
@click.option("--size", type=Size(), help="Width x height, e.g. 28x28 (creates the version).")
@split_options
@json_option
@pass_state
def dataset_freeze(
    state: State, project: str, name: str, grayscale: bool | None, size: tuple[int, int] | None, **spec: Any
) -> None:
    """Create a version NAME of PROJECT's current labels and freeze it, all or nothing.

    With --size and --grayscale/--color a new version is created and frozen (nothing is created when
    an evaluation-set image, or a near copy of one, would be in its train split); without them the
    existing version NAME is frozen.
    """
    resize = spec.pop("resize")
    if size is None and grayscale is None:
        if any(v is not None for v in spec.values()):
            raise click.UsageError("split options create a version: give --size and --grayscale or --color too")
        ds = state.client.dataset_freeze(state.client.resolve_dataset(f"{project}/{name}")["id"])
    else:
        if size is None or grayscale is None:
            raise click.UsageError("creating a version needs both --size and --grayscale or --color")
        ds = state.client.dataset_create_frozen(
            project,
            name=name,
            channels=1 if grayscale else 3,
            width=size[0],
            height=size[1],
            resize_mode=resize,
            **spec,
        )
    emit(
        state, ds, lambda: click.echo(f"dataset {label(ds)} (id {ds['id']}) frozen; content hash {ds['content_hash']}")
    )


class FindingsGroup(click.Group):
    """`crucible findings PROJECT ...` lists; `crucible findings decide|scan ...` are subcommands."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["list", *args]
        return super().parse_args(ctx, args)


@main.group(cls=FindingsGroup)
def findings() -> None:
    """Cleaning findings: list them (findings PROJECT), decide them, scan a project for them."""


FINDING_KINDS = (
    "unreadable", "odd_size", "odd_mode", "odd_aspect", "near_blank", "exact_duplicate", "near_duplicate",
    "conflicting_labels", "class_imbalance", "label_error", "split_leak",
)  # fmt: skip


def finding_summary(f: JSON) -> str:
    ev = f.get("evidence") or {}
    for key in ("reason", "size", "mode"):
        if key in ev and not isinstance(ev[key], (dict, list)):
            text = f"{key} {ev[key]}"
            if "labels" in ev:
                text += f"; labels {', '.join(ev['labels'])}"
            return text
    if "ratio" in ev:
        return f"ratio {ev['ratio']} ({ev['largest']['label']} / {ev['smallest']['label']})"
    if "count" in ev:
        return f"{ev['count']} pair(s) in {ev.get('version_name', '')}"
    return ""


@findings.command("list", hidden=True)
@click.argument("project")
@click.option("--kind", type=click.Choice(FINDING_KINDS))
@click.option("--decision", type=click.Choice(["open", "keep", "drop", "relabel", "merge"]))
@json_option
@pass_state
def findings_list(state: State, project: str, kind: str | None, decision: str | None) -> None:
    """PROJECT's findings, oldest first."""
    items = state.client.findings_all(project, kind=kind, decision=decision)

    def human() -> None:
        rows = [
            [f["id"], f["kind"], (f.get("sha256") or "")[:12], f.get("label") or "", f["decision"], finding_summary(f)]
            for f in items
        ]
        table(["ID", "KIND", "ASSET", "LABEL", "DECISION", "WHY"], rows, [0])
        click.echo(f"{len(items)} finding(s)")

    emit(state, {"results": items}, human)


@findings.command("decide")
@click.argument("target", metavar="ID|PROJECT")
@click.option("--decision", type=click.Choice(["keep", "drop", "relabel", "merge"]), help="For one finding ID.")
@click.option("--note", default="", help="Why (kept with the decision).")
@click.option("--label", "new_label", help="With --decision relabel: the new label (else the relabel queue).")
@click.option(
    "--rule",
    type=click.Choice(["drop_unreadable", "keep_oldest_duplicate", "relabel_conflicts"]),
    help="Decide every open finding the rule covers in PROJECT.",
)
@json_option
@pass_state
def findings_decide(
    state: State, target: str, decision: str | None, note: str, new_label: str | None, rule: str | None
) -> None:
    """Decide finding ID (--decision), or every open finding of PROJECT a --rule covers."""
    if rule:
        if decision or new_label:
            raise click.UsageError("--rule decides many findings: leave out --decision and --label")
        answer = state.client.findings_decide_rule(target, rule)
        emit(state, answer, lambda: click.echo(f"rule {rule}: {answer['decided']} finding(s) decided"))
        return
    if not decision:
        raise click.UsageError("give --decision for one finding, or --rule with a project")
    if not target.isdigit():
        raise click.BadParameter(f"{target!r} is not a finding id", param_hint="ID")
    f = state.client.finding_decide(int(target), decision=decision, note=note, label=new_label)
    emit(state, f, lambda: click.echo(f"finding {f['id']} ({f['kind']}): {f['decision']}"))


@findings.command("scan")
@click.argument("project")
@json_option
@pass_state
def findings_scan(state: State, project: str) -> None:
    """Queue a cleaning scan of PROJECT (hashes, duplicates, odd images, leaks); list the findings after."""
    answer = state.client.findings_scan(project)
    emit(state, answer, lambda: click.echo(f"scan of {project} queued; see `crucible findings {project}`"))


@findings.command("label-errors")
@click.argument("dataset_ref", metavar="DATASET", callback=ref_arg("dataset"))
@click.option("--folds", type=int, default=5, show_default=True, help="Cross-validation folds.")
@click.option("--epochs", type=int, default=5, show_default=True, help="Epochs of each fold's network.")
@click.option("--network", default="lenet", show_default=True)
@click.option("--relabel-top", type=int, default=50, show_default=True, help="Suspects sent to relabelling.")
@click.option("--seed", type=int, default=None, help="Fixes the folds and the networks' initialisation.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait for the scan to finish.")
@json_option
@pass_state
def findings_label_errors(state: State, dataset_ref: str, wait: bool, **options: Any) -> None:
    """Scan DATASET for likely label errors: K-fold cross-validation on the train queue, confident
    learning on the out-of-sample probabilities; suspects become findings, the top ones go to relabelling."""
    ds = state.client.resolve_dataset(dataset_ref)
    scan = state.client.label_errors_scan(ds["id"], **options)
    if wait:
        scan = wait_label_error_scan(state, scan)
    emit(
        state,
        scan,
        lambda: click.echo(
            f"label error scan {scan['id']} of {label(ds)}: {scan['status']}"
            + (
                f", {scan['suspects']} suspects, {scan['sent_to_relabel']} sent to relabelling"
                if scan["status"] == "done"
                else ""
            )
            + (f" ({scan['error']})" if scan["error"] else "")
        ),
    )
    if scan["status"] == "failed":
        raise SystemExit(1)


def wait_label_error_scan(state: State, scan: JSON) -> JSON:
    client, interval = state.client, poll_interval()
    bar_ = tqdm(total=scan["folds"], desc=f"label error scan {scan['id']}", unit="fold", disable=state.json)
    try:
        while scan["status"] not in ("done", "failed"):
            time.sleep(interval)
            scan = client.label_error_scan(scan["id"])
            bar_.n = scan["folds_done"]
            bar_.refresh()
    except KeyboardInterrupt:
        bar_.close()
        stop_watching(f"label error scan {scan['id']} goes on on the server")
    finally:
        bar_.close()
    return scan


# -- training -----------------------------------------------------------------------------------------


@main.command()
@click.argument("dataset_ref", metavar="DATASET", callback=ref_arg("dataset"))
@click.option("--name", required=True, help="The run's name, unique in its project.")
@click.option("--network", type=click.Choice(["lenet", "resnet18"]), default="lenet", show_default=True)
@click.option("--epochs", type=int, help="Epochs to train (server default 30).")
@click.option("--seed", type=int, help="Random seed (random and recorded when left out).")
@click.option("--lr", type=float, help="Learning rate (server default 0.01).")
@click.option("--lr-policy", type=click.Choice(["fixed", "step"]))
@click.option("--lr-step-epochs", type=int, help="With --lr-policy step: epochs between steps.")
@click.option("--lr-gamma", type=float, help="With --lr-policy step: factor at each step.")
@click.option("--batch", "batch_size", type=int, help="Batch size (server default 64).")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]))
@click.option("--momentum", type=float)
@click.option("--weight-decay", type=float, help="L2 penalty (server default 0).")
@click.option(
    "--mean",
    "mean_subtraction",
    type=click.Choice(["none", "image", "pixel"]),
    help="Subtract the training split's mean image, its mean per channel, or nothing (server default none).",
)
@click.option(
    "--augment",
    "augmentation",
    type=click.Choice(["none", "shift"]),
    help="Training-time augmentation: shift moves each training image up to 2 px in x and y "
    "(server default shift). Validation and inference never augment.",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--from", "from_", metavar="RUN@EPOCH", callback=run_epoch_arg, help="Continue from a run's checkpoint.")
@click.option("--follow", is_flag=True, help="Follow the run's progress until it finishes.")
@json_option
@pass_state
def train(
    state: State, dataset_ref: str, name: str, from_: tuple[str, int | None] | None, follow: bool, **config: Any
) -> None:
    """Start a training run on DATASET (PROJECT/NAME or id)."""
    client = state.client
    ds = client.resolve_dataset(dataset_ref)
    if from_ is not None:
        parent = client.resolve_run(from_[0])
        config.update(from_run=parent["id"], from_epoch=from_[1])
    run = client.run_start(ds["id"], name=name, **config)
    started(state, run, follow)


def started(state: State, run: JSON, follow: bool) -> None:
    if not state.json:
        cfg = run.get("config") or {}
        click.echo(
            f"run {label(run)} (id {run['id']}) {run['status']}: {cfg.get('network')}, {cfg.get('epochs')} epochs, "
            f"seed {run.get('seed')}, dataset {run.get('dataset_name') or run.get('dataset')}"
        )
    if follow:
        follow_run(state, run)
    elif state.json:
        print_json(run)


def follow_run(state: State, run: JSON) -> None:
    """A progress bar over the run, polled about every second; exit 1 unless it ends done."""
    client, interval, name = state.client, poll_interval(), label(run)
    total = (run.get("config") or {}).get("epochs") or 1
    progress = tqdm(
        total=total,
        desc=name,
        disable=state.json,
        bar_format="{l_bar}{bar}| {n:.1f}/{total} epochs [{elapsed}<{remaining}{postfix}]",
    )
    try:
        while True:
            epochs = run.get("epochs") or []
            last = epochs[-1] if epochs else {}
            progress.n = min(total, round((run.get("progress") or 0) * total, 2))
            progress.set_postfix_str(
                ", ".join(
                    [
                        run["status"],
                        f"epoch {run.get('current_epoch', 0)}/{total}",
                        f"val acc {pct(last.get('val_accuracy'))}",
                        f"loss {last['train_loss']:.4f}" if last.get("train_loss") is not None else "loss -",
                        f"{run['images_per_sec']:.0f} img/s" if run.get("images_per_sec") else "- img/s",
                    ]
                ),
                refresh=True,
            )
            if run["status"] in RUN_FINISHED:
                break
            time.sleep(interval)
            run = client.run(run["id"])
    except KeyboardInterrupt:
        progress.close()
        stop_watching(
            f"run {name} goes on on the server: follow it again with `crucible run follow {name}`, "
            f"stop it with `crucible run abort {name}`"
        )
    finally:
        progress.close()
    if state.json:
        print_json(run)
    if run["status"] != "done":
        raise Failure(f"run {name} {run['status']}" + (f": {run['error']}" if run.get("error") else ""))
    if not state.json:
        click.echo(run_outcome(run))


def run_outcome(run: JSON) -> str:
    epochs = [e for e in run.get("epochs") or [] if e.get("val_accuracy") is not None]
    if not epochs:
        return f"run {label(run)} {run['status']} after {run.get('current_epoch', 0)} epochs"
    best = max(epochs, key=lambda e: e["val_accuracy"])
    return (
        f"run {label(run)} {run['status']}: {run.get('current_epoch')} epochs, best val accuracy "
        f"{pct(best['val_accuracy'])} at epoch {best['epoch']}, last {pct(epochs[-1]['val_accuracy'])}"
    )


@main.group()
def run() -> None:
    """Training runs: show, list, follow, abort, clone."""


@run.command("show")
@click.argument("ref", metavar="RUN", callback=ref_arg("run"))
@json_option
@pass_state
def run_show(state: State, ref: str) -> None:
    """A run's configuration, lineage and metrics per epoch (PROJECT/NAME or id)."""
    run = state.client.resolve_run(ref)
    if "epochs" not in run:  # list answers may leave the epochs out
        run = state.client.run(run["id"])
    emit(state, run, lambda: run_print(run))


def run_print(run: JSON) -> None:
    cfg = run.get("config") or {}
    click.echo(f"run {label(run)} (id {run['id']})  status: {run['status']}")
    if run.get("error"):
        click.echo(f"error: {run['error']}")
    click.echo(f"dataset: {run.get('dataset_name') or run.get('dataset')} (id {run.get('dataset')})")
    click.echo(f"seed: {run.get('seed')}  device: {run.get('device')} -> {run.get('device_used') or '-'}")
    click.echo("config: " + ", ".join(f"{k}={v}" for k, v in cfg.items()))
    lineage = []
    if run.get("cloned_from"):
        lineage.append(f"clone of run {run['cloned_from']}")
    if run.get("parent_run"):
        lineage.append(f"continues run {run['parent_run']}@{run.get('parent_epoch')}")
    if run.get("clones"):
        lineage.append("clones: " + ", ".join(map(str, run["clones"])))
    if run.get("continuations"):
        lineage.append("continued by: " + ", ".join(map(str, run["continuations"])))
    if lineage:
        click.echo("lineage: " + "; ".join(lineage))
    click.echo(
        f"progress: {100 * (run.get('progress') or 0):.0f}%,"
        f" epoch {run.get('current_epoch', 0)}/{cfg.get('epochs', '?')}"
        + (f", {run['images_per_sec']:.0f} img/s" if run.get("images_per_sec") else "")
        + (f", eta {run['eta_seconds']:.0f}s" if run.get("eta_seconds") and run["status"] == "running" else "")
    )
    epochs = run.get("epochs") or []
    if epochs:
        click.echo("")
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        table(
            ["EPOCH", "TRAIN LOSS", "VAL LOSS", "VAL ACC", "", "LR", "IMG/S", "SECONDS"],
            [
                [
                    e["epoch"],
                    fmt(e.get("train_loss"), ".4f"),
                    fmt(e.get("val_loss"), ".4f"),
                    pct(e.get("val_accuracy")),
                    bar(e.get("val_accuracy") or 0, 1),
                    fmt(e.get("learning_rate"), ".3g"),
                    fmt(e.get("images_per_sec"), ".0f"),
                    fmt(e.get("seconds"), ".1f"),
                ]
                for e in epochs
            ],
            right=[0, 1, 2, 3, 5, 6, 7],
        )
        click.echo(run_outcome(run))


@run.command("list")
@click.argument("project")
@json_option
@pass_state
def run_list(state: State, project: str) -> None:
    """PROJECT's training runs, newest first."""
    runs = state.client.runs(project)
    emit(
        state,
        {"results": runs},
        lambda: table(
            ["ID", "NAME", "DATASET", "STATUS", "EPOCH", "PROGRESS", "SEED", "CREATED"],
            [
                [
                    r["id"],
                    r["name"],
                    r.get("dataset_name") or r.get("dataset"),
                    r["status"],
                    f"{r.get('current_epoch', 0)}/{(r.get('config') or {}).get('epochs', '?')}",
                    f"{100 * (r.get('progress') or 0):.0f}%",
                    r.get("seed"),
                    (r.get("created_at") or "")[:19],
                ]
                for r in runs
            ],
            right=[0, 5],
        ),
    )


@run.command("follow")
@click.argument("ref", metavar="RUN", callback=ref_arg("run"))
@json_option
@pass_state
def run_follow(state: State, ref: str) -> None:
    """Follow a run until it finishes; exit 1 when it fails or is aborted. Ctrl-C stops following only."""
    run = state.client.resolve_run(ref)
    follow_run(state, state.client.run(run["id"]))


@run.command("abort")
@click.argument("ref", metavar="RUN", callback=ref_arg("run"))
@json_option
@pass_state
def run_abort(state: State, ref: str) -> None:
    """Abort a run: at once when queued, after the current batch when running."""
    run = state.client.run_abort(state.client.resolve_run(ref)["id"])
    emit(state, run, lambda: click.echo(f"run {label(run)} {run['status']}"))


@run.command("clone")
@click.argument("ref", metavar="RUN", callback=ref_arg("run"))
@click.option("--name", help="The clone's name (the server picks one when left out).")
@click.option("--new-seed", is_flag=True, help="Draw a new seed instead of repeating the run's seed.")
@click.option("--follow", is_flag=True, help="Follow the clone until it finishes.")
@json_option
@pass_state
def run_clone(state: State, ref: str, name: str | None, new_seed: bool, follow: bool) -> None:
    """Start a new run with RUN's configuration (and seed, unless --new-seed)."""
    clone = state.client.run_clone(state.client.resolve_run(ref)["id"], name=name, new_seed=new_seed)
    started(state, clone, follow)


# -- classification and models ------------------------------------------------------------------------


@main.command()
@click.argument("run_ref", metavar="RUN[@EPOCH]", callback=run_epoch_arg)
@click.argument("sources", metavar="IMAGE... | FOLDER | ZIP", nargs=-1, required=True)
@json_option
@pass_state
def classify(state: State, run_ref: tuple[str, int | None], sources: tuple[str, ...]) -> None:
    """Classify images with a run's model (the last epoch unless @EPOCH), preprocessed like its dataset.

    One image: its top 5, the preprocessing steps and warnings. A folder or zip of class subfolders, or
    several images: one line per image, and with labels the accuracy and the confusion matrix.
    """
    for src in sources:
        if not Path(src).exists():
            raise Failure(f"{src}: no such file or folder")
    client = state.client
    run = client.resolve_run(run_ref[0])
    single = Path(sources[0])
    if len(sources) == 1 and single.is_file() and not zipfile.is_zipfile(single):
        answer = client.classify(run["id"], single, epoch=run_ref[1])
        emit(state, answer, lambda: classify_print(single.name, run, answer))
        return
    if len(sources) > 1:
        folders = [s for s in sources if not Path(s).is_file()]
        if folders:
            raise Failure(f"{folders[0]}: give several image files, or one folder or zip")
        answer = client.classify_many(run["id"], list(sources), epoch=run_ref[1])
    else:
        answer = client.classify_many(run["id"], single, epoch=run_ref[1])
    emit(state, answer, lambda: classify_many_print(run, answer))


def classify_print(name: str, run: JSON, answer: JSON) -> None:
    click.echo(f"{name}: run {label(run)} at epoch {answer.get('epoch')}")
    for item in answer.get("top") or []:
        click.echo(f"  {item['label']:>12}  {pct(item['probability']):>8}  {bar(item['probability'], 1, 30)}")
    steps = answer.get("preprocessing") or []
    if steps:
        click.echo("preprocessing: " + "; ".join(steps))
    print_warnings(answer.get("warnings") or [])


def print_warnings(warnings: list[JSON]) -> None:
    for w in warnings:
        click.echo(f"warning [{w.get('code')}]: {w.get('message')}")
        if w.get("advice"):
            click.echo(f"  advice: {w['advice']}")


def classify_many_print(run: JSON, answer: JSON) -> None:
    results = answer.get("results") or []
    click.echo(f"{len(results)} images: run {label(run)} at epoch {answer.get('epoch')}")
    rows = []
    for r in results:
        top = (r.get("top") or [{}])[0]
        if not r.get("top"):
            mark = "unreadable"
        elif r.get("label") is None:
            mark = ""
        else:
            mark = "ok" if top.get("label") == r["label"] else "WRONG"
        rows.append([r.get("name"), r.get("label") or "-", top.get("label", "-"), pct(top.get("probability")), mark])
    table(["IMAGE", "LABEL", "PREDICTED", "PROB", ""], rows, right=[3])
    seen: dict[str, JSON] = {}
    for r in results:
        for w in r.get("warnings") or []:
            seen.setdefault(w.get("code"), {**w, "count": 0})["count"] += 1
    for w in seen.values():
        w["message"] = f"{w.get('message')} ({w['count']} of {len(results)} images)"
    print_warnings(list(seen.values()))
    if answer.get("accuracy") is not None:
        labelled = sum(1 for r in results if r.get("label") is not None)
        click.echo(f"\naccuracy: {pct(answer['accuracy'])} of {labelled} labelled images")
    confusion = answer.get("confusion")
    if confusion and confusion.get("labels"):
        click.echo("confusion matrix (rows: true label, columns: predicted)")
        labels = confusion["labels"]
        table(
            ["", *labels],
            [[lbl, *row] for lbl, row in zip(labels, confusion["matrix"], strict=False)],
            range(1, len(labels) + 1),
        )


@main.group()
def model() -> None:
    """Trained models: download."""


@model.command("download")
@click.argument("run_ref", metavar="RUN[@EPOCH]", callback=run_epoch_arg)
@click.option("-o", "--output", type=click.Path(dir_okay=True, writable=True), help="File or folder to write to.")
@json_option
@pass_state
def model_download(state: State, run_ref: tuple[str, int | None], output: str | None) -> None:
    """Download a run's model archive (weights, preprocessing, labels) at an epoch (default the last)."""
    client = state.client
    run = client.resolve_run(run_ref[0])
    bars: list[tqdm] = []  # made once the server answers, so a refusal prints only its error line

    def on_start(total: int | None) -> None:
        bars.append(
            tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="download", disable=state.json)
        )

    try:
        path = client.model_download(
            run["id"], output, epoch=run_ref[1], on_start=on_start, on_chunk=lambda n: bars[0].update(n)
        )
    finally:
        for b in bars:
            b.close()
    out = {"run": run["id"], "epoch": run_ref[1], "path": str(path), "bytes": path.stat().st_size}
    emit(state, out, lambda: click.echo(f"saved {path} ({out['bytes']} bytes) from run {label(run)}"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(prog_name="crucible"))
