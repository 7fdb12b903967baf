"""The results.json document of a run: its schema, a versioned reader, and the run's environment.

results.json (schema_version 1) holds:

- `run`: id, start/finish times, models with fingerprints, package versions, git commit, pytest arguments,
  resolved options;
- `cases`: one record per case: id, nodeid, family, model, fingerprint, seq_len, outcome, error, info,
  metrics (each `{value, k, n, low, high, higher_is_better}`; `low`/`high` is the Wilson 95% interval for
  proportions), images (paths under images/);
- `comparisons`: per-case and per-family paired tests against `--baseline` (or null);
- `gates`: one outcome per gate and model; `regressions`: cases that tripped `--compare-fail`;
- `errors`: failures that carry no measurement (a crashed worker, an error outside a case).

`load_results` refuses a file of another schema version in one line. The HTML page is `debug.plugin.html`.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
_PACKAGES = ("debug", "torch", "transformers", "nnsight", "numpy", "scipy", "pytest", "pytest-xdist")


class ReportError(ValueError):
    """A results.json cannot be read; the message is one line that names the fix."""


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a results.json, refusing missing or corrupt files and other schema versions.

    Raises:
        ReportError: With a one-line message.
    """
    path = Path(path)
    if not path.is_file():
        raise ReportError(
            f"{path} does not exist; pass the results.json of an earlier run, e.g. "
            "reports/latest/results.json"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(
            f"{path} is not valid JSON ({type(exc).__name__}); rerun that run or restore the file"
        ) from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise ReportError(f"{path} has no schema_version: it is not a debug results.json")
    if data["schema_version"] != SCHEMA_VERSION:
        raise ReportError(
            f"{path} has schema_version {data['schema_version']!r}, but this debug reads "
            f"version {SCHEMA_VERSION} only; rerun the baseline with this version"
        )
    if not isinstance(data.get("cases"), list):
        raise ReportError(f"{path} has no list of cases; it is not a complete debug results.json")
    return data


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that shape a measurement."""
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(root: Path) -> str | None:
    """The commit checked out at `root` (with `-dirty` when the tree has changes), or None outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head or None


def environment() -> dict[str, Any]:
    """Python, platform and package versions."""
    return {"python": sys.version.split()[0], "platform": platform.platform(), "packages": package_versions()}


def build_results(
    run: Mapping[str, Any],
    cases: Sequence[Mapping[str, Any]],
    *,
    comparisons: Mapping[str, Any] | None = None,
    gates: Sequence[Mapping[str, Any]] = (),
    regressions: Sequence[Mapping[str, Any]] = (),
    errors: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Assemble the results.json document."""
    return {
        "schema_version": SCHEMA_VERSION,
        "run": dict(run),
        "cases": [dict(c) for c in cases],
        "comparisons": dict(comparisons) if comparisons else None,
        "gates": [dict(g) for g in gates],
        "regressions": [dict(r) for r in regressions],
        "errors": [dict(e) for e in errors],
    }
