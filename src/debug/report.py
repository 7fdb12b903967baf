"""Run reports: the results.json schema (with a versioned reader) and the self-contained report.html.

results.json (schema_version 1) holds:

- `run`: id, start/finish times, models with fingerprints, package versions, git commit, pytest arguments,
  resolved options;
- `cases`: one record per case: id, nodeid, family, model, fingerprint, seq_len, outcome, error, info,
  metrics (each `{value, k, n, low, high, higher_is_better}`; `low`/`high` is the Wilson 95% interval for
  proportions), images (paths under images/);
- `comparisons`: per-case and per-family paired tests against `--baseline` (or null);
- `gates`: one outcome per gate and model; `regressions`: cases that tripped `--compare-fail`;
- `errors`: failures that carry no measurement (a crashed worker, an error outside a case).

`load_results` refuses a file of another schema version in one line. `render_html` writes one HTML file with
inline CSS, JS and PNG plots; all model and program text goes through jinja2's autoescape.
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


def _metric(case: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    return (case.get("metrics") or {}).get(name)


def accuracy_plots(cases: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One PNG per family: accuracy (Wilson 95% bars) against seq_len per model, baselines dashed.

    Returns:
        [{"family", "png" (base64)}], families in name order; families with no accuracy are skipped.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from debug.causal_visualization import figure_base64

    families: dict[str, dict[str, list[tuple[int, Mapping[str, Any]]]]] = {}
    baselines: dict[str, dict[str, dict[int, list[float]]]] = {}
    for case in cases:
        acc = _metric(case, "accuracy")
        if not acc or acc.get("value") is None or case.get("seq_len") is None:
            continue
        fam = str(case.get("family"))
        label = f"{case.get('model')} · {(case.get('info') or {}).get('task', '')}".rstrip(" ·")
        families.setdefault(fam, {}).setdefault(label, []).append((int(case["seq_len"]), acc))
        for name, m in (case.get("metrics") or {}).items():
            if name.startswith("baseline/") and m.get("value") is not None:
                per = baselines.setdefault(fam, {}).setdefault(name.split("/", 1)[1], {})
                per.setdefault(int(case["seq_len"]), []).append(float(m["value"]))
    plots = []
    for fam in sorted(families):
        fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=96)
        for label, points in sorted(families[fam].items()):
            points.sort(key=lambda p: p[0])
            xs = [p[0] for p in points]
            ys = [p[1]["value"] for p in points]
            lo = [
                max(0.0, y - (p[1].get("low") if p[1].get("low") is not None else y))
                for y, p in zip(ys, points)
            ]
            hi = [
                max(0.0, (p[1].get("high") if p[1].get("high") is not None else y) - y)
                for y, p in zip(ys, points)
            ]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=label)
        for name, per_len in sorted(baselines.get(fam, {}).items()):
            xs = sorted(per_len)
            ax.plot(
                xs,
                [sum(per_len[x]) / len(per_len[x]) for x in xs],
                linestyle="--",
                linewidth=1,
                alpha=0.7,
                label=f"baseline: {name}",
            )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("seq_len")
        ax.set_ylabel("accuracy (Wilson 95%)")
        ax.set_title(fam)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        plots.append({"family": fam, "png": figure_base64(fig)})
    return plots


def summary_rows(cases: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Model x family pooled accuracy (Wilson 95%) with the mean of each heuristic baseline."""
    from debug.stats import wilson_interval

    pools: dict[tuple[str, str], dict[str, Any]] = {}
    for case in cases:
        acc = _metric(case, "accuracy")
        if not acc or acc.get("k") is None or not acc.get("n"):
            continue
        pool = pools.setdefault(
            (str(case.get("model")), str(case.get("family"))), {"k": 0, "n": 0, "cases": 0, "baselines": {}}
        )
        pool["k"] += int(acc["k"])
        pool["n"] += int(acc["n"])
        pool["cases"] += 1
        for name, m in (case.get("metrics") or {}).items():
            if name.startswith("baseline/") and m.get("value") is not None:
                pool["baselines"].setdefault(name.split("/", 1)[1], []).append(float(m["value"]))
    rows = []
    for (model, family), pool in sorted(pools.items()):
        low, high = wilson_interval(pool["k"], pool["n"])
        rows.append(
            {
                "model": model,
                "family": family,
                "cases": pool["cases"],
                "k": pool["k"],
                "n": pool["n"],
                "value": pool["k"] / pool["n"],
                "low": low,
                "high": high,
                "baselines": {k: sum(v) / len(v) for k, v in sorted(pool["baselines"].items())},
            }
        )
    return rows


def script_json(value: Any) -> str:
    """JSON that is safe inside a `<script type="application/json">` element (no `</script>`, no `<!--`)."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:  # a NaN from a hand-made record: JSON.parse would reject it, so store null
        from debug.plugin.fixture import jsonable

        text = json.dumps(jsonable(value), ensure_ascii=False, allow_nan=False)
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


def render_html(
    results: Mapping[str, Any],
    samples: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    images: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    *,
    sample_counts: Mapping[str, int] | None = None,
    max_samples_per_case: int = 50,
    max_samples_total: int = 5000,
) -> str:
    """Render report.html: one self-contained, escaped page.

    Args:
        results: The results.json document.
        samples: Case id -> sample records, for the drill-down.
        images: Case id -> images ({name, caption, mime, data (base64)}) to embed with the case.
        sample_counts: Case id -> how many samples the case has in all (default: the length of its list).
        max_samples_per_case: Drill-down rows per case (all samples stay in samples.jsonl).
        max_samples_total: Drill-down rows in the whole page, so huge runs still open quickly.
    """
    import jinja2
    import markupsafe

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("debug", "templates"),
        autoescape=True,  # every value is untrusted text: programs and model outputs
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pct"] = lambda v: "–" if v is None else f"{100.0 * float(v):.1f}%"
    env.filters["num"] = lambda v, d=3: "–" if v is None else f"{float(v):.{d}f}"
    env.filters["signed_pp"] = lambda v: "–" if v is None else f"{100.0 * float(v):+.1f} pp"
    env.filters["pval"] = lambda v: "–" if v is None else (f"{float(v):.3g}")
    samples = samples or {}
    budget = max_samples_total
    shown: dict[str, list[Mapping[str, Any]]] = {}
    for case in results.get("cases", []):
        rows = list(samples.get(case["id"], []))[: max(0, min(max_samples_per_case, budget))]
        budget -= len(rows)
        shown[case["id"]] = rows
    comparisons = results.get("comparisons") or {}
    deltas = {row["case"]: row for row in comparisons.get("cases", [])}
    cases = list(results.get("cases", []))
    families = sorted({str(c.get("family")) for c in cases})
    models = sorted({str(c.get("model")) for c in cases})
    details = [
        {
            "error": case.get("error"),
            "metrics": case.get("metrics") or {},
            "info": case.get("info") or {},
            "images": [dict(i) for i in (images or {}).get(case["id"], [])],
            "samples": shown[case["id"]],
            "sample_count": (sample_counts or {}).get(case["id"], len(samples.get(case["id"], []))),
        }
        for case in cases
    ]
    template = env.get_template("report.html.j2")
    return template.render(
        results=results,
        run=results.get("run") or {},
        cases=cases,
        families=families,
        models=models,
        summary=summary_rows(cases),
        plots=accuracy_plots(cases),
        case_data=markupsafe.Markup(script_json(details)),
        deltas=deltas,
        comparisons=comparisons,
        gates=results.get("gates", []),
        regressions=results.get("regressions", []),
        errors=results.get("errors", []),
    )
