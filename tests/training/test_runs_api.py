"""Training runs through the REST API, with the `training.run` task run in-process."""

import io
import json
import tarfile
import zipfile
from unittest import mock

import numpy as np
import pytest
import torch
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image, ImageDraw

from crucible.core.models import Project, Role
from curation.selectors import dataset_shard_dir
from training.engine import build_network
from training.models import Epoch, TrainingRun
from training.services import _RunReporter
from training.tasks import run_task

FAST = {"network": "lenet", "epochs": 2, "batch_size": 32, "lr": 0.01}


def start(client, dataset, **body):
    return client.post(f"/api/v1/datasets/{dataset.pk}/runs/", {**FAST, **body}, format="json")


def run_now(run_id: int) -> TrainingRun:
    run_task.apply(kwargs={"run_id": run_id})
    return TrainingRun.objects.get(pk=run_id)


def epochs_of(client, run_id: int) -> list[tuple]:
    data = client.get(f"/api/v1/runs/{run_id}/").json()
    return [(e["epoch"], e["train_loss"], e["val_loss"], e["val_accuracy"], e["learning_rate"]) for e in data["epochs"]]


@pytest.fixture
def trained(api, engineer, dataset, django_capture_on_commit_callbacks):
    """A finished two-epoch run "TestA" with seed 7."""
    with django_capture_on_commit_callbacks(execute=False):
        resp = start(api(engineer), dataset, name="TestA", seed=7)
    assert resp.status_code == 201, resp.json()
    run = run_now(resp.json()["id"])
    assert run.status == "done", run.error
    return run


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def red_two_on_white() -> bytes:
    """The article's test image: a red "2" on a white background, 300x300, in colour."""
    image = Image.new("RGB", (300, 300), "white")
    draw = ImageDraw.Draw(image)
    draw.line([(80, 90), (150, 50), (220, 90), (80, 250), (230, 250)], fill=(220, 0, 0), width=28)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


# Starting runs


def test_start_enqueues_after_commit_and_the_task_trains(api, engineer, dataset, django_capture_on_commit_callbacks):
    with mock.patch.object(run_task, "apply_async") as apply_async, django_capture_on_commit_callbacks(execute=True):
        resp = start(api(engineer), dataset, name="TestA", seed=None)
    assert resp.status_code == 201, resp.json()
    body = resp.json()
    run = TrainingRun.objects.get(pk=body["id"])
    apply_async.assert_called_once_with(kwargs={"run_id": run.pk}, task_id=run.task_id)
    assert body["status"] == "queued" and body["dataset_name"] == "minidata" and body["project_name"] == "digits"
    assert isinstance(body["seed"], int) and body["seed"] == run.seed  # random, recorded
    assert body["config"] == {
        "network": "lenet",
        "epochs": 2,
        "batch_size": 32,
        "lr": 0.01,
        "lr_policy": "step",
        "lr_step_epochs": 10,
        "lr_gamma": 0.1,
        "optimizer": "sgd",
        "momentum": 0.9,
        "weight_decay": 0.0,
        "mean_subtraction": "none",
        "augmentation": "shift",
    }
    run = run_now(run.pk)
    assert run.status == "done" and run.device_used == "cpu" and run.progress == 1.0 and run.current_epoch == 2
    detail = api(engineer).get(f"/api/v1/runs/{run.pk}/").json()
    assert [e["epoch"] for e in detail["epochs"]] == [1, 2]
    assert all(e["images_per_sec"] > 0 and 0 <= e["val_accuracy"] <= 1 for e in detail["epochs"])
    assert detail["finished_at"] and detail["started_at"] and detail["error"] == ""
    assert Epoch.objects.get(run=run, epoch=2).checkpoint_name == f"runs/{run.pk}/epoch-2.pt"


def test_task_is_routed_to_the_train_queue():
    from crucible.celery_app import app

    assert run_task.name == "training.run" and run_task.acks_late and run_task.reject_on_worker_lost
    assert app.amqp.router.route({}, "training.run")["queue"].name == "train"


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"epochs": 0}, "invalid_config", "epochs"),
        ({"epochs": 1001}, "invalid_config", "epochs"),
        ({"batch_size": 0}, "invalid_config", "batch_size"),
        ({"lr": 0}, "invalid_config", "lr"),
        ({"network": "alexnet"}, "unknown_network", "network"),
        ({"optimizer": "rmsprop"}, "invalid_config", "optimizer"),
        ({"lr_policy": "poly"}, "invalid_config", "lr_policy"),
        ({"augmentation": "flip"}, "invalid_config", "augmentation"),
        ({"augmentation": ""}, "invalid", "augmentation"),
        ({"mean_subtraction": "median"}, "invalid_config", "mean_subtraction"),
        ({"weight_decay": -0.1}, "invalid_config", "weight_decay"),
        ({"device": "tpu"}, "invalid", "device"),
        ({"name": "bad/name"}, "invalid_name", "name"),
        ({"from_epoch": 3}, "invalid", "from_epoch"),
        ({"from_run": 999999}, "run_not_found", "from_run"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_created(
    api, engineer, dataset, django_capture_on_commit_callbacks, body, code, field
):
    with django_capture_on_commit_callbacks() as callbacks:
        resp = start(api(engineer), dataset, **{"name": "TestA", **body})
    assert resp.status_code == 400, resp.json()
    assert resp.json()["error"]["code"] == code
    assert field in resp.json()["error"]["fields"]
    assert not TrainingRun.objects.exists() and not callbacks


def test_wrong_types_are_a_json_error(api, engineer, dataset):
    resp = start(api(engineer), dataset, name="TestA", epochs="many")
    assert resp.status_code == 400 and resp.json()["error"]["fields"]["epochs"]


def test_duplicate_name_conflicts(api, engineer, dataset, trained):
    resp = start(api(engineer), dataset, name="TestA")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "duplicate_name"
    assert TrainingRun.objects.count() == 1


def test_dataset_not_ready_conflicts(api, engineer, project, make_dataset):
    version = make_dataset(project, name="pending", status="materializing")
    resp = start(api(engineer), version, name="TestA")
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "dataset_not_ready"


# Abort


def test_abort_of_a_queued_run_is_immediate_and_the_task_does_nothing(
    api, engineer, dataset, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        run_id = start(api(engineer), dataset, name="TestA").json()["id"]
    with (
        mock.patch("crucible.celery_app.app.control.revoke") as revoke,
        django_capture_on_commit_callbacks(execute=True),
    ):
        resp = api(engineer).post(f"/api/v1/runs/{run_id}/abort/")
    assert resp.status_code == 200 and resp.json()["status"] == "aborted" and resp.json()["finished_at"]
    revoke.assert_called_once_with(TrainingRun.objects.get(pk=run_id).task_id)
    run = run_now(run_id)
    assert run.status == "aborted" and not run.epochs.exists() and run.started_at is None
    again = api(engineer).post(f"/api/v1/runs/{run_id}/abort/")
    assert again.status_code == 409 and again.json()["error"]["code"] == "run_finished"


def test_abort_of_a_running_run_stops_after_the_current_batch(
    api, engineer, dataset, django_capture_on_commit_callbacks, monkeypatch
):
    with django_capture_on_commit_callbacks(execute=False):
        run_id = start(api(engineer), dataset, name="TestA", epochs=4).json()["id"]
    original = _RunReporter.on_epoch
    client = api(engineer)

    def on_epoch(self, result, path):
        original(self, result, path)
        if result.epoch == 1:  # an engineer presses "abort" while the run trains
            assert client.post(f"/api/v1/runs/{run_id}/abort/").json()["status"] == "running"

    monkeypatch.setattr(_RunReporter, "on_epoch", on_epoch)
    monkeypatch.setattr("training.services.ABORT_POLL_INTERVAL_S", 0.0)
    monkeypatch.setattr("training.engine.loop.STOP_POLL_INTERVAL_S", 0.0)
    run = run_now(run_id)
    assert run.status == "aborted" and run.finished_at and run.current_epoch == 1
    assert list(run.epochs.values_list("epoch", flat=True)) == [1]


# Clone and continue


def test_clone_repeats_config_seed_and_metrics(api, engineer, trained, django_capture_on_commit_callbacks):
    client = api(engineer)
    with django_capture_on_commit_callbacks(execute=False):
        resp = client.post(f"/api/v1/runs/{trained.pk}/clone/", {}, format="json")
        second = client.post(f"/api/v1/runs/{trained.pk}/clone/", {}, format="json").json()
        fresh = client.post(f"/api/v1/runs/{trained.pk}/clone/", {"name": "TestA-new", "new_seed": True}).json()
    assert resp.status_code == 201, resp.json()
    clone = resp.json()
    assert clone["name"] == "TestA-clone" and second["name"] == "TestA-clone-2"
    assert clone["config"] == trained.config and clone["seed"] == trained.seed == 7
    assert clone["cloned_from"] == trained.pk and clone["status"] == "queued"
    assert fresh["config"] == trained.config and fresh["name"] == "TestA-new"
    assert client.get(f"/api/v1/runs/{trained.pk}/").json()["clones"] == [clone["id"], second["id"], fresh["id"]]
    run_now(clone["id"])
    assert epochs_of(client, clone["id"]) == epochs_of(client, trained.pk)


def test_clone_of_a_run_recorded_before_mean_subtraction_and_augmentation_trains_without_them(
    api, engineer, trained, django_capture_on_commit_callbacks
):
    old_config = {k: v for k, v in trained.config.items() if k not in ("mean_subtraction", "augmentation")}
    TrainingRun.objects.filter(pk=trained.pk).update(config=old_config)
    with django_capture_on_commit_callbacks(execute=False):
        clone = api(engineer).post(f"/api/v1/runs/{trained.pk}/clone/", {}, format="json").json()
    assert clone["config"] == {**old_config, "mean_subtraction": "none", "augmentation": "none"}
    # Its model archive says so too.
    resp = api(engineer).get(f"/api/v1/runs/{trained.pk}/model/")
    with tarfile.open(fileobj=io.BytesIO(b"".join(resp.streaming_content)), mode="r:gz") as tar:
        info = json.load(tar.extractfile("info.json"))
    assert info["config"]["augmentation"] == "none" and info["config"]["mean_subtraction"] == "none"


def test_start_accepts_augmentation_mean_subtraction_and_weight_decay(
    api, engineer, dataset, django_capture_on_commit_callbacks
):
    client = api(engineer)
    with django_capture_on_commit_callbacks(execute=False):
        plain = start(
            client, dataset, name="TestN", seed=3, augmentation="none", mean_subtraction="pixel", weight_decay=5e-4
        )
        shifted = start(client, dataset, name="TestS", seed=3, augmentation="shift", mean_subtraction="image")
    assert plain.status_code == 201 and shifted.status_code == 201, (plain.json(), shifted.json())
    cfg = plain.json()["config"]
    assert (cfg["augmentation"], cfg["mean_subtraction"], cfg["weight_decay"]) == ("none", "pixel", 5e-4)
    cfg = shifted.json()["config"]
    assert (cfg["augmentation"], cfg["mean_subtraction"], cfg["weight_decay"]) == ("shift", "image", 0.0)


def test_continue_from_a_run_at_an_epoch_records_lineage(
    api, engineer, dataset, trained, django_capture_on_commit_callbacks
):
    client = api(engineer)
    with django_capture_on_commit_callbacks(execute=False):
        resp = start(client, dataset, name="TestB", from_run=trained.pk, from_epoch=1, epochs=1, seed=3)
    assert resp.status_code == 201, resp.json()
    child = resp.json()
    assert (child["parent_run"], child["parent_epoch"]) == (trained.pk, 1)
    assert client.get(f"/api/v1/runs/{trained.pk}/").json()["continuations"] == [child["id"]]
    run = run_now(child["id"])
    assert run.status == "done", run.error
    # Started from epoch 1's weights: its first epoch beats a fresh start with the same seed.
    with django_capture_on_commit_callbacks(execute=False):
        scratch = start(client, dataset, name="TestB-scratch", epochs=1, seed=3).json()
    run_now(scratch["id"])
    assert epochs_of(client, child["id"])[0][1] < epochs_of(client, scratch["id"])[0][1]


def test_continue_from_an_epoch_that_does_not_exist_is_refused(api, engineer, dataset, trained):
    resp = start(api(engineer), dataset, name="TestB", from_run=trained.pk, from_epoch=9)
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "epoch_not_found"
    assert TrainingRun.objects.count() == 1


# Worker death and failure


def test_redelivered_task_resumes_from_the_last_checkpoint(api, engineer, dataset, django_capture_on_commit_callbacks):
    client = api(engineer)
    with django_capture_on_commit_callbacks(execute=False):
        run_id = start(client, dataset, name="TestA", epochs=3, seed=5).json()["id"]
    run_now(run_id)
    before = epochs_of(client, run_id)
    # The worker died during epoch 3: its row is gone, the run still says running.
    Epoch.objects.filter(run_id=run_id, epoch=3).delete()
    TrainingRun.objects.filter(pk=run_id).update(status="running", current_epoch=2, finished_at=None)
    with mock.patch("training.services.train", wraps=__import__("training.services").services.train) as spy:
        run = run_now(run_id)
    assert spy.call_args.kwargs["resume_from"].name == "epoch-2.pt"
    assert run.status == "done" and epochs_of(client, run_id) == before


def test_finished_run_is_not_trained_again(trained):
    with mock.patch("training.services.train") as train:
        run_now(trained.pk)
    train.assert_not_called()


def test_failure_is_recorded_with_a_readable_error(
    api, engineer, dataset, django_capture_on_commit_callbacks, storage_dir
):
    with django_capture_on_commit_callbacks(execute=False):
        run_id = start(api(engineer), dataset, name="TestC").json()["id"]
    (storage_dir / dataset.shard_name / "train_x.npy").unlink()
    run = run_now(run_id)
    body = api(engineer).get(f"/api/v1/runs/{run_id}/").json()
    assert run.status == "failed" and body["status"] == "failed"
    assert "train_x.npy" in body["error"] and "Traceback" not in body["error"]


# Classify


def test_classify_a_colour_photo_shows_preprocessing_and_warnings(api, engineer, trained):
    image = SimpleUploadedFile("two.png", red_two_on_white(), content_type="image/png")
    resp = api(engineer).post(f"/api/v1/runs/{trained.pk}/classify/", {"image": image, "epoch": 1}, format="multipart")
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert body["run"] == trained.pk and body["epoch"] == 1
    assert 1 <= len(body["top"]) <= 5
    probabilities = [t["probability"] for t in body["top"]]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-6
    assert body["preprocessing"][0] == "converted RGB to grayscale"
    assert any("300x300" in s and "28x28" in s for s in body["preprocessing"])
    codes = {w["code"] for w in body["warnings"]}
    assert {"size_differs", "colour_differs", "background_differs"} <= codes
    assert all(w["advice"] for w in body["warnings"])


def test_classify_a_training_like_digit_has_no_warnings(api, engineer, trained, digits):
    x, _ = digits
    image = SimpleUploadedFile("d.png", png(x[4000, 0]), content_type="image/png")
    body = api(engineer).post(f"/api/v1/runs/{trained.pk}/classify/", {"image": image}, format="multipart").json()
    assert body["epoch"] == 2 and body["preprocessing"] == [] and body["warnings"] == []


@pytest.mark.parametrize(
    ("data", "epoch", "code"),
    [(b"not an image at all", None, "unreadable_image"), (None, 9, "epoch_not_found")],
)
def test_classify_bad_input(api, engineer, trained, digits, data, epoch, code):
    payload = {"image": SimpleUploadedFile("f.png", data or png(digits[0][0, 0]))}
    if epoch:
        payload["epoch"] = epoch
    resp = api(engineer).post(f"/api/v1/runs/{trained.pk}/classify/", payload, format="multipart")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == code


def test_classify_many_from_a_zip_of_class_folders(api, engineer, trained, digits):
    x, y = digits
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(4000, 4040):
            zf.writestr(f"test/{y[i]}/{i}.png", png(x[i, 0]))
        zf.writestr("loose.png", png(x[4100, 0]))
        zf.writestr("3/broken.png", b"junk")
    upload = SimpleUploadedFile("set.zip", buf.getvalue(), content_type="application/zip")
    resp = api(engineer).post(f"/api/v1/runs/{trained.pk}/classify-many/", {"file": upload}, format="multipart")
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert len(body["results"]) == 42
    by_name = {r["name"]: r for r in body["results"]}
    assert by_name["loose.png"]["label"] is None and len(by_name["loose.png"]["top"]) == 5
    assert by_name["3/broken.png"]["top"] == [] and by_name["3/broken.png"]["warnings"][0]["code"] == "unreadable"
    matrix = np.array(body["confusion"]["matrix"])
    assert body["confusion"]["labels"] == [str(i) for i in range(10)] and matrix.shape == (10, 10)
    assert matrix.sum() == 40 and np.bincount(y[4000:4040], minlength=10).tolist() == matrix.sum(1).tolist()
    assert body["accuracy"] == pytest.approx(np.trace(matrix) / 40)


def test_classify_many_loose_images_have_no_accuracy(api, engineer, trained, digits):
    x, _ = digits
    files = [SimpleUploadedFile(f"{i}.png", png(x[i, 0])) for i in range(3)]
    resp = api(engineer).post(f"/api/v1/runs/{trained.pk}/classify-many/", {"images": files}, format="multipart")
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert [r["name"] for r in body["results"]] == ["0.png", "1.png", "2.png"]
    assert body["accuracy"] is None and body["confusion"] is None


def test_classify_many_refuses_a_non_zip(api, engineer, trained):
    upload = SimpleUploadedFile("set.zip", b"plain text")
    resp = api(engineer).post(f"/api/v1/runs/{trained.pk}/classify-many/", {"file": upload}, format="multipart")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "not_a_zip"


# Model archive


def test_model_archive_holds_weights_preprocessing_labels_and_info(api, engineer, trained, dataset):
    resp = api(engineer).get(f"/api/v1/runs/{trained.pk}/model/?epoch=1")
    assert resp.status_code == 200
    assert resp["Content-Type"] == "application/gzip"
    assert 'filename="TestA-ep1.tar.gz"' in resp["Content-Disposition"]
    with tarfile.open(fileobj=io.BytesIO(b"".join(resp.streaming_content)), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["info.json", "labels.txt", "preprocessing.json", "weights.pt"]
        state = torch.load(tar.extractfile("weights.pt"), weights_only=True)
        preprocessing = json.load(tar.extractfile("preprocessing.json"))
        labels = tar.extractfile("labels.txt").read().decode().splitlines()
        info = json.load(tar.extractfile("info.json"))
    build_network("lenet", channels=1, height=28, width=28, num_classes=10).load_state_dict(state)
    assert preprocessing["scale"] == pytest.approx(1 / 255)
    assert preprocessing["mean_subtraction"] == "none" and preprocessing["mean_file"] is None
    assert {k: preprocessing[k] for k in ("channels", "width", "height", "resize_mode")} == dataset.spec
    assert labels == [str(i) for i in range(10)]
    assert info["epoch"] == 1 and info["seed"] == 7 and info["network"] == "lenet"
    assert info["dataset"]["content_hash"] == dataset.content_hash and info["config"] == trained.config
    assert info["config"]["augmentation"] == "shift"  # training only: inference never augments
    assert "never to validation or inference" in preprocessing["note"]
    assert info["metrics"]["val_accuracy"] == Epoch.objects.get(run=trained, epoch=1).val_accuracy
    assert info["lineage"] == {"cloned_from": None, "parent_run": None, "parent_epoch": None}
    missing = api(engineer).get(f"/api/v1/runs/{trained.pk}/model/?epoch=7")
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "epoch_not_found"


def test_model_archive_of_a_run_that_subtracted_the_mean_image_holds_it(
    api, engineer, dataset, django_capture_on_commit_callbacks
):
    from training.services import training_run_start

    with django_capture_on_commit_callbacks(execute=False):
        run = training_run_start(
            dataset_version=dataset, user=engineer, name="TestM", config={**FAST, "mean_subtraction": "image"}, seed=7
        )
    assert run_now(run.pk).status == "done"
    resp = api(engineer).get(f"/api/v1/runs/{run.pk}/model/")
    with tarfile.open(fileobj=io.BytesIO(b"".join(resp.streaming_content)), mode="r:gz") as tar:
        assert "mean.npy" in tar.getnames()
        preprocessing = json.load(tar.extractfile("preprocessing.json"))
        mean = np.load(io.BytesIO(tar.extractfile("mean.npy").read()))
    assert preprocessing["mean_subtraction"] == "image" and preprocessing["mean_file"] == "mean.npy"
    # The training split's mean image, exactly as the run subtracted it.
    train_x = np.load(dataset_shard_dir(version=dataset) / "train_x.npy")
    assert mean.dtype == np.float32 and mean.shape == (1, 28, 28)
    assert np.array_equal(mean, train_x.astype(np.float64).mean(0).astype(np.float32))


# Roles and visibility


def test_annotator_cannot_start_nor_read_runs(api, annotator, dataset, project, trained):
    client = api(annotator)
    resp = start(client, dataset, name="Mine")
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"
    assert client.get(f"/api/v1/projects/{project.name}/runs/").status_code == 403
    assert client.get(f"/api/v1/runs/{trained.pk}/").status_code == 403
    assert TrainingRun.objects.count() == 1


def test_runs_of_other_projects_do_not_exist(api, member, trained, make_user):
    other = Project.objects.create(name="elsewhere")
    outsider = member(other, Role.ENGINEER, "outsider")
    client = api(outsider)
    for resp in [
        client.get(f"/api/v1/runs/{trained.pk}/"),
        client.get(f"/api/v1/projects/{trained.project.name}/runs/"),
        client.post(f"/api/v1/runs/{trained.pk}/abort/"),
        client.post(f"/api/v1/runs/{trained.pk}/clone/", {}, format="json"),
        client.get(f"/api/v1/runs/{trained.pk}/model/"),
        start(client, trained.dataset_version, name="Steal"),
    ]:
        assert resp.status_code == 404, resp.json()
    assert TrainingRun.objects.count() == 1


def test_reviewer_reads_but_cannot_start_abort_or_clone(api, member, project, dataset, trained):
    client = api(member(project, Role.REVIEWER, "rev"))
    assert client.get(f"/api/v1/runs/{trained.pk}/").status_code == 200
    assert client.get(f"/api/v1/projects/{project.name}/runs/").status_code == 200
    assert start(client, dataset, name="Mine").status_code == 403
    assert client.post(f"/api/v1/runs/{trained.pk}/abort/").status_code == 403
    assert client.post(f"/api/v1/runs/{trained.pk}/clone/", {}, format="json").status_code == 403
    assert TrainingRun.objects.count() == 1


def test_list_filters_by_name_in_constant_queries(
    api, engineer, project, dataset, trained, django_capture_on_commit_callbacks, django_assert_max_num_queries
):
    client = api(engineer)
    with django_capture_on_commit_callbacks(execute=False):
        for i in range(3):
            client.post(f"/api/v1/runs/{trained.pk}/clone/", {"name": f"c{i}"}, format="json")
    url = f"/api/v1/projects/{project.name}/runs/"
    assert [r["name"] for r in client.get(url, {"name": "c1"}).json()["results"]] == ["c1"]
    with django_assert_max_num_queries(8) as few:
        names = [r["name"] for r in client.get(url).json()["results"]]
    assert names == ["c2", "c1", "c0", "TestA"]
    # Deleting runs does not change the number of queries: it does not grow with the page.
    TrainingRun.objects.filter(name__in=["c1", "c2"]).delete()
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(url)
