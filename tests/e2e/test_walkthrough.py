"""The DIGITS walkthrough end to end, through the REST API, with a real Celery worker."""

import io
import os
import signal
import subprocess
import tarfile
import zipfile

import pytest
from PIL import Image, ImageDraw

from crucible.core.models import User
from curation.demo_data import mnist_digits
from tests.e2e.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PER_CLASS = 40


def _mnist_zip() -> bytes:
    """A zip of class subfolders with PER_CLASS real MNIST digits each, plus one broken file."""
    images, labels = mnist_digits()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for label in range(10):
            for i, image in enumerate(images[labels == label][:PER_CLASS]):
                png = io.BytesIO()
                Image.fromarray(image, "L").save(png, "PNG")
                zf.writestr(f"digits/{label}/{i}.png", png.getvalue())
        zf.writestr("digits/3/broken.png", b"\x89PNG\r\n\x1a\nnot really a png")
    return buf.getvalue()


def _red_two() -> bytes:
    """The article's test image: a red "2" on a white background, not 28x28."""
    image = Image.new("RGB", (300, 300), "white")
    draw = ImageDraw.Draw(image)
    draw.line([(90, 90), (150, 60), (210, 100), (90, 240), (220, 240)], fill="red", width=28)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def _get(api, url):
    resp = api.get(url)
    assert resp.status_code == 200, resp.content
    return resp.json()


def _wait_run(api, run_id, statuses=("done",), timeout=300):
    def finished():
        run = _get(api, f"/api/v1/runs/{run_id}/")
        return run if run["status"] in {"done", "failed", "aborted"} or run["status"] in statuses else None

    run = wait_for(finished, timeout=timeout, what=f"run {run_id}")
    assert run["status"] in statuses, run
    return run


def test_digits_walkthrough(celery_worker_process, api):
    admin = User.objects.create_superuser(username="root", password="pw")
    client = api(admin)

    resp = client.post("/api/v1/projects/", {"name": "mnist"}, format="json")
    assert resp.status_code == 201, resp.content

    # 1. Import a zip of class subfolders on the ingest queue; the broken file is reported by name.
    upload = io.BytesIO(_mnist_zip())
    upload.name = "digits.zip"
    resp = client.post("/api/v1/projects/mnist/imports/", {"file": upload}, format="multipart")
    assert resp.status_code == 202, resp.content
    job_id = resp.json()["id"]
    job = wait_for(
        lambda: (j := _get(client, f"/api/v1/imports/{job_id}/"))["status"] in {"done", "failed"} and j, what="import"
    )
    assert job["status"] == "done", job
    assert job["imported"] == 10 * PER_CLASS
    assert [e["path"].endswith("broken.png") for e in job["errors"]] == [True]

    # 2. A grayscale 28x28 dataset; the worker materializes the shards.
    resp = client.post(
        "/api/v1/projects/mnist/datasets/",
        {
            "name": "minidata",
            "channels": 1,
            "width": 28,
            "height": 28,
            "resize_mode": "squash",
            "val_percent": 25,
            "split_seed": 1,
        },
        format="json",
    )
    assert resp.status_code == 201, resp.content
    ds_id = resp.json()["id"]
    dataset = wait_for(
        lambda: (d := _get(client, f"/api/v1/datasets/{ds_id}/"))["status"] != "materializing" and d, what="dataset"
    )
    assert dataset["status"] == "ready", dataset
    assert dataset["totals"]["train"] + dataset["totals"]["val"] == 10 * PER_CLASS
    assert dataset["class_names"] == [str(i) for i in range(10)]

    # 3. Train LeNet on the train queue; every epoch records its metrics.
    run_body = {"name": "TestA", "network": "lenet", "epochs": 3, "batch_size": 32, "lr": 0.01, "seed": 7}
    resp = client.post(f"/api/v1/datasets/{ds_id}/runs/", run_body, format="json")
    assert resp.status_code == 201, resp.content
    run_a = _wait_run(client, resp.json()["id"])
    assert [e["epoch"] for e in run_a["epochs"]] == [1, 2, 3]
    assert all(e["images_per_sec"] > 0 and 0 <= e["val_accuracy"] <= 1 for e in run_a["epochs"])
    assert run_a["seed"] == 7 and run_a["progress"] == 1

    # 5. Classify the article's red "2" at epoch 2: top-5, what preprocessing did, and warnings.
    red = io.BytesIO(_red_two())
    red.name = "red-two.png"
    resp = client.post(f"/api/v1/runs/{run_a['id']}/classify/", {"image": red, "epoch": 2}, format="multipart")
    assert resp.status_code == 200, resp.content
    answer = resp.json()
    assert answer["epoch"] == 2
    assert 1 <= len(answer["top"]) <= 5
    assert sum(t["probability"] for t in answer["top"]) <= 1.0001
    steps = " ".join(answer["preprocessing"]).lower()
    assert "grayscale" in steps and "28x28" in steps
    assert {w["code"] for w in answer["warnings"]} >= {"size_differs", "colour_differs"}

    # 6. A clone with the same seed reproduces its source's metrics exactly on CPU.
    resp = client.post(f"/api/v1/runs/{run_a['id']}/clone/", {}, format="json")
    assert resp.status_code == 201, resp.content
    clone = _wait_run(client, resp.json()["id"])
    assert clone["cloned_from"] == run_a["id"] and clone["seed"] == 7
    metrics = lambda run: [(e["train_loss"], e["val_loss"], e["val_accuracy"]) for e in run["epochs"]]  # noqa: E731
    assert metrics(clone) == metrics(run_a)

    # 7. Continue from TestA at epoch 2; the lineage shows on both runs.
    resp = client.post(
        f"/api/v1/datasets/{ds_id}/runs/",
        {
            "name": "TestB",
            "network": "lenet",
            "epochs": 2,
            "from_run": run_a["id"],
            "from_epoch": 2,
        },
        format="json",
    )
    assert resp.status_code == 201, resp.content
    run_b = _wait_run(client, resp.json()["id"])
    assert run_b["parent_run"] == run_a["id"] and run_b["parent_epoch"] == 2
    assert run_b["id"] in _get(client, f"/api/v1/runs/{run_a['id']}/")["continuations"]

    # 8. Download the model at an epoch: weights, preprocessing, class names, info.
    resp = client.get(f"/api/v1/runs/{run_a['id']}/model/?epoch=3")
    assert resp.status_code == 200
    body = b"".join(resp.streaming_content) if hasattr(resp, "streaming_content") else resp.content
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        names = {n.split("/")[-1] for n in archive.getnames()}
    assert {"weights.pt", "preprocessing.json", "labels.txt", "info.json"} <= names

    # Abort a long run while it trains.
    resp = client.post(
        f"/api/v1/datasets/{ds_id}/runs/", {"name": "long", "network": "lenet", "epochs": 500}, format="json"
    )
    long_id = resp.json()["id"]
    wait_for(lambda: _get(client, f"/api/v1/runs/{long_id}/")["status"] == "running", what="long run to start")
    assert client.post(f"/api/v1/runs/{long_id}/abort/").status_code == 200
    aborted = _wait_run(client, long_id, statuses=("aborted",), timeout=60)
    assert aborted["current_epoch"] < 500


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "--ppid", str(pid), "-o", "pid="], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def test_a_run_whose_worker_dies_resumes_and_matches_an_uninterrupted_run(celery_worker_process, api):
    """The worker process training a run is killed; the task is redelivered and resumes from its
    last checkpoint, ending with exactly the metrics of the same run never interrupted."""
    admin = User.objects.create_superuser(username="root2", password="pw")
    client = api(admin)
    assert client.post("/api/v1/projects/", {"name": "resume"}, format="json").status_code == 201
    upload = io.BytesIO(_mnist_zip())
    upload.name = "digits.zip"
    job_id = client.post("/api/v1/projects/resume/imports/", {"file": upload}, format="multipart").json()["id"]
    wait_for(lambda: _get(client, f"/api/v1/imports/{job_id}/")["status"] == "done", what="import")
    ds = client.post(
        "/api/v1/projects/resume/datasets/",
        {"name": "d", "channels": 1, "width": 28, "height": 28, "resize_mode": "squash", "split_seed": 3},
        format="json",
    ).json()
    wait_for(lambda: _get(client, f"/api/v1/datasets/{ds['id']}/")["status"] == "ready", what="dataset")

    body = {"name": "killed", "network": "lenet", "epochs": 8, "batch_size": 8, "seed": 11}
    run_id = client.post(f"/api/v1/datasets/{ds['id']}/runs/", body, format="json").json()["id"]
    wait_for(lambda: _get(client, f"/api/v1/runs/{run_id}/")["current_epoch"] >= 2, what="two epochs")
    pool = _children(celery_worker_process.pid)
    assert pool, "the worker has no pool process"
    for pid in pool:
        os.kill(pid, signal.SIGKILL)
    killed_at = _get(client, f"/api/v1/runs/{run_id}/")["current_epoch"]
    assert killed_at < 8, "the run finished before the worker could be killed"

    resumed = _wait_run(client, run_id)
    assert [e["epoch"] for e in resumed["epochs"]] == list(range(1, 9))

    clone_id = client.post(f"/api/v1/runs/{run_id}/clone/", {}, format="json").json()["id"]
    clone = _wait_run(client, clone_id)
    metrics = lambda run: [(e["train_loss"], e["val_loss"], e["val_accuracy"]) for e in run["epochs"]]  # noqa: E731
    assert metrics(resumed) == metrics(clone)
