"""Label file formats: writers that stream and readers that yield one entry at a time (no Django).

Formats, and what each carries:
- COCO (instances JSON): `images` ({id, file_name, width, height, sha256}), `annotations` and
  `categories` ({id, name, supercategory}). Boxes are `bbox: [x, y, w, h]` in pixels, top-left origin,
  with `area` and `iscrowd: 0`. Classification labels (single- or multi-label) are image-level
  annotations: `{id, image_id, category_id}` with no `bbox`, one per label, as classification exports
  of the COCO family do (detection tools skip annotations without a bbox).
- YOLO (zip): `labels/<stem>.txt` with one `class cx cy w h` line per box (class index, centre and size
  normalised to 0..1), `images/<stem>.<ext>`, `classes.txt` (one name a line, in index order) and
  `data.yaml` (`names` and `nc`).
- Pascal VOC (zip): `Annotations/<stem>.xml` with `filename`, `size` (width, height, depth) and one
  `object` (name, pose, truncated, difficult, bndbox xmin/ymin/xmax/ymax) per box, `JPEGImages/<stem>.<ext>`
  and `ImageSets/Main/default.txt` (the stems). Coordinates are pixels as stored (x, y, x + w, y + h),
  with no 1-based shift.

Writers write as they are fed: the COCO writer streams `images` to its output and `annotations` to a
temporary file appended at the end, so memory stays flat whatever the number of images. Readers raise
FormatError (one line) for a file that cannot be read at all, and yield Entry objects whose `error`
is set for one bad entry (the rest of the file is still read).
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, Any
from xml.etree import ElementTree as ET

# An uploaded zip may hold images too; the annotation files themselves are small.
MAX_ZIP_UNCOMPRESSED = 8 * 1024**3
MAX_MEMBER_BYTES = 64 * 1024 * 1024
MAX_ZIP_MEMBERS = 2_000_000
YOLO_DECIMALS = 6

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_IGNORED = {"__MACOSX", "Thumbs.db", "desktop.ini"}


class FormatError(Exception):
    """A file that cannot be read as the format it was given as; the message is one line."""


@dataclass
class Entry:
    """One image's labels as a file states them.

    `sha256` and `names` say which asset it is about (names: file names or paths, most specific first;
    `stem_names` may match a file name without its extension). `label`, `labels` and `boxes` are what
    the file gives (`boxes` normalised to 0..1 when `normalized`). `error` marks an entry that could not be
    read; `ref` says where it is in the file (a line, a member, an image id).
    """

    ref: str
    sha256: str | None = None
    names: tuple[str, ...] = ()
    stem_names: tuple[str, ...] = ()
    label: str | None = None
    labels: list[str] | None = None
    boxes: list[dict[str, Any]] | None = None
    normalized: bool = False
    error: str | None = None


def is_sha256(text: str) -> bool:
    return bool(_SHA256.match(text))


def _stem(name: str) -> str:
    base = PurePosixPath(name.replace("\\", "/")).name
    dot = base.rfind(".")
    return base[:dot] if dot > 0 else base


def _sha_of_stem(name: str) -> str | None:
    stem = _stem(name).lower()
    return stem if is_sha256(stem) else None


def _num(value: float) -> str:
    """A coordinate as text: integers without a fraction, others as given."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


# Writers


class CocoWriter:
    """Writes a COCO instances file to `out` one image at a time.

    `images` go straight to `out`; `annotations` go to a temporary file that is appended on `close`,
    with `categories` (every class given at the start, plus any other label met on the way).
    """

    def __init__(self, out: IO[bytes], class_names: list[str], *, info: dict[str, Any] | None = None):
        self._out = out
        self._categories: dict[str, int] = {name: i + 1 for i, name in enumerate(class_names)}
        self._annotations = tempfile.TemporaryFile()  # noqa: SIM115 (lives until close())
        self._images = 0
        self._next_annotation = 1
        out.write(b'{"info": ' + json.dumps(info or {}, ensure_ascii=False).encode() + b', "images": [')

    def _category(self, name: str) -> int:
        if name not in self._categories:
            self._categories[name] = len(self._categories) + 1
        return self._categories[name]

    def _annotation(self, body: dict[str, Any]) -> None:
        body = {"id": self._next_annotation, **body}
        if self._next_annotation > 1:
            self._annotations.write(b", ")
        self._annotations.write(json.dumps(body, ensure_ascii=False).encode())
        self._next_annotation += 1

    def add(
        self,
        *,
        file_name: str,
        width: int,
        height: int,
        sha256: str = "",
        labels: list[str] = (),  # type: ignore[assignment]
        boxes: list[dict[str, Any]] = (),  # type: ignore[assignment]
    ) -> int:
        """Add one image with its image-level `labels` and its `boxes`; returns the image id."""
        self._images += 1
        image_id = self._images
        image = {"id": image_id, "file_name": file_name, "width": width, "height": height}
        if sha256:
            image["sha256"] = sha256
        if image_id > 1:
            self._out.write(b", ")
        self._out.write(json.dumps(image, ensure_ascii=False).encode())
        for name in labels:
            self._annotation({"image_id": image_id, "category_id": self._category(name)})
        for box in boxes:
            x, y, w, h = (float(box[k]) for k in ("x", "y", "w", "h"))
            self._annotation(
                {
                    "image_id": image_id,
                    "category_id": self._category(box["label"]),
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        return image_id

    def close(self) -> None:
        self._out.write(b'], "annotations": [')
        self._annotations.seek(0)
        shutil.copyfileobj(self._annotations, self._out)
        self._annotations.close()
        categories = [{"id": i, "name": name, "supercategory": ""} for name, i in self._categories.items()]
        self._out.write(b'], "categories": ' + json.dumps(categories, ensure_ascii=False).encode() + b"}")


def yolo_lines(boxes: list[dict[str, Any]], width: int, height: int, class_index: dict[str, int]) -> str:
    """A YOLO label file: `class cx cy w h` per box, normalised to the image size."""
    lines = []
    for box in boxes:
        x, y, w, h = (float(box[k]) for k in ("x", "y", "w", "h"))
        values = ((x + w / 2) / width, (y + h / 2) / height, w / width, h / height)
        lines.append(" ".join([str(class_index[box["label"]]), *(f"{v:.{YOLO_DECIMALS}f}" for v in values)]))
    return "".join(line + "\n" for line in lines)


def yolo_class_files(class_names: list[str]) -> dict[str, str]:
    """`classes.txt` and `data.yaml` for the classes in index order (names written as JSON strings,
    which YAML reads as they are)."""
    names = ", ".join(json.dumps(n, ensure_ascii=False) for n in class_names)
    return {
        "classes.txt": "".join(f"{n}\n" for n in class_names),
        "data.yaml": f"path: .\ntrain: images\nval: images\nnc: {len(class_names)}\nnames: [{names}]\n",
    }


def voc_xml(*, filename: str, width: int, height: int, depth: int, boxes: list[dict[str, Any]]) -> bytes:
    """A Pascal VOC annotation file for one image."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for key, value in (("width", width), ("height", height), ("depth", depth)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for box in boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = box["label"]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "0"
        bnd = ET.SubElement(obj, "bndbox")
        x, y, w, h = (float(box[k]) for k in ("x", "y", "w", "h"))
        for key, value in (("xmin", x), ("ymin", y), ("xmax", x + w), ("ymax", y + h)):
            ET.SubElement(bnd, key).text = _num(value)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


# Zips


def zip_members(zf: zipfile.ZipFile) -> list[tuple[str, zipfile.ZipInfo]]:
    """The zip's files as (clean path, info); FormatError for a member that climbs out of the archive,
    an archive larger than MAX_ZIP_UNCOMPRESSED once unpacked, or too many members."""
    infos = zf.infolist()
    if len(infos) > MAX_ZIP_MEMBERS:
        raise FormatError(f"the zip has {len(infos)} members; the limit is {MAX_ZIP_MEMBERS}")
    total = 0
    out = []
    for info in infos:
        name = info.filename.replace("\\", "/")
        if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or "\x00" in name:
            raise FormatError(f"the zip entry {info.filename!r} points outside the archive")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise FormatError(f"the zip entry {info.filename!r} points outside the archive")
        total += info.file_size
        if total > MAX_ZIP_UNCOMPRESSED:
            raise FormatError(f"the zip unpacks to more than {MAX_ZIP_UNCOMPRESSED} bytes")
        if info.is_dir() or not parts or any(p.startswith(".") or p in _IGNORED for p in parts):
            continue
        out.append(("/".join(parts), info))
    return out


def open_zip(fh: IO[bytes]) -> zipfile.ZipFile:
    try:
        if not zipfile.is_zipfile(fh):
            raise FormatError("the file is not a zip")
        fh.seek(0)
        return zipfile.ZipFile(fh)
    except zipfile.BadZipFile as exc:
        raise FormatError(f"the zip is damaged ({exc})") from exc


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > MAX_MEMBER_BYTES:
        raise FormatError(f"{info.filename}: {info.file_size} bytes; an annotation file may have {MAX_MEMBER_BYTES}")
    try:
        with zf.open(info) as member:
            return member.read(MAX_MEMBER_BYTES + 1)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError) as exc:
        raise FormatError(f"{info.filename}: cannot be read from the zip ({exc})") from exc


# Readers


def decode_text(data: bytes) -> tuple[str, str | None]:
    """UTF-8 text (a BOM dropped); other bytes are read as Windows-1252/Latin-1, with a note saying so."""
    try:
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "the file is not UTF-8; it was read as Windows-1252 (Latin-1)"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "the file is not UTF-8; it was read as Latin-1"


def _names(path: Any) -> tuple[str, ...]:
    return (str(path),) if isinstance(path, str) and path else ()


def read_jsonl(fh: IO[bytes]) -> Iterator[Entry]:
    """Lines of `{sha256?, source_path?, label? | labels? | boxes?}` (the jsonl export's own lines)."""
    good = bad = 0
    for n, raw in enumerate(fh, start=1):
        if not raw.strip():
            continue
        ref = f"line {n}"
        try:
            row = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            bad += 1
            if good == 0 and bad >= 20:
                raise FormatError(f"the file is not JSON lines ({ref}: {exc})") from exc
            yield Entry(ref, error=f"not JSON ({exc})")
            continue
        if not isinstance(row, dict):
            bad += 1
            yield Entry(ref, error="not a JSON object")
            continue
        good += 1
        sha = row.get("sha256")
        path = row.get("source_path") or row.get("file_name") or row.get("name")
        entry = Entry(ref, sha256=sha.lower() if isinstance(sha, str) and sha else None, names=_names(path))
        if "boxes" in row:
            entry.boxes = row["boxes"]
        if "labels" in row:
            entry.labels = row["labels"]
        if "label" in row and row["label"] not in (None, ""):
            entry.label = row["label"]
        yield entry
    if good == 0 and bad:
        raise FormatError("the file is not JSON lines (no line holds a JSON object)")


CSV_BOX_FIELDS = ["sha256", "source_path", "width", "height", "label", "x", "y", "w", "h"]


def read_csv(fh: IO[bytes]) -> tuple[Iterator[Entry], str | None]:
    """The csv export's layouts: one line per asset or annotation (`label`, or `labels` as a JSON list),
    or one line per box (`label, x, y, w, h`; the lines of one image are gathered). Returns the entries
    and a note when the file was not UTF-8."""
    text, note = decode_text(fh.read())
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames or []
    except csv.Error as exc:
        raise FormatError(f"the file is not CSV ({exc})") from exc
    if not header or not ({"sha256", "source_path", "file_name"} & set(header)):
        raise FormatError("the CSV has no sha256, source_path or file_name column (the first line is the header)")
    if not ({"label", "labels"} & set(header)):
        raise FormatError("the CSV has no label or labels column")
    return _csv_entries(reader, header), note


def _csv_entries(reader: csv.DictReader, header: list[str]) -> Iterator[Entry]:
    boxes = {"x", "y", "w", "h"} <= set(header)
    gathered: dict[tuple[str | None, str], Entry] = {}
    seen: set[tuple[str | None, str]] = set()
    try:
        for n, row in enumerate(reader, start=2):
            ref = f"line {n}"
            if None in row:
                yield Entry(ref, error=f"more fields than the header's {len(header)}")
                continue
            sha = (row.get("sha256") or "").strip().lower() or None
            path = (row.get("source_path") or row.get("file_name") or "").strip()
            key = (sha, path)
            if not sha and not path:
                yield Entry(ref, error="neither sha256 nor source_path given")
                continue
            if boxes:
                entry = gathered.setdefault(key, Entry(ref, sha256=sha, names=_names(path), boxes=[]))
                label = (row.get("label") or "").strip()
                if not label and not any((row.get(k) or "").strip() for k in "xywh"):
                    continue  # an image with no boxes
                try:
                    box = {"label": label, **{k: float(row[k]) for k in "xywh"}}
                except (TypeError, ValueError):
                    entry.error = f"{ref}: a box needs numbers in x, y, w and h"
                    continue
                assert entry.boxes is not None
                entry.boxes.append(box)
                continue
            if key in seen:
                continue  # one line per annotation repeats the asset's own columns
            seen.add(key)
            entry = Entry(ref, sha256=sha, names=_names(path))
            if "labels" in header and (row.get("labels") or "").strip():
                try:
                    entry.labels = json.loads(row["labels"])
                except json.JSONDecodeError:
                    entry.error = "labels is not a JSON list"
            elif "labels" in header and "label" not in header:
                entry.labels = []
            else:
                entry.label = (row.get("label") or "").strip() or None
            yield entry
    except csv.Error as exc:
        raise FormatError(f"the CSV is malformed ({exc})") from exc
    yield from gathered.values()


def _wrapper_depth(paths: list[list[str]]) -> int:
    depth = 0
    while paths and all(len(p) >= depth + 3 for p in paths) and len({p[depth] for p in paths}) == 1:
        depth += 1
    return depth


def read_folder(fh: IO[bytes]) -> Iterator[Entry]:
    """An ImageFolder zip, `<label>/<file>` (a common wrapper folder is skipped); the file's name, or its
    stem when it is a sha256 (as the folder export names files), says which asset."""
    with open_zip(fh) as zf:
        members = zip_members(zf)
    paths = [name.split("/") for name, _ in members]
    depth = _wrapper_depth(paths)
    for parts in paths:
        rel = "/".join(parts)
        if len(parts) - depth < 2:
            yield Entry(rel, error="not inside a class folder")
            continue
        inner = "/".join(parts[depth + 1 :])
        yield Entry(rel, sha256=_sha_of_stem(rel), names=(inner, rel), label=parts[depth])


def read_coco(fh: IO[bytes]) -> Iterator[Entry]:
    """A COCO instances file: one entry per image, with its bbox annotations as boxes and its
    annotations without a bbox as image-level labels."""
    try:
        data = json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(f"the file is not JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise FormatError("not a COCO file: no `images` list")
    annotations = data.get("annotations") or []
    categories = data.get("categories") or []
    if not isinstance(annotations, list) or not isinstance(categories, list):
        raise FormatError("not a COCO file: `annotations` and `categories` must be lists")
    names: dict[Any, str] = {}
    for cat in categories:
        if isinstance(cat, dict) and "id" in cat and isinstance(cat.get("name"), str):
            names[cat["id"]] = cat["name"]
    by_image: dict[Any, list[dict]] = defaultdict(list)
    orphans: list[Entry] = []
    for n, ann in enumerate(annotations):
        if not isinstance(ann, dict) or "image_id" not in ann:
            orphans.append(Entry(f"annotation #{n}", error="an annotation needs an image_id"))
            continue
        by_image[ann["image_id"]].append(ann)
    yield from orphans
    known = set()
    for n, image in enumerate(data["images"]):
        if not isinstance(image, dict) or "id" not in image:
            yield Entry(f"image #{n}", error="an image needs an id")
            continue
        known.add(image["id"])
        file_name = image.get("file_name")
        ref = f"image {image['id']}" + (f" ({file_name})" if isinstance(file_name, str) else "")
        sha = image.get("sha256")
        entry = Entry(
            ref,
            sha256=sha.lower() if isinstance(sha, str) and sha else (_sha_of_stem(file_name) if file_name else None),
            names=_names(file_name),
            labels=[],
            boxes=[],
        )
        for ann in by_image.get(image["id"], []):
            cat = names.get(ann.get("category_id"))
            if cat is None:
                entry.error = f"annotation {ann.get('id')} names unknown category id {ann.get('category_id')!r}"
                break
            bbox = ann.get("bbox")
            if bbox is None:
                if cat not in entry.labels:  # type: ignore[operator]
                    entry.labels.append(cat)  # type: ignore[union-attr]
                continue
            if not isinstance(bbox, list) or len(bbox) != 4:
                entry.error = f"annotation {ann.get('id')}: bbox is [x, y, w, h]"
                break
            entry.boxes.append({"label": cat, "x": bbox[0], "y": bbox[1], "w": bbox[2], "h": bbox[3]})  # type: ignore[union-attr]
        yield entry
    for image_id in by_image:
        if image_id not in known:
            yield Entry(f"image {image_id}", error="annotations for an image id the file does not list")


def _yolo_classes(zf: zipfile.ZipFile, members: list[tuple[str, zipfile.ZipInfo]]) -> list[str]:
    by_name = {PurePosixPath(name).name: info for name, info in members if name.count("/") <= 1}
    if "classes.txt" in by_name:
        text, _ = decode_text(read_member(zf, by_name["classes.txt"]))
        return [line.strip() for line in text.splitlines() if line.strip()]
    for key in ("data.yaml", "data.yml"):
        if key in by_name:
            text, _ = decode_text(read_member(zf, by_name[key]))
            return _yaml_names(text)
    raise FormatError("the YOLO zip has neither classes.txt nor data.yaml naming the classes")


def _yaml_names(text: str) -> list[str]:
    """`names` of a data.yaml: a flow list, a block list or an index mapping."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^names:\s*(.*)$", line)
        if not match:
            continue
        rest = match.group(1).strip()
        if rest.startswith("["):
            try:
                return [str(n) for n in json.loads(rest)]
            except json.JSONDecodeError:
                return [n.strip().strip("'\"") for n in rest.strip("[]").split(",") if n.strip()]
        found: dict[int, str] = {}
        for j, item in enumerate(lines[i + 1 :]):
            if not item.startswith((" ", "\t")):
                break
            item = item.strip()
            if item.startswith("- "):
                found[j] = item[2:].strip().strip("'\"")
            elif ":" in item:
                key, value = item.split(":", 1)
                if key.strip().isdigit():
                    found[int(key)] = value.strip().strip("'\"")
        return [found[k] for k in sorted(found)]
    raise FormatError("data.yaml has no `names`")


def read_yolo(fh: IO[bytes]) -> Iterator[Entry]:
    """A YOLO zip: `labels/<stem>.txt` (any folder; classes.txt and data.yaml name the classes). Boxes
    come normalised (0..1); the file's stem says which image (a sha256, or an image's name)."""
    with open_zip(fh) as zf:
        members = zip_members(zf)
        classes = _yolo_classes(zf, members)
        labels = [(n, i) for n, i in members if n.endswith(".txt") and PurePosixPath(n).name != "classes.txt"]
        if not labels:
            raise FormatError("the YOLO zip has no label files (labels/<image>.txt)")
        for name, info in labels:
            text, _ = decode_text(read_member(zf, info))
            stem = _stem(name)
            entry = Entry(name, sha256=_sha_of_stem(name), stem_names=(stem,), boxes=[], normalized=True)
            for n, line in enumerate(text.splitlines(), start=1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 5:
                    entry.error = f"line {n}: expected `class cx cy w h`, got {len(fields)} values"
                    break
                try:
                    index = int(fields[0])
                    cx, cy, w, h = (float(v) for v in fields[1:])
                except ValueError:
                    entry.error = f"line {n}: not numbers"
                    break
                if not 0 <= index < len(classes):
                    entry.error = f"line {n}: class index {index} is not in the {len(classes)} classes"
                    break
                entry.boxes.append({"label": classes[index], "x": cx - w / 2, "y": cy - h / 2, "w": w, "h": h})  # type: ignore[union-attr]
            yield entry


def _text(node: ET.Element | None, path: str) -> str | None:
    found = node.find(path) if node is not None else None
    return found.text.strip() if found is not None and found.text else None


def read_voc(fh: IO[bytes]) -> Iterator[Entry]:
    """A Pascal VOC zip: every `.xml` file (Annotations/ in the usual layout) is one image; its
    `filename`, else the XML file's stem, says which."""
    with open_zip(fh) as zf:
        members = [(n, i) for n, i in zip_members(zf) if n.lower().endswith(".xml")]
        if not members:
            raise FormatError("the VOC zip has no annotation files (Annotations/<image>.xml)")
        for name, info in members:
            data = read_member(zf, info)
            if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
                # VOC files declare no DTD; refusing one keeps entity expansion attacks out.
                raise FormatError(f"{name}: XML with a DOCTYPE or ENTITY declaration is not read")
            try:
                root = ET.fromstring(data)  # noqa: S314 (no DTD, checked above; expat limits the rest)
            except ET.ParseError as exc:
                raise FormatError(f"{name}: not well-formed XML ({exc})") from exc
            if root.tag != "annotation":
                raise FormatError(f"{name}: not a VOC annotation (root element <{root.tag}>)")
            filename = _text(root, "filename")
            entry = Entry(
                name,
                sha256=_sha_of_stem(filename or "") or _sha_of_stem(name),
                names=_names(filename),
                stem_names=(_stem(name),),
                boxes=[],
            )
            for n, obj in enumerate(root.findall("object"), start=1):
                label = _text(obj, "name")
                box = obj.find("bndbox")
                try:
                    xmin, ymin, xmax, ymax = (float(_text(box, k) or "") for k in ("xmin", "ymin", "xmax", "ymax"))
                except ValueError:
                    entry.error = f"object {n}: bndbox needs numbers in xmin, ymin, xmax and ymax"
                    break
                entry.boxes.append({"label": label or "", "x": xmin, "y": ymin, "w": xmax - xmin, "h": ymax - ymin})  # type: ignore[union-attr]
            yield entry
