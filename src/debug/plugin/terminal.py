"""The end-of-run terminal summary: one tabulate table of cases, then comparisons, gates and regressions.

`debug compare` (`debug.plugin.compare_cli`) prints the same table and lines for two saved runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tabulate import tabulate

from debug.plugin.gates import parse_gate

MAX_ROWS = 200


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _source(row: Mapping[str, Any]) -> str:
    # Rows written before within-run comparisons existed are all against a baseline.
    return str(row.get("source") or "baseline")


def delta_text(row: Mapping[str, Any] | None, correction: str | None, metric: str = "accuracy") -> str:
    """`-12.0 pp (p=0.004, holm 0.016)` for one comparison row, its note, or how few programs paired."""
    if row is None:
        return "–"
    stats = (row.get("metrics") or {}).get(metric)
    if not stats or not stats.get("n_pairs"):
        pairing = row.get("pairing") or {}
        if pairing and not pairing.get("complete"):
            return f"0/{pairing.get('programs')} paired: {pairing.get('why')}"
        return str(row.get("note") or "–")
    text = f"{100 * stats['delta']:+.1f} pp (p={stats['p_value']:.3g}"
    if correction and correction != "none" and stats.get("p_adjusted") is not None:
        text += f", {correction} {stats['p_adjusted']:.3g}"
    text += ")"
    pairing = row.get("pairing") or {}
    if pairing and not pairing.get("complete"):
        text += f"; only {pairing['paired']}/{pairing['programs']} paired"
    return text


def case_table(
    cases: Sequence[Mapping[str, Any]],
    comparisons: Mapping[str, Any] | None,
    gates: Sequence[Mapping[str, Any]],
    *,
    max_rows: int = MAX_ROWS,
    show_gates: bool = True,
) -> str:
    """Rows: case, accuracy [interval], delta vs the baseline and/or the reference model (p), gate status."""
    comparisons = comparisons or {}
    correction = comparisons.get("correction")
    reference = comparisons.get("reference")
    rows_by = {(row["case"], _source(row)): row for row in comparisons.get("cases", [])}
    sources = [s for s in ("baseline", "run") if any(src == s for _, src in rows_by)]
    if reference is not None and "run" not in sources:
        sources.append("run")
    headers = ["case", "accuracy [95% CI]"]
    headers += ["vs baseline" if s == "baseline" else f"vs {reference}" for s in sources]
    rows = []
    for case in cases[:max_rows]:
        acc = (case.get("metrics") or {}).get("accuracy") or {}
        if case.get("outcome") != "passed":
            accuracy = f"{case.get('outcome')}: {str(case.get('error') or '')[:90]}"
        elif acc.get("value") is None:
            accuracy = "–"
        else:
            accuracy = f"{_pct(acc['value'])} [{_pct(acc.get('low'))}, {_pct(acc.get('high'))}]"
        cells = []
        for source in sources:
            if source == "run" and str(case.get("model")) == str(reference):
                cells.append("reference")
            else:
                cells.append(delta_text(rows_by.get((case["id"], source)), correction))
        statuses = {
            g["status"] for g in gates if g.get("model") == case.get("model") and _gate_selects(g, case)
        }
        gate = "fail" if "fail" in statuses else ("pass" if "pass" in statuses else "–")
        rows.append([case["id"], accuracy, *cells, gate] if show_gates else [case["id"], accuracy, *cells])
    table = tabulate(rows, headers=[*headers, "gate"] if show_gates else headers, tablefmt="simple")
    if len(cases) > max_rows:
        table += f"\n... {len(cases) - max_rows} more cases in report.html"
    return table


def _gate_selects(gate: Mapping[str, Any], case: Mapping[str, Any]) -> bool:
    parsed = parse_gate(gate["gate"], gate.get("source", "--gate"))
    return parsed.selects(str(case["id"])) and parsed.metric in (case.get("metrics") or {})


def gate_lines(gates: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per gate outcome: status, gate, model, value, interval, straddle and programs to decide it."""
    lines = []
    for g in gates:
        if g["value"] is None:
            why = "matched no measured case" if g["status"] == "fail" else "no data"
            lines.append(f"{g['status'].upper():<7} {g['gate']} ({g['source']}): {why}")
            continue
        interval = f" [{g['low']:.3f}, {g['high']:.3f}]" if g.get("low") is not None else ""
        straddle = ""
        if g.get("straddles"):
            straddle = "; the interval straddles the bar"
            if g.get("programs_per_case"):
                straddle += f" (about {g['programs_per_case']} programs per case would decide it)"
        lines.append(
            f"{g['status'].upper():<7} {g['gate']} on {g['model']}: {g['value']:.3f}{interval} "
            f"over {g['cases']} case(s){straddle}"
        )
    return lines


def family_lines(comparisons: Mapping[str, Any] | None) -> list[str]:
    """One line per (family, model, reference) pooled paired comparison of accuracy."""
    lines = []
    for fam in (comparisons or {}).get("families", []):
        acc = fam["metrics"].get("accuracy")
        if not acc or not acc["n_pairs"]:
            continue
        reference = fam.get("reference", fam.get("baseline_model"))
        against = "baseline" if _source(fam) == "baseline" else "reference"
        interval = ""
        if acc.get("low") is not None:
            interval = f"95% CI {100 * acc['low']:+.1f} to {100 * acc['high']:+.1f} pp; "
        needed = ""
        if acc.get("needed_per_case"):
            needed = f"; about {acc['needed_per_case']} programs per case would decide it"
        lines.append(
            f"{fam['family']}: {fam['model']} vs {against} {reference}: "
            f"{100 * acc['delta']:+.1f} pp over {acc['n_pairs']} paired programs "
            f"({interval}{acc['base_only']} only {against} right, {acc['new_only']} only {fam['model']} "
            f"right; exact McNemar p={acc['p_value']:.3g}{needed})"
        )
    return lines


def regression_lines(regressions: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per `--compare-fail` failure: `REGRESSION ...` or `UNPAIRED ...`, each naming case and fix."""
    lines = []
    for reg in regressions:
        word = "UNPAIRED" if reg.get("reason") == "unpaired" else "REGRESSION"
        message = reg.get("message") or (
            f"{reg['case']}: {reg['metric']} {100 * reg['delta']:+.1f} pp (p={reg['p_value']:.3g}) "
            f"exceeds the allowed {100 * reg['margin']:.1f} pp"
        )
        lines.append(f"{word} {message}")
    return lines
