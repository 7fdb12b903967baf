"""Gates: `[SELECTOR:]METRIC>=VALUE` or `[SELECTOR:]METRIC<=VALUE`, checked after the run.

- SELECTOR (optional) is matched case-insensitively as a substring of the case id, e.g. `variable_binding`,
  `VARIABLE_BINDING-16` or `embedded:binder`; everything before the last `:` is the selector, so model ids
  with colons work.
- METRIC is a recorded metric (`accuracy`, `parse_failure_rate`, `mean_logprob`, `baseline/copy_line_1`, ...).
- VALUE is a number, or a percentage like `95%`.

A gate that cannot decide anything is refused when the run starts, from `--gate` and `[tool.debug]` alike:
a bar outside the range its metric can take (`accuracy>=95` -- a proportion lies in [0, 1]; the message
suggests `95%` -- or `mean_logprob>=0.5`, a log-probability is never positive), and a bar at the edge of
that range on the side that always holds (`accuracy>=0`, `parse_failure_rate<=1`), which can never fail.
Proportions are `PROPORTION_METRICS` and every metric under a `PROPORTION_PREFIXES` prefix; log-probabilities
are `LOGPROB_METRICS`; other metrics (effects, counts) take any finite bar.

A gate is evaluated per model over the cases it selects: proportions are pooled (sum of k over sum of n, with
the Wilson 95% interval of the pool), other metrics are averaged. The gate passes when the measured value is
on the right side of the bar (`>=` or `<=`); the report also says whether the interval straddles the bar, i.e.
whether more samples could change the verdict. A `--gate` that selects no measured case fails (a typo must not
pass CI); a `[tool.debug]` gate that selects nothing is reported as "no data" and does not fail, so `-k` can
run a subset.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from debug.stats import interval_straddles, pooled_proportion

GRAMMAR = '"[SELECTOR:]METRIC>=VALUE" or "[SELECTOR:]METRIC<=VALUE", e.g. "variable_binding:accuracy>=0.95"'
METRIC_NAME = re.compile(r"[A-Za-z_][\w.\-/]*")
_EXPR = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][\w.\-/]*)\s*(?P<op>>=|<=)\s*"
    r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(?P<percent>%)?\s*$"
)


#: Metrics that are proportions in [0, 1] (recorded with k and n): the evals' and `debug.plugin.compare`'s.
PROPORTION_METRICS = frozenset({"accuracy", "parse_failure_rate", "robust_pairs"})
#: Metric families that are proportions too (`baseline/copy_line_1`, `iia/query/max`, ...).
PROPORTION_PREFIXES = ("baseline/", "iia/")
#: Metrics that are log-probabilities, never above 0.
LOGPROB_METRICS = frozenset({"mean_logprob"})


class GateError(ValueError):
    """A gate expression does not follow the grammar, or its bar can never pass or never fail."""


def metric_range(metric: str) -> tuple[float, float] | None:
    """The closed range a metric's values lie in, or None when it is unbounded (or unknown)."""
    if metric in PROPORTION_METRICS or metric.startswith(PROPORTION_PREFIXES):
        return 0.0, 1.0
    if metric in LOGPROB_METRICS:
        return -math.inf, 0.0
    return None


def _number(value: float) -> str:
    return f"{value:g}"


def _check_bar(gate: Gate, percent: bool) -> None:
    """Raise `GateError` when `gate` can never pass or can never fail, whatever the model does."""
    where = "[tool.debug] gate" if gate.source == "pyproject" else gate.source
    head = f"{where} {gate.text}: "
    if not math.isfinite(gate.value):
        raise GateError(f"{head}the bar must be a finite number")
    bounds = metric_range(gate.metric)
    if bounds is None:
        return
    low, high = bounds
    op, value, metric = gate.op, gate.value, gate.metric
    if low == 0.0 and high == 1.0:
        what = f"{metric} is a proportion in [0, 1]"
        if not low <= value <= high:
            if not percent and 1.0 < value <= 100.0:
                raise GateError(f"{head}{what}; did you mean {_number(value)}%?")
            never = "pass" if (op == ">=") == (value > high) else "fail"
            raise GateError(f"{head}{what}, so this gate can never {never}; use a bar in [0, 1] or 0%..100%")
    else:
        what = f"{metric} is a log-probability (never above 0)"
        if value > high:
            never = "pass" if op == ">=" else "fail"
            raise GateError(f"{head}{what}, so this gate can never {never}; use a negative bar, e.g. >=-0.5")
    if (op == ">=" and value == low) or (op == "<=" and value == high):
        raise GateError(
            f"{head}{metric} is never {'below' if op == '>=' else 'above'} {_number(value)}, so this gate "
            "can never fail; move the bar inside the range"
        )


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
    """Parse one gate expression and check that its bar can both pass and fail (see the module docstring).

    Raises:
        GateError: One line: the grammar, when `text` does not follow it, or why the bar decides nothing.
    """
    # The selector may itself contain ':' (model ids), so split at the last ':' (a VALUE never has one).
    head, sep, tail = str(text).rpartition(":")
    match = _EXPR.match(tail)
    if match is None or (sep and not head.strip()):
        raise GateError(f"malformed gate {text!r} ({source}); the grammar is {GRAMMAR}")
    selector = head.strip() if sep else None
    value = float(match["value"]) / (100.0 if match["percent"] else 1.0)
    gate = Gate(selector, match["metric"], match["op"], value, source, str(text).strip())
    _check_bar(gate, percent=bool(match["percent"]))
    return gate


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
    values = [m for m in metrics if m.get("value") is not None]
    if not values:
        return None, None, None, None, None
    if all(m.get("k") is not None and m.get("n") for m in values):
        pool = pooled_proportion((m["k"], m["n"]) for m in values)
        return pool.value, pool.low, pool.high, pool.k, pool.n
    if len(values) == 1:
        return float(values[0]["value"]), values[0].get("low"), values[0].get("high"), None, None
    return sum(float(m["value"]) for m in values) / len(values), None, None, None, None


def evaluate_gates(gates: Iterable[Gate], cases: Iterable[Mapping[str, Any]]) -> list[GateOutcome]:
    """Check every gate per model over the cases it selects (see the module docstring)."""
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
