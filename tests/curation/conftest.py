import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def png_bytes(seed: int, *, size: tuple[int, int] = (28, 28), mode: str = "L", fmt: str = "PNG") -> bytes:
    """A small distinct image: a bright blob on a dark background, varied by `seed`."""
    rng = np.random.default_rng(seed)
    w, h = size
    arr = np.zeros((h, w), dtype=np.uint8)
    arr[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 200
    arr = np.clip(arr.astype(int) + rng.integers(0, 40, (h, w)), 0, 255).astype(np.uint8)
    image = Image.fromarray(arr, mode="L").convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def write_tree(root: Path, classes: dict[str, int], *, seed: int = 0) -> Path:
    """A DIGITS folder: one subfolder per class with `n` distinct PNGs each."""
    k = seed * 100_000
    for label, n in classes.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            k += 1
            (root / label / f"{i}.png").write_bytes(png_bytes(k))
    return root


def zip_of(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(autouse=True)
def isolated_files(settings, tmp_path):
    """Each test stores files in its own folder and may import only from tmp_path/imports."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "media")},
        },
    }
    settings.CRUCIBLE_CACHE_DIR = tmp_path / "cache"
    roots = tmp_path / "imports"
    roots.mkdir()
    settings.CRUCIBLE_IMPORT_ROOTS = [roots.resolve()]
    return roots
