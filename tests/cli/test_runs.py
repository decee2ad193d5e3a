"""Run commands: show, list, follow, abort, clone and train, on runs written straight to the database
(no worker runs in these tests)."""

import json
import threading
import time

import pytest

from curation.models import DatasetVersion
from tests.cli.conftest import one_error_line

pytest.importorskip("training.apis")

from training.models import Epoch, TrainingRun

CONFIG = {"network": "lenet", "epochs": 3, "batch_size": 64, "lr": 0.01, "lr_policy": "fixed", "optimizer": "sgd"}


@pytest.fixture
def minidata(project, admin_user) -> DatasetVersion:
    return DatasetVersion.objects.create(
        project=project,
        name="minidata",
        channels=1,
        width=28,
        height=28,
        resize_mode="squash",
        split_seed=42,
        class_names=["0", "1"],
        counts={"train": {"0": 30, "1": 28}, "val": {"0": 10, "1": 9}, "test": {}},
        status=DatasetVersion.Status.READY,
        created_by=admin_user,
    )


@pytest.fixture
def make_run(minidata, admin_user):
    def _make(name: str, status: str = TrainingRun.Status.DONE, epochs: int = 3, **extra) -> TrainingRun:
        run = TrainingRun.objects.create(
            project=minidata.project,
            dataset_version=minidata,
            name=name,
            config=CONFIG,
            seed=1234,
            device="cpu",
            device_used="cpu",
            status=status,
            current_epoch=epochs,
            progress=epochs / CONFIG["epochs"],
            created_by=admin_user,
            **extra,
        )
        for e in range(1, epochs + 1):
            Epoch.objects.create(
                run=run, epoch=e, train_loss=1.0 / e, val_loss=1.2 / e, val_accuracy=0.5 + 0.1 * e,
                learning_rate=0.01, images_per_sec=5000.0, seconds=1.5, checkpoint_name=f"ckpt/{name}-{e}.pt",
            )  # fmt: skip
        return run

    return _make


def test_run_list_and_show(cli, make_run):
    make_run("TestA")
    listed = cli("run", "list", "digits")
    assert listed.exit_code == 0, listed.stderr
    assert "TestA" in listed.output and "minidata" in listed.output and "3/3" in listed.output
    assert [r["name"] for r in json.loads(cli("run", "list", "digits", "--json").output)["results"]] == ["TestA"]

    shown = cli("run", "show", "digits/TestA")
    assert shown.exit_code == 0, shown.stderr
    assert "seed: 1234" in shown.output
    assert "best val accuracy 80.00% at epoch 3" in shown.output
    assert json.loads(cli("--json", "run", "show", "digits/TestA").output)["epochs"][0]["epoch"] == 1


def test_unknown_run_is_one_line(cli, make_run):
    make_run("TestA")
    assert one_error_line(cli("run", "show", "digits/nope")) == "error: run 'digits/nope' not found"
    assert one_error_line(cli("run", "show", "99999")) == "error: run 99999 not found"
    assert one_error_line(cli("run", "show", "nope/TestA")) == "error: project 'nope' not found"


def test_follow_a_finished_run_exits_0_with_the_outcome(cli, make_run):
    make_run("TestA")
    result = cli("run", "follow", "digits/TestA")
    assert result.exit_code == 0, result.stderr
    assert "run digits/TestA done" in result.output


def test_follow_a_failed_run_exits_1_with_the_status(cli, make_run):
    make_run("TestC", status=TrainingRun.Status.FAILED, epochs=1, error="loss became NaN")
    result = cli("run", "follow", "digits/TestC")
    assert result.exit_code == 1
    # the progress bar on stderr, then one error line
    assert result.stderr.strip().splitlines()[-1] == "error: run digits/TestC failed: loss became NaN"
    assert "Traceback" not in result.stderr


def test_follow_polls_until_the_run_finishes(cli, make_run):
    run = make_run("TestA", status=TrainingRun.Status.RUNNING, epochs=1)

    def finish():
        time.sleep(0.5)
        TrainingRun.objects.filter(pk=run.pk).update(status=TrainingRun.Status.DONE, progress=1.0, current_epoch=3)

    worker = threading.Thread(target=finish)
    worker.start()
    try:
        result = cli("run", "follow", str(run.pk))
    finally:
        worker.join()
    assert result.exit_code == 0, result.stderr
    assert "epoch" in result.stderr and "val acc" in result.stderr  # the progress bar's postfix
    assert "done" in result.output


def test_abort_a_queued_run(cli, make_run):
    run = make_run("TestA", status=TrainingRun.Status.QUEUED, epochs=0)
    result = cli("run", "abort", "digits/TestA")
    assert result.exit_code == 0, result.stderr
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.ABORTED


def test_clone_keeps_the_seed_unless_asked(cli, make_run):
    original = make_run("TestA")
    same = json.loads(cli("run", "clone", "digits/TestA", "--name", "TestA-Clone", "--json").output)
    assert (same["name"], same["seed"], same["cloned_from"]) == ("TestA-Clone", 1234, original.pk)
    other = json.loads(cli("run", "clone", "digits/TestA", "--name", "TestA-Clone2", "--new-seed", "--json").output)
    assert other["seed"] != 1234


def test_train_starts_a_run_and_continues_from_an_epoch(cli, make_run, minidata):
    parent = make_run("TestA")
    result = cli(
        "train", "digits/minidata", "--name", "TestB", "--epochs", "5", "--seed", "7", "--from", "digits/TestA@2"
    )
    assert result.exit_code == 0, result.stderr
    run = TrainingRun.objects.get(name="TestB")
    assert (run.dataset_version, run.seed, run.config["epochs"]) == (minidata, 7, 5)
    assert (run.parent_run, run.parent_epoch) == (parent, 2)


def test_train_refuses_bad_settings_in_one_line(cli, minidata):
    line = one_error_line(cli("train", "digits/minidata", "--name", "TestA", "--epochs", "0"))
    assert line.startswith("error: epochs") and "(invalid" in line
    assert not TrainingRun.objects.exists()


def test_train_on_an_unknown_dataset(cli, project):
    assert one_error_line(cli("train", "digits/nope", "--name", "x")) == "error: dataset 'digits/nope' not found"


def test_ctrl_c_stops_following_only(cli, make_run, monkeypatch):
    run = make_run("TestA", status=TrainingRun.Status.RUNNING, epochs=1)

    def interrupted(_seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr("crucible.cli.time.sleep", interrupted)
    result = cli("run", "follow", "digits/TestA")
    assert result.exit_code == 130
    assert "stopped watching" in result.stderr and "crucible run follow digits/TestA" in result.stderr
    assert "Traceback" not in result.stderr
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.RUNNING and not run.abort_requested


def test_train_passes_augmentation_and_mean_subtraction(cli, minidata):
    options = ["--augment", "none", "--mean", "pixel", "--weight-decay", "0.0005"]
    result = cli("train", "digits/minidata", "--name", "TestA", *options)
    assert result.exit_code == 0, result.stderr
    config = TrainingRun.objects.get(name="TestA").config
    assert (config["augmentation"], config["mean_subtraction"], config["weight_decay"]) == ("none", "pixel", 0.0005)
    assert cli("train", "digits/minidata", "--name", "TestB").exit_code == 0
    config = TrainingRun.objects.get(name="TestB").config
    assert (config["augmentation"], config["mean_subtraction"]) == ("shift", "none")  # the server's defaults
    refused = cli("train", "digits/minidata", "--name", "TestC", "--augment", "flip")
    assert refused.exit_code != 0 and "flip" in refused.stderr
    assert not TrainingRun.objects.filter(name="TestC").exists()
