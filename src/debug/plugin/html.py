"""report.html: one self-contained page (inline CSS, JS and PNG plots) rendered from a results.json document.

All model and program text goes through jinja2's autoescape; JSON embedded in a `<script>` element is escaped
by `script_json`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from debug._util.figures import figure_base64
from debug._util.jsonable import jsonable
from debug._util.templates import template_env
from debug.stats import pooled_proportion


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

    pools: dict[tuple[str, str], dict[str, Any]] = {}
    for case in cases:
        acc = _metric(case, "accuracy")
        if not acc or acc.get("k") is None or not acc.get("n"):
            continue
        pool = pools.setdefault(
            (str(case.get("model")), str(case.get("family"))), {"counts": [], "baselines": {}}
        )
        pool["counts"].append((acc["k"], acc["n"]))
        for name, m in (case.get("metrics") or {}).items():
            if name.startswith("baseline/") and m.get("value") is not None:
                pool["baselines"].setdefault(name.split("/", 1)[1], []).append(float(m["value"]))
    rows = []
    for (model, family), pool in sorted(pools.items()):
        total = pooled_proportion(pool["counts"])
        rows.append(
            {
                "model": model,
                "family": family,
                "cases": len(pool["counts"]),
                "k": total.k,
                "n": total.n,
                "value": total.value,
                "low": total.low,
                "high": total.high,
                "baselines": {k: sum(v) / len(v) for k, v in sorted(pool["baselines"].items())},
            }
        )
    return rows


def script_json(value: Any) -> str:
    """JSON that is safe inside a `<script type="application/json">` element (no `</script>`, no `<!--`)."""
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:  # a NaN from a hand-made record: JSON.parse would reject it, so store null
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
    import markupsafe

    env = template_env()
    samples = samples or {}
    budget = max_samples_total
    shown: dict[str, list[Mapping[str, Any]]] = {}
    for case in results.get("cases", []):
        rows = list(samples.get(case["id"], []))[: max(0, min(max_samples_per_case, budget))]
        budget -= len(rows)
        shown[case["id"]] = rows
    comparisons = results.get("comparisons") or {}
    deltas: dict[str, list[Mapping[str, Any]]] = {}  # a case can be compared with a baseline and a reference
    for row in comparisons.get("cases", []):
        deltas.setdefault(row["case"], []).append(row)
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
