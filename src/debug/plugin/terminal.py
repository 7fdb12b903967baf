"""The end-of-run terminal summary: one tabulate table of cases, then gates and regressions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tabulate import tabulate

MAX_ROWS = 200


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def case_table(
    cases: Sequence[Mapping[str, Any]],
    comparisons: Mapping[str, Any] | None,
    gates: Sequence[Mapping[str, Any]],
    *,
    max_rows: int = MAX_ROWS,
) -> str:
    """Rows: case, accuracy [interval], delta vs baseline (p), gate status."""
    deltas = {row["case"]: row for row in (comparisons or {}).get("cases", [])}
    rows = []
    for case in cases[:max_rows]:
        acc = (case.get("metrics") or {}).get("accuracy") or {}
        if case.get("outcome") != "passed":
            accuracy = f"{case.get('outcome')}: {str(case.get('error') or '')[:90]}"
        elif acc.get("value") is None:
            accuracy = "–"
        else:
            accuracy = f"{_pct(acc['value'])} [{_pct(acc.get('low'))}, {_pct(acc.get('high'))}]"
        delta = "–"
        d = deltas.get(case["id"])
        if d and (d.get("metrics") or {}).get("accuracy"):
            a = d["metrics"]["accuracy"]
            delta = f"{100 * a['delta']:+.1f} pp (p={a['p_value']:.3g})"
        elif d and d.get("note"):
            delta = str(d["note"])
        statuses = {
            g["status"] for g in gates if g.get("model") == case.get("model") and _gate_selects(g, case)
        }
        gate = "fail" if "fail" in statuses else ("pass" if "pass" in statuses else "–")
        rows.append([case["id"], accuracy, delta, gate])
    table = tabulate(
        rows, headers=["case", "accuracy [95% CI]", "delta vs baseline", "gate"], tablefmt="simple"
    )
    if len(cases) > max_rows:
        table += f"\n... {len(cases) - max_rows} more cases in report.html"
    return table


def _gate_selects(gate: Mapping[str, Any], case: Mapping[str, Any]) -> bool:
    from debug.plugin.gates import parse_gate

    parsed = parse_gate(gate["gate"], gate.get("source", "--gate"))
    return parsed.selects(str(case["id"])) and parsed.metric in (case.get("metrics") or {})


def gate_lines(gates: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per gate outcome: status, gate, model, value, interval, straddle."""
    lines = []
    for g in gates:
        if g["value"] is None:
            why = "matched no measured case" if g["status"] == "fail" else "no data"
            lines.append(f"{g['status'].upper():<7} {g['gate']} ({g['source']}): {why}")
            continue
        interval = f" [{g['low']:.3f}, {g['high']:.3f}]" if g.get("low") is not None else ""
        straddle = "; the interval straddles the bar" if g.get("straddles") else ""
        lines.append(
            f"{g['status'].upper():<7} {g['gate']} on {g['model']}: {g['value']:.3f}{interval} "
            f"over {g['cases']} case(s){straddle}"
        )
    return lines


def family_lines(comparisons: Mapping[str, Any] | None) -> list[str]:
    """One line per (family, model) pooled paired comparison of accuracy."""
    lines = []
    for fam in (comparisons or {}).get("families", []):
        acc = fam["metrics"].get("accuracy")
        if not acc or not acc["n_pairs"]:
            continue
        lines.append(
            f"{fam['family']}: {fam['model']} vs baseline {fam['baseline_model']}: "
            f"{100 * acc['delta']:+.1f} pp over {acc['n_pairs']} paired programs "
            f"({acc['base_only']} only baseline right, {acc['new_only']} only new right; "
            f"exact McNemar p={acc['p_value']:.3g})"
        )
    return lines
