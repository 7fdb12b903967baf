"""The answer cache: model outputs kept on disk so a rerun (or a killed run) never decodes a prompt twice.

One JSONL file per model fingerprint under the cache folder (default `.debug_cache/` in the working directory,
or `$DEBUG_CACHE_DIR`). Each line is one finished sample's decoding result, keyed by the prompt's hash and
a hash of the decoding settings (greedy, token budget, stop rule, dtype, the expected answer whose
log-probability was measured). Lines are appended as samples finish, so whatever a killed run completed is
kept. Because the key starts with the fingerprint (a hash of config and weights), the cache can never serve
one model's outputs as another's. Parsing and correctness are not cached: they are recomputed from the raw
output on every read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

DEFAULT_CACHE_DIR = ".debug_cache"


def default_cache_dir() -> Path:
    """`$DEBUG_CACHE_DIR` if set, else `.debug_cache/` in the current working directory."""
    return Path(os.environ.get("DEBUG_CACHE_DIR") or DEFAULT_CACHE_DIR)


def settings_key(settings: dict[str, Any]) -> str:
    """A stable 16-hex-digit hash of a decoding-settings dict (key order does not matter)."""
    text = json.dumps(settings, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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
            with open(file, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        row = json.loads(line)
                        entries[(row["prompt_hash"], row["settings"])] = row["record"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut short by a killed writer: skip it, keep the rest
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
        """Store several records with one append (one line each, flushed before returning)."""
        if not items:
            return
        entries = self._load(fingerprint)
        lines = []
        for prompt_hash, settings, record in items:
            key = settings_key(settings)
            entries[(prompt_hash, key)] = record
            lines.append(json.dumps({"prompt_hash": prompt_hash, "settings": key, "record": record}) + "\n")
        self.path.mkdir(parents=True, exist_ok=True)
        # One write per batch in append mode: concurrent writers (xdist workers) interleave whole lines.
        with open(self._file(fingerprint), "a", encoding="utf-8") as handle:
            handle.write("".join(lines))
            handle.flush()

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
