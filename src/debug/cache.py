"""The answer cache: model outputs kept on disk so a rerun (or a killed run) never decodes a prompt twice.

One JSONL file per model fingerprint under the cache folder (default `.debug_cache/` in the working directory,
or `$DEBUG_CACHE_DIR`). Each line is one finished sample's decoding result, keyed by the prompt's hash and
a hash of the decoding settings (greedy, token budget, stop rule, dtype, the expected answer whose
log-probability was measured). Lines are appended as samples finish, so whatever a killed run completed is
kept. Because the key starts with the fingerprint (a hash of config and weights), the cache can never serve
one model's outputs as another's. Parsing and correctness are not cached: they are recomputed from the raw
output on every read.

The cache checks itself. Every line carries a `checksum` over its key and its answer (`record_checksum`). On
reading, a line is skipped -- its program is decoded again rather than served -- when its bytes are not UTF-8,
it is torn (a last line without its newline, left by a killed writer), it is not a JSON object with the keys
`prompt_hash`, `settings`, `record` and `checksum`, or its checksum does not match (a hand-edited answer that
is still valid JSON). Each file read with skipped lines raises one `CacheWarning` naming the file and the
count. Lines written before checksums existed have none and are skipped the same way: an answer that cannot be
checked is never served, and re-decoding costs only time; `AnswerCache.clear` removes such files. An append
always starts on a fresh line (a newline is written first when the file does not end with one), so a torn
tail never swallows the next record.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

DEFAULT_CACHE_DIR = ".debug_cache"
#: The keys every cache line must have (besides them, a line may carry more).
LINE_KEYS = ("prompt_hash", "settings", "record", "checksum")


class CacheWarning(UserWarning):
    """Some lines of a cache file were skipped (unreadable, torn, incomplete or failing their checksum)."""


def default_cache_dir() -> Path:
    """`$DEBUG_CACHE_DIR` if set, else `.debug_cache/` in the current working directory."""
    return Path(os.environ.get("DEBUG_CACHE_DIR") or DEFAULT_CACHE_DIR)


def settings_key(settings: dict[str, Any]) -> str:
    """A stable 16-hex-digit hash of a decoding-settings dict (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_checksum(prompt_hash: str, settings: str, record: dict[str, Any]) -> str:
    """The 16-hex-digit checksum a cache line carries: SHA-256 over its key and answer in canonical JSON.

    Args:
        prompt_hash: The prompt's hash.
        settings: The settings key (`settings_key`), as stored on the line.
        record: The answer record.
    """
    text = json.dumps([prompt_hash, settings, record], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _parse_line(raw: bytes) -> tuple[tuple[str, str], dict[str, Any]] | None:
    """The (key, record) of one cache line, or None when the line must not be served."""
    try:
        row = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(row, dict) or not all(key in row for key in LINE_KEYS):
        return None
    prompt_hash, settings, record, checksum = (row[key] for key in LINE_KEYS)
    if not (isinstance(prompt_hash, str) and isinstance(settings, str) and isinstance(record, dict)):
        return None
    if checksum != record_checksum(prompt_hash, settings, record):
        return None
    return (prompt_hash, settings), record


class AnswerCache:
    """On-disk answers keyed by (model fingerprint, prompt hash, decoding settings).

    Args:
        path: Cache folder; None means `default_cache_dir()`. Created on first write.

    Example:
        >>> cache = AnswerCache("/tmp/answers")
        >>> cache.put("fp", "prompt-hash", {"max_new_tokens": 4}, {"raw_output": "5"})
        >>> cache.get("fp", "prompt-hash", {"max_new_tokens": 4})["raw_output"]
        '5'
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_cache_dir()
        self._index: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}

    def _file(self, fingerprint: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in fingerprint)
        return self.path / f"{safe}.jsonl"

    def _load(self, fingerprint: str) -> dict[tuple[str, str], dict[str, Any]]:
        if fingerprint in self._index:
            return self._index[fingerprint]
        entries: dict[tuple[str, str], dict[str, Any]] = {}
        file = self._file(fingerprint)
        if file.is_file():
            # Bytes, not text: one line of invalid UTF-8 must cost that line only, not the whole file.
            lines = file.read_bytes().split(b"\n")
            # The piece after the last newline is a line cut short by a killed writer (or b"" when none is).
            torn = 1 if lines[-1].strip() else 0
            skipped = torn
            for raw in lines[:-1]:
                if not raw.strip():
                    continue
                parsed = _parse_line(raw)
                if parsed is None:
                    skipped += 1
                    continue
                key, record = parsed
                entries[key] = record
            if skipped:
                warnings.warn(
                    f"answer cache {file}: skipped {skipped} unreadable, torn, incomplete or unchecked "
                    f"record(s) (bad UTF-8 or JSON, missing keys or checksum, checksum mismatch); their "
                    "programs are decoded again",
                    CacheWarning,
                    stacklevel=3,
                )
        self._index[fingerprint] = entries
        return entries

    def get(self, fingerprint: str, prompt_hash: str, settings: dict[str, Any]) -> dict[str, Any] | None:
        """The stored record for this key, or None."""
        return self._load(fingerprint).get((prompt_hash, settings_key(settings)))

    def put(
        self, fingerprint: str, prompt_hash: str, settings: dict[str, Any], record: dict[str, Any]
    ) -> None:
        """Store one record (appended to disk at once)."""
        self.put_many(fingerprint, [(prompt_hash, settings, record)])

    def put_many(self, fingerprint: str, items: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
        """Store several records with one append (one line each, on disk before returning)."""
        if not items:
            return
        entries = self._load(fingerprint)
        lines = []
        for prompt_hash, settings, record in items:
            key = settings_key(settings)
            # Checked and stored as the JSON round trip, so what `get` returns now is what a rerun reads.
            stored = json.loads(json.dumps(record))
            entries[(prompt_hash, key)] = stored
            row = {
                "prompt_hash": prompt_hash,
                "settings": key,
                "record": stored,
                "checksum": record_checksum(prompt_hash, key, stored),
            }
            lines.append(json.dumps(row) + "\n")
        self.path.mkdir(parents=True, exist_ok=True)
        data = "".join(lines).encode("utf-8")
        # One write per batch on an O_APPEND descriptor: concurrent writers (xdist workers) interleave whole
        # lines.
        fd = os.open(self._file(fingerprint), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                data = b"\n" + data  # a torn tail ends here; the new records start on a line of their own
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)

    def __len__(self) -> int:
        """Entries held in memory (fingerprints read so far)."""
        return sum(len(v) for v in self._index.values())

    def clear(self, fingerprint: str | None = None) -> None:
        """Delete one fingerprint's file (or every cache file) and forget what was read."""
        targets = [self._file(fingerprint)] if fingerprint else list(self.path.glob("*.jsonl"))
        for file in targets:
            file.unlink(missing_ok=True)
        if fingerprint:
            self._index.pop(fingerprint, None)
        else:
            self._index.clear()
