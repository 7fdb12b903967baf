"""Where a run is written: `<report-dir>/<timestamp>-<id>/`, with `<report-dir>/latest` naming the newest.

Files are written atomically (`debug._util.files`: a temporary file in the same folder, then `os.replace`), so
a reader never sees half a results.json, and every file a run writes gets mode 0666 less the umask, like any
file `open` creates. samples.jsonl is appended and flushed as each case finishes, so a killed run keeps every
finished sample.

`latest` is a symbolic link to the run folder (relative: `latest -> 20261201-120000-ab12cd`), swapped in one
`os.replace` of a freshly made link, so two runs finishing at once leave it naming one of them and never a
half-copied folder; `reports/latest/results.json` reads through it. A real `latest/` folder left by older
versions (which copied the run there) is renamed away and deleted the first time. Copying the link: GNU
`cp -r reports/latest DEST` copies the link itself (fine inside `reports/`, dangling elsewhere); use
`cp -rL` or `cp -r reports/latest/ DEST` (trailing slash) to copy the run's files. CI artifact uploaders such
as actions/upload-artifact follow the link.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from debug._util.files import atomic_write_bytes, timestamped_dir

SAMPLES_FILE = "samples.jsonl"
RESULTS_FILE = "results.json"
HTML_FILE = "report.html"
LATEST = "latest"
# One encoder for every line: samples are plain JSON already (`debug._util.jsonable`).
_ENCODER = json.JSONEncoder(ensure_ascii=False, check_circular=False)
# How often `point_latest` retries when another process keeps putting a folder at `latest`.
_SWAP_TRIES = 5


def safe_name(text: str, limit: int = 80) -> str:
    """A file-name-safe version of a case or image name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "item"
    return cleaned[:limit]


def _remove_old_latest(latest: Path) -> None:
    """Move a real `latest/` folder (written by older versions) out of the way and delete it."""
    old = latest.with_name(f".{LATEST}-old-{uuid.uuid4().hex[:8]}")
    try:
        os.replace(latest, old)
    except FileNotFoundError:
        return  # another run moved it first
    # Another run may have swapped its link in between the check and the rename: then a link moved here.
    if old.is_symlink() or not old.is_dir():
        old.unlink(missing_ok=True)
    else:
        shutil.rmtree(old, ignore_errors=True)


def point_latest(report_dir: Path, run_name: str) -> Path:
    """Make `<report_dir>/latest` a link to the run folder `run_name`, replacing any older `latest` at once.

    Args:
        report_dir: The folder holding the runs.
        run_name: The run folder's name (the link is relative, so the reports folder can move).

    Returns:
        The path of the link.
    """
    latest = report_dir / LATEST
    staging = report_dir / f"{LATEST}.tmp-{uuid.uuid4().hex[:12]}"
    os.symlink(run_name, staging, target_is_directory=True)
    try:
        for _ in range(_SWAP_TRIES):
            if latest.is_dir() and not latest.is_symlink():
                _remove_old_latest(latest)
            # IsADirectoryError: an older version running beside this one put a folder there again.
            with contextlib.suppress(IsADirectoryError):
                os.replace(staging, latest)  # rename(2) over a link replaces the link itself, atomically
                return latest
        raise OSError(f"cannot replace the folder {latest} with a link: something keeps re-creating it")
    finally:
        staging.unlink(missing_ok=True)  # left only when the swap failed


class RunDir:
    """One run's folder; created by `create` when a run has eval cases (a run without any writes nothing)."""

    def __init__(self, path: Path):
        self.path = path
        self._samples = None
        self._image_names: set[str] = set()

    @classmethod
    def create(cls, report_dir: Path) -> RunDir:
        """Make `<report_dir>/<UTC timestamp>-<6 hex>/` (`debug._util.files.timestamped_dir`)."""
        return cls(timestamped_dir(report_dir))

    @property
    def run_id(self) -> str:
        """The folder name."""
        return self.path.name

    def append_samples(self, case_id: str, samples: Iterable[Mapping[str, Any]]) -> None:
        """Append one JSON line per sample (tagged with its case id) and flush to disk."""
        if self._samples is None:
            self._samples = open(self.path / SAMPLES_FILE, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        encode = _ENCODER.encode
        lines = [encode(s if s.get("case") == case_id else {"case": case_id, **s}) for s in samples]
        self._samples.write("\n".join(lines) + "\n" if lines else "")
        # flush() hands the lines to the OS, which keeps them when the process is killed; fsync per case would
        # cost milliseconds and only matters on power loss.
        self._samples.flush()

    def close(self) -> None:
        """Close samples.jsonl (creating it empty if no sample was written)."""
        if self._samples is None:
            (self.path / SAMPLES_FILE).touch()
        else:
            self._samples.close()
            self._samples = None

    def save_image(self, case_id: str, image: Mapping[str, Any]) -> str:
        """Write an attached image under images/; returns its path relative to the run folder."""
        ext = ".svg" if image.get("mime") == "image/svg+xml" else ".png"
        stem = safe_name(f"{case_id}-{image.get('name', 'image')}")
        name, i = stem + ext, 1
        while name in self._image_names:
            i += 1
            name = f"{stem}-{i}{ext}"
        self._image_names.add(name)
        atomic_write_bytes(self.path / "images" / name, base64.b64decode(image["data"]))
        return f"images/{name}"

    def mirror_latest(self) -> Path:
        """Point `<report_dir>/latest` at this run (`point_latest`); returns the link's path."""
        return point_latest(self.path.parent, self.run_id)
