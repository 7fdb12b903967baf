"""Where a run is written: `<report-dir>/<timestamp>-<id>/`, mirrored to `<report-dir>/latest/`.

Files are written atomically (a temporary file in the same folder, then `os.replace`), so a reader never sees
half a results.json. samples.jsonl is appended and flushed as each case finishes, so a killed run keeps every
finished sample.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SAMPLES_FILE = "samples.jsonl"
RESULTS_FILE = "results.json"
HTML_FILE = "report.html"
LATEST = "latest"
# One encoder for every line: samples are plain JSON already (`debug.plugin.fixture.jsonable`).
_ENCODER = json.JSONEncoder(ensure_ascii=False, check_circular=False)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Atomic UTF-8 text write."""
    atomic_write_bytes(path, text.encode("utf-8"))


def safe_name(text: str, limit: int = 80) -> str:
    """A file-name-safe version of a case or image name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "item"
    return cleaned[:limit]


class RunDir:
    """One run's folder; created lazily by `create` so runs without eval cases write nothing."""

    def __init__(self, path: Path):
        self.path = path
        self._samples = None
        self._image_names: set[str] = set()

    @classmethod
    def create(cls, report_dir: Path) -> RunDir:
        """Make `<report_dir>/<UTC timestamp>-<6 hex>/`."""
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        path = report_dir / f"{stamp}-{uuid.uuid4().hex[:6]}"
        path.mkdir(parents=True, exist_ok=False)
        return cls(path)

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
        """Copy the run to `<report_dir>/latest/`, replacing the previous mirror in one rename."""
        latest = self.path.parent / LATEST
        staging = self.path.parent / f".{LATEST}-{uuid.uuid4().hex[:6]}"
        shutil.copytree(self.path, staging)
        (staging / "RUN_ID").write_text(self.run_id + "\n", encoding="utf-8")
        old = None
        if latest.exists():
            old = self.path.parent / f".{LATEST}-old-{uuid.uuid4().hex[:6]}"
            os.replace(latest, old)
        os.replace(staging, latest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return latest
