"""Files a run writes: atomic replacement, JSON documents and timestamped run folders.

Every file is written to a temporary name in the same folder and renamed over the target, so a reader (or a
run that dies half way) sees the old file or the new one, never a mix. The temporary file is created with the
process umask applied, so every file a run writes gets the same mode a plain `open(..., "w")` would give it.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _umask() -> int:
    # os.umask can only be read by setting it; set it back at once.
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` so readers see the old file or the new one, never a mix.

    The file gets mode 0666 less the umask, like any file `open` creates (mkstemp alone would give 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomic UTF-8 text write."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any, *, indent: int | None = 2, default: Any = None) -> Path:
    """Atomic JSON write (strict JSON: NaN and infinities are refused, not written as invalid tokens)."""
    return atomic_write_text(path, json.dumps(data, indent=indent, allow_nan=False, default=default) + "\n")


def timestamped_dir(root: str | Path, prefix: str = "") -> Path:
    """Create and return a new folder `<root>/<prefix><UTC yyyymmdd-HHMMSS>-<6 hex>`.

    The random suffix makes two runs started in the same second (or by two processes) get different folders.
    """
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{prefix}{stamp}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True, exist_ok=False)
    return path
