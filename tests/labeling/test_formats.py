"""The label file formats on their own: streamed writers give valid files, readers read them back and
refuse what they cannot read with one line."""

import io
import json
import zipfile
from xml.etree import ElementTree as ET

import pytest

from labeling import formats


def _coco(n: int, *, boxes: bool) -> dict:
    out = io.BytesIO()
    writer = formats.CocoWriter(out, ["cat", "dog"], info={"description": "test"})
    for i in range(n):
        writer.add(
            file_name=f"img/{i}.png",
            width=40,
            height=30,
            sha256=f"{i:064x}",
            labels=[] if boxes else ["dog" if i % 2 else "cat"],
            boxes=[{"label": "dog", "x": 1, "y": 2.5, "w": 3, "h": 4}] * (2 if boxes else 0),
        )
    writer.close()
    return json.loads(out.getvalue())


@pytest.mark.parametrize("n", [0, 1, 250])
def test_coco_writer_output_is_valid_json_for_any_number_of_images(n):
    data = _coco(n, boxes=True)
    assert len(data["images"]) == n and len(data["annotations"]) == 2 * n
    assert [c["name"] for c in data["categories"]] == ["cat", "dog"]
    assert len({a["id"] for a in data["annotations"]}) == 2 * n
    if n:
        assert data["images"][0] == {"id": 1, "file_name": "img/0.png", "width": 40, "height": 30, "sha256": "0" * 64}
        assert data["annotations"][0]["bbox"] == [1.0, 2.5, 3.0, 4.0] and data["annotations"][0]["area"] == 12.0


def test_coco_classification_labels_are_image_level_annotations_without_bbox():
    data = _coco(2, boxes=False)
    assert [(a["image_id"], a["category_id"]) for a in data["annotations"]] == [(1, 1), (2, 2)]
    assert all("bbox" not in a for a in data["annotations"])
    entries = list(formats.read_coco(io.BytesIO(json.dumps(data).encode())))
    assert [(e.sha256, e.labels, e.boxes) for e in entries] == [("0" * 64, ["cat"], []), (f"{1:064x}", ["dog"], [])]


def test_coco_writer_adds_a_category_met_on_the_way():
    out = io.BytesIO()
    writer = formats.CocoWriter(out, ["cat"])
    writer.add(file_name="a.png", width=1, height=1, labels=["fox"])
    writer.close()
    assert [c["name"] for c in json.loads(out.getvalue())["categories"]] == ["cat", "fox"]


def test_yolo_lines_are_normalised_and_read_back():
    boxes = [{"label": "dog", "x": 10, "y": 5, "w": 20, "h": 10}]
    text = formats.yolo_lines(boxes, 40, 20, {"cat": 0, "dog": 1})
    assert text == "1 0.500000 0.500000 0.500000 0.500000\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in formats.yolo_class_files(["cat", "dog"]).items():
            zf.writestr(name, body)
        zf.writestr("labels/pic.txt", text)
    [entry] = formats.read_yolo(buf)
    assert entry.normalized and entry.stem_names == ("pic",) and entry.error is None
    assert entry.boxes == [{"label": "dog", "x": 0.25, "y": 0.25, "w": 0.5, "h": 0.5}]


def test_yolo_classes_from_a_data_yaml_in_block_form():
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("data.yaml", "nc: 2\nnames:\n  0: cat\n  1: 'big dog'\ntrain: images\n")
        zf.writestr("labels/a.txt", "1 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")
    [entry] = formats.read_yolo(buf)
    assert entry.error == "line 2: class index 7 is not in the 2 classes"
    assert entry.boxes[0]["label"] == "big dog"


def test_voc_xml_round_trips():
    body = formats.voc_xml(
        filename="a.png", width=40, height=30, depth=3, boxes=[{"label": "cat", "x": 1.5, "y": 2, "w": 10, "h": 8}]
    )
    root = ET.fromstring(body)
    assert root.findtext("size/width") == "40" and root.findtext("object/bndbox/xmax") == "11.5"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("Annotations/a.xml", body)
    [entry] = formats.read_voc(buf)
    assert entry.names == ("a.png",) and entry.stem_names == ("a",)
    assert entry.boxes == [{"label": "cat", "x": 1.5, "y": 2.0, "w": 10.0, "h": 8.0}]


def _zip(members: dict[str, bytes]) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in members.items():
            zf.writestr(name, body)
    buf.seek(0)
    return buf


@pytest.mark.parametrize(
    ("reader", "data", "message"),
    [
        (formats.read_yolo, io.BytesIO(b"{}"), "not a zip"),
        (formats.read_voc, _zip({"Annotations/a.xml": b"<annotation><size>"}), "not well-formed XML"),
        (formats.read_voc, _zip({"a.xml": b"<!DOCTYPE x [<!ENTITY a 'b'>]><annotation/>"}), "DOCTYPE"),
        (formats.read_voc, _zip({"a.xml": b"<html/>"}), "not a VOC annotation"),
        (formats.read_folder, _zip({"../evil/a.png": b"x"}), "points outside the archive"),
        (formats.read_voc, _zip({"/etc/a.xml": b"<annotation/>"}), "points outside the archive"),
        (formats.read_yolo, _zip({"labels/a.txt": b"0 0.5 0.5 0.1 0.1"}), "neither classes.txt nor data.yaml"),
        (formats.read_coco, io.BytesIO(b"not json"), "not JSON"),
        (formats.read_coco, io.BytesIO(b"[1, 2]"), "no `images` list"),
        (formats.read_jsonl, io.BytesIO(b"nope\n" * 25), "not JSON lines"),
    ],
)
def test_unreadable_files_raise_one_line(reader, data, message):
    with pytest.raises(formats.FormatError) as exc:
        list(reader(data))
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_zip_larger_than_the_cap_is_refused(monkeypatch):
    monkeypatch.setattr(formats, "MAX_ZIP_UNCOMPRESSED", 100)
    with pytest.raises(formats.FormatError, match="unpacks to more than 100 bytes"):
        list(formats.read_folder(_zip({"cat/a.png": b"x" * 60, "dog/b.png": b"y" * 60})))


def test_csv_in_latin1_is_read_with_a_note():
    data = "source_path,label\nimgs/café.png,cat\n".encode("latin-1")
    entries, note = formats.read_csv(io.BytesIO(data))
    [entry] = list(entries)
    assert entry.names == ("imgs/café.png",) and entry.label == "cat"
    assert "not UTF-8" in note


def test_csv_without_the_columns_is_refused():
    with pytest.raises(formats.FormatError, match="no sha256, source_path or file_name column"):
        formats.read_csv(io.BytesIO(b"a,b\n1,2\n"))


def test_bad_jsonl_rows_are_entries_with_errors_and_the_rest_is_read():
    data = b'{"source_path": "a.png", "label": "cat"}\n{broken\n[1]\n'
    entries = list(formats.read_jsonl(io.BytesIO(data)))
    assert entries[0].label == "cat" and entries[0].error is None
    assert entries[1].ref == "line 2" and "not JSON" in entries[1].error
    assert entries[2].error == "not a JSON object"
