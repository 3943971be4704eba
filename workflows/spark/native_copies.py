"""Removes the copies of Ray's Java library that every RayDP start leaves in /tmp/ray.

A JVM that joins Ray as a driver (RayDP's app master, and the Spark driver of our service) copies
`libcore_worker_library_java.so`, 34 MB, into `/tmp/ray/<epoch milliseconds>/` and loads it from
there; nothing ever deletes it (Ray 2.47.1, `io.ray.runtime.RayNativeRuntime`: the path is
hard-coded, not under the session's temp dir). Every start of the Spark service therefore left
about 70 MB behind, and a node that restarts its service for months, or runs the tests, fills
its disk with them.

Deleting a loaded library is safe on Linux: the JVM keeps the mapping, only the name goes. So a
copy is removed when a live process has it mapped (it is loaded), or when nobody has and it is
older than `ORPHAN_AGE` (its JVM died: loading follows the copy within seconds). A young copy
that no process maps yet is one being loaded now, and stays.
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LIBRARY_NAME", "LIBRARY_ROOT", "ORPHAN_AGE", "Pruned", "prune_native_copies", "mapped_copies"]

log = logging.getLogger(__name__)

LIBRARY_ROOT = Path("/tmp/ray")  # Ray Java's own constant, not Ray's temp dir (RAY_TMPDIR)
LIBRARY_NAME = "libcore_worker_library_java.so"
ORPHAN_AGE = 3600.0  # seconds
_COPY_FOLDER = re.compile(r"\d{10,}")  # epoch milliseconds


@dataclass(frozen=True)
class Pruned:
    folders: int
    bytes: int


def mapped_copies(proc: Path = Path("/proc"), root: Path = LIBRARY_ROOT) -> set[Path]:
    """The copy folders some live JVM has loaded its library from (the ones whose maps we may
    read: another user's processes are skipped, and their copies wait for `ORPHAN_AGE`)."""
    mapped: set[Path] = set()
    prefix = f"{root}/"
    for process in proc.iterdir() if proc.is_dir() else ():
        if not process.name.isdigit():
            continue
        try:
            if (process / "comm").read_text().strip() != "java":
                continue
            maps = (process / "maps").read_text()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        for line in maps.splitlines():
            fields = line.split(maxsplit=5)  # address, perms, offset, device, inode, path
            path = fields[5] if len(fields) == 6 else ""
            # A deleted copy reads "<path> (deleted)", so only copies still on disk match.
            if path.startswith(prefix) and path.endswith(LIBRARY_NAME):
                mapped.add(Path(path).parent)
    return mapped


def prune_native_copies(
    root: Path = LIBRARY_ROOT, now: float | None = None, mapped: set[Path] | None = None,
) -> Pruned:
    """Delete the copies that are loaded or orphaned (module docstring); return what went."""
    now = time.time() if now is None else now
    mapped = mapped_copies(root=root) if mapped is None else mapped
    folders = removed = 0
    for folder in root.iterdir() if root.is_dir() else ():
        if not _COPY_FOLDER.fullmatch(folder.name) or not (folder / LIBRARY_NAME).exists():
            continue  # Ray's session folders and anything else in /tmp/ray are not ours to touch
        try:
            size = (folder / LIBRARY_NAME).stat().st_size
            age = now - folder.stat().st_mtime
        except OSError:
            continue
        if folder in mapped or age > ORPHAN_AGE:
            shutil.rmtree(folder, ignore_errors=True)
            if not folder.exists():
                folders += 1
                removed += size
    if folders:
        log.info("removed %d copies of Ray's Java library (%.0f MB) from %s", folders, removed / 2**20, root)
    return Pruned(folders, removed)
