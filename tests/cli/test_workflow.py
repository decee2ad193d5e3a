"""The article's loop through the CLI, end to end on a live server: import a folder, freeze a
dataset, train, classify one image and a folder, download the model, clone.

The worker's tasks run in-process (Celery's eager mode), inside the API requests that queue them.
"""

import json
import tarfile

import pytest
from PIL import Image, ImageDraw

from tests.cli.conftest import one_error_line

pytest.importorskip("curation.tasks")
pytest.importorskip("training.tasks")

pytestmark = pytest.mark.slow


@pytest.fixture
def eager_tasks():
    from crucible.celery_app import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def shapes_folder(root, per_class=12):
    """Three classes a LeNet tells apart in a couple of epochs: bars, columns and boxes."""
    for label in ("bars", "columns", "boxes"):
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            img = Image.new("L", (28, 28), 0)
            draw = ImageDraw.Draw(img)
            offset = i % 6
            if label == "bars":
                draw.rectangle((2, 4 + offset, 25, 8 + offset), fill=255)
            elif label == "columns":
                draw.rectangle((4 + offset, 2, 8 + offset, 25), fill=255)
            else:
                draw.rectangle((6, 6, 21, 21), outline=255, width=2)
            img.putpixel((27, 27), i)  # every image distinct, so none is a duplicate
            img.save(root / label / f"{label}_{i}.png")
    return root


def test_import_dataset_train_classify_download(cli, project, tmp_path, eager_tasks, settings):
    settings.CRUCIBLE_IMPORT_ROOTS = [tmp_path]
    folder = shapes_folder(tmp_path / "train_small")
    (folder / "boxes" / "broken.png").write_bytes(b"not a png")

    imported = cli("import", "digits", str(folder), "--server", "--wait")
    assert imported.exit_code == 0, imported.stderr
    assert "36 imported" in imported.output and "1 unreadable" in imported.output
    assert "boxes/broken.png" in imported.output

    created = cli(
        "dataset", "create", "digits", "--name", "minidata", "--grayscale", "--size", "28x28",
        "--val", "25", "--seed", "11", "--wait",
    )  # fmt: skip
    assert created.exit_code == 0, created.stderr
    assert "status: ready" in created.output and "seed 11" in created.output
    assert "bars" in created.output and "total" in created.output

    trained = cli(
        "train", "digits/minidata", "--name", "TestA", "--epochs", "2", "--seed", "3", "--device", "cpu",
        "--batch", "8", "--follow",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.stderr
    assert "run digits/TestA done: 2 epochs" in trained.output

    # A red shape on white, bigger than the training images: classified after the dataset's own steps.
    odd = tmp_path / "red.png"
    img = Image.new("RGB", (120, 80), "white")
    ImageDraw.Draw(img).rectangle((10, 30, 110, 45), fill="red")
    img.save(odd)
    one = cli("classify", "digits/TestA@1", str(odd))
    assert one.exit_code == 0, one.stderr
    assert "at epoch 1" in one.output and "preprocessing:" in one.output
    answer = json.loads(cli("classify", "digits/TestA@1", str(odd), "--json").output)
    assert answer["epoch"] == 1 and len(answer["top"]) == 3
    assert {t["label"] for t in answer["top"]} == {"bars", "columns", "boxes"}

    (folder / "boxes" / "broken.png").unlink()
    many = cli("classify", "digits/TestA", str(folder))
    assert many.exit_code == 0, many.stderr
    assert "accuracy:" in many.output and "confusion matrix" in many.output
    many_json = json.loads(cli("--json", "classify", "digits/TestA", str(folder)).output)
    assert many_json["epoch"] == 2 and len(many_json["results"]) == 36
    assert sum(map(sum, many_json["confusion"]["matrix"])) == 36

    target = tmp_path / "model.tar.gz"
    downloaded = cli("model", "download", "digits/TestA@2", "-o", str(target))
    assert downloaded.exit_code == 0, downloaded.stderr
    with tarfile.open(target) as tar:
        names = {m.name.rsplit("/", 1)[-1] for m in tar.getmembers()}
    assert {"weights.pt", "preprocessing.json", "labels.txt", "info.json"} <= names
    assert not list(tmp_path.glob("*.part"))

    missing = cli("model", "download", "digits/TestA@9", "-o", str(tmp_path / "nope.tar.gz"))
    assert "epoch" in one_error_line(missing)
    assert not (tmp_path / "nope.tar.gz").exists()

    clone = cli("run", "clone", "digits/TestA", "--name", "TestA-Clone", "--follow")
    assert clone.exit_code == 0, clone.stderr
    shown = json.loads(cli("run", "show", "digits/TestA-Clone", "--json").output)
    original = json.loads(cli("run", "show", "digits/TestA", "--json").output)
    assert shown["seed"] == original["seed"]
    # Same seed, same data, same device: the same numbers (the randomness the article could not fix).
    assert [e["val_accuracy"] for e in shown["epochs"]] == [e["val_accuracy"] for e in original["epochs"]]
