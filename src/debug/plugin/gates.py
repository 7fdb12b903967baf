"""Gates: `[SELECTOR:]METRIC>=VALUE` or `[SELECTOR:]METRIC<=VALUE`, checked after the run.

- SELECTOR (optional) is matched case-insensitively as a substring of the case id, e.g. `variable_binding`,
  `VARIABLE_BINDING-16` or `embedded:binder`; everything before the last `:` is the selector, so model ids
  with colons work.
- METRIC is a recorded metric (`accuracy`, `parse_failure_rate`, `mean_logprob`, `baseline/copy_line_1`, ...).
- VALUE is a number, or a percentage like `95%`.

A gate is evaluated per model over the cases it selects: proportions are pooled (sum of k over sum of n, with
the Wilson 95% interval of the pool), other metrics are averaged. The gate passes when the measured value is
on the right side of the bar (`>=` or `<=`); the report also says whether the interval straddles the bar, i.e.
whether more samples could change the verdict. A `--gate` that selects no measured case fails (a typo must not
pass CI); a `[tool.debug]` gate that selects nothing is reported as "no data" and does not fail, so `-k` can
run a subset.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

GRAMMAR = '"[SELECTOR:]METRIC>=VALUE" or "[SELECTOR:]METRIC<=VALUE", e.g. "variable_binding:accuracy>=0.95"'
METRIC_NAME = re.compile(r"[A-Za-z_][\w.\-/]*")
_EXPR = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][\w.\-/]*)\s*(?P<op>>=|<=)\s*"
    r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<percent>%)?\s*$"
)


class GateError(ValueError):
    """A gate expression does not follow the grammar."""


@dataclass(frozen=True)
class Gate:
    """A parsed gate.

    Attributes:
        selector: Substring of case ids this gate applies to (None: every case).
        metric: Metric name.
        op: ">=" or "<=".
        value: The bar.
        source: Where it came from: "--gate" or "pyproject".
        text: The expression as written.
    """

    selector: str | None
    metric: str
    op: str
    value: float
    source: str
    text: str

    def selects(self, case_id: str) -> bool:
        """Whether the gate applies to a case id."""
        return self.selector is None or self.selector.lower() in case_id.lower()

    def passes(self, measured: float) -> bool:
        """Whether a measured value clears the bar."""
        return measured >= self.value if self.op == ">=" else measured <= self.value


def parse_gate(text: str, source: str = "--gate") -> Gate:
    """Parse one gate expression.

    Raises:
        GateError: With the grammar, when `text` does not follow it.
    """
    # The selector may itself contain ':' (model ids), so split at the last ':' (a VALUE never has one).
    head, sep, tail = str(text).rpartition(":")
    match = _EXPR.match(tail)
    if match is None or (sep and not head.strip()):
        raise GateError(f"malformed gate {text!r} ({source}); the grammar is {GRAMMAR}")
    selector = head.strip() if sep else None
    value = float(match["value"]) / (100.0 if match["percent"] else 1.0)
    return Gate(selector, match["metric"], match["op"], value, source, str(text).strip())


@dataclass(frozen=True)
class GateOutcome:
    """One gate checked against one model's selected cases.

    Attributes:
        gate: The expression.
        source: "--gate" or "pyproject".
        model: The model the cases belong to (None when no case matched).
        metric: Metric name.
        op: ">=" or "<=".
        bar: The gate's value.
        value: Measured (pooled) value, None without data.
        low: Lower end of its 95% interval (None when the metric has none).
        high: Upper end.
        k: Pooled successes (proportions only).
        n: Pooled trials (proportions only).
        cases: How many cases were pooled.
        straddles: Whether the interval contains the bar.
        status: "pass", "fail" or "no data".
    """

    gate: str
    source: str
    model: str | None
    metric: str
    op: str
    bar: float
    value: float | None
    low: float | None
    high: float | None
    k: int | None
    n: int | None
    cases: int
    straddles: bool
    status: str

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


def _pool(
    metrics: list[Mapping[str, Any]],
) -> tuple[float | None, float | None, float | None, int | None, int | None]:
    from debug.stats import wilson_interval

    values = [m for m in metrics if m.get("value") is not None]
    if not values:
        return None, None, None, None, None
    if all(m.get("k") is not None and m.get("n") for m in values):
        k = sum(int(m["k"]) for m in values)
        n = sum(int(m["n"]) for m in values)
        low, high = wilson_interval(k, n)
        return k / n, low, high, k, n
    if len(values) == 1:
        return float(values[0]["value"]), values[0].get("low"), values[0].get("high"), None, None
    return sum(float(m["value"]) for m in values) / len(values), None, None, None, None


def evaluate_gates(gates: Iterable[Gate], cases: Iterable[Mapping[str, Any]]) -> list[GateOutcome]:
    """Check every gate per model over the cases it selects (see the module docstring)."""
    from debug.stats import interval_straddles

    cases = [c for c in cases if c.get("metrics")]
    outcomes: list[GateOutcome] = []
    for gate in gates:
        by_model: dict[str | None, list[Mapping[str, Any]]] = {}
        for case in cases:
            if gate.selects(str(case["id"])) and gate.metric in case["metrics"]:
                by_model.setdefault(case.get("model"), []).append(case["metrics"][gate.metric])
        if not by_model:
            status = "fail" if gate.source == "--gate" else "no data"
            outcomes.append(
                GateOutcome(
                    gate.text,
                    gate.source,
                    None,
                    gate.metric,
                    gate.op,
                    gate.value,
                    None,
                    None,
                    None,
                    None,
                    None,
                    0,
                    False,
                    status,
                )
            )
            continue
        for model, metrics in by_model.items():
            value, low, high, k, n = _pool(metrics)
            if value is None:
                status, straddles = "no data", False
            else:
                status = "pass" if gate.passes(value) else "fail"
                straddles = low is not None and high is not None and interval_straddles(low, high, gate.value)
            outcomes.append(
                GateOutcome(
                    gate.text,
                    gate.source,
                    model,
                    gate.metric,
                    gate.op,
                    gate.value,
                    value,
                    low,
                    high,
                    k,
                    n,
                    len(metrics),
                    straddles,
                    status,
                )
            )
    return outcomes
