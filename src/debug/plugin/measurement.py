"""`Measurement`: how a test records what it measured (the `measure` fixture hands one to each test).

Measurement API (stable; other eval modules, e.g. causal tracing, record through it)::

    def test_something(measure):
        measure.info(model="embedded:binder", fingerprint="ab12...", seq_len=16)   # case facts (optional)
        measure.metric("accuracy", k=41, n=50)           # a proportion: value k/n and its Wilson 95% interval
        measure.metric("mean_logprob", -0.31)            # any float
        measure.metric("effect/layer3", 0.82, higher_is_better=True)
        measure.metric("iia", 0.9, low=0.8, high=0.95)   # a float with an interval you computed yourself
        measure.sample({"program": "...", "correct": True, "program_hash": "..."})   # per-sample records
        measure.samples([...])
        measure.image("heatmap", "heatmap.png", caption="normalized effect, layer x position")
        # (an image is a path or bytes)
        measure.evaluate(debug_case, debug_model)        # the standard accuracy measurement of an eval case
        measure.trace(debug_case, debug_model, family="range")   # the causal measurement of a causal case

Rules:
- A low value never fails the test; only exceptions do. Gates and `--compare-fail` decide the exit code.
- Everything recorded must be plain data (str, int, float, bool, None, lists, dicts); numpy scalars are
  converted, NaN and infinities become null. Images are PNG or SVG (path or bytes) and are embedded in
  report.html and saved under the run's images/ folder.
- The record travels inside pytest's report object (attribute `debug_record`), so pytest-xdist workers deliver
  it to the controller, which alone writes results.json, samples.jsonl and report.html.
- `measure.info` keys `model`, `fingerprint`, `family` and `seq_len` fill the columns of the report's tables;
  other keys are shown with the case.

The fixtures are in `debug.plugin.fixtures`.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from debug._util.jsonable import jsonable
from debug.plugin.evaluate import evaluate_case
from debug.plugin.gates import METRIC_NAME
from debug.stats import wilson_interval

if TYPE_CHECKING:
    import pytest

    from debug.plugin.cases import Case

_TOP_LEVEL_INFO = ("model", "fingerprint", "family", "seq_len")


class Measurement:
    """What one test measured: metrics, per-sample records, images and case facts.

    Created by the `measure` fixture; see the module docstring for the API.
    """

    def __init__(self, name: str, nodeid: str, family: str, request: pytest.FixtureRequest | None = None):
        self.name = name
        self.nodeid = nodeid
        self._request = request
        self._metrics: dict[str, dict[str, Any]] = {}
        self._samples: list[dict[str, Any]] = []
        self._images: list[dict[str, Any]] = []
        self._info: dict[str, Any] = {"family": family}
        self._started = time.perf_counter()

    def info(self, **fields: Any) -> None:
        """Attach facts to the case (model, fingerprint, family, seq_len fill the report's columns)."""
        self._info.update({k: jsonable(v) for k, v in fields.items()})

    def metric(
        self,
        name: str,
        value: float | None = None,
        *,
        k: int | None = None,
        n: int | None = None,
        low: float | None = None,
        high: float | None = None,
        higher_is_better: bool | None = None,
    ) -> None:
        """Record one named metric.

        Args:
            name: Metric name, e.g. "accuracy" or "effect/layer3" (letters, digits, `_ . / -`).
            value: The value. Optional when k and n are given (it is then k / n).
            k: Successes of a proportion; with `n` the Wilson 95% interval is computed.
            n: Trials of a proportion.
            low: Lower end of an interval you computed yourself (ignored when k/n are given).
            high: Upper end of that interval.
            higher_is_better: Direction, for deltas and comparisons; None means "higher" for accuracy-like
                metrics and "lower" for names ending in `failure_rate` or `error`.

        Raises:
            ValueError: On a bad name, a missing value, or inconsistent k/n.
        """
        if not METRIC_NAME.fullmatch(name):
            raise ValueError(f"metric name {name!r} must match {METRIC_NAME.pattern} (e.g. 'accuracy')")
        if (k is None) != (n is None):
            raise ValueError(f"metric {name!r}: give both k and n, or neither")
        if k is not None and n is not None:
            k, n = int(k), int(n)
            low, high = wilson_interval(k, n)
            value = k / n if n else None
        elif value is None:
            raise ValueError(f"metric {name!r} needs a value (or k and n)")
        if higher_is_better is None:
            higher_is_better = not name.endswith(("failure_rate", "error", "loss"))
        self._metrics[name] = jsonable(
            {"value": value, "k": k, "n": n, "low": low, "high": high, "higher_is_better": higher_is_better}
        )

    def sample(self, record: Mapping[str, Any]) -> None:
        """Record one per-sample dict (it goes to samples.jsonl and the report's drill-down)."""
        self._samples.append(jsonable(dict(record)))

    def samples(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Record many per-sample dicts."""
        for record in records:
            self.sample(record)

    def add_plain_samples(self, records: list[dict[str, Any]]) -> None:
        """Record sample dicts that are already plain JSON (skips the conversion; for `evaluate`)."""
        self._samples.extend(records)

    def image(
        self, name: str, source: str | Path | bytes, *, caption: str = "", mime: str | None = None
    ) -> None:
        """Attach an image (PNG or SVG, a path or bytes) to the case; report.html shows it with the case.

        Raises:
            ValueError: When the image is neither PNG nor SVG.
        """
        data = Path(source).read_bytes() if isinstance(source, str | Path) else bytes(source)
        if mime is None:
            if data.startswith(b"\x89PNG"):
                mime = "image/png"
            elif b"<svg" in data[:2048]:
                mime = "image/svg+xml"
        if mime not in ("image/png", "image/svg+xml"):
            raise ValueError(
                f"image {name!r}: only PNG or SVG can be attached (got {mime or 'unknown bytes'})"
            )
        self._images.append(
            {
                "name": str(name),
                "caption": str(caption),
                "mime": mime,
                "data": base64.b64encode(data).decode(),
            }
        )

    def evaluate(self, case: Case, loaded: Any) -> list[Any]:
        """Run the standard measurement of an eval case (accuracy, log-prob, parse failures, baselines).

        Returns:
            The scorer's samples, in program order.
        """
        backend = self._request.getfixturevalue("debug_backend") if self._request else None
        if backend is None:
            raise RuntimeError("measure.evaluate needs the debug_backend fixture (use the `measure` fixture)")
        return evaluate_case(self, case, loaded, backend)

    def trace(self, case: Case, loaded: Any, *, family: str) -> list[Any]:
        """Run the causal measurement of a causal eval case (`debug.causal.evaluate.measure_eval_case`).

        The run's `--num-seqs` (given: every pair is patched), `--remote` and answer cache apply (the
        behavioural twin's answers, when it ran first, are read back); the pictures are attached as SVG.
        Skips the test when no pair could be patched (the samples say why).

        Args:
            case: The eval case (`debug_case`).
            loaded: Its model (`debug_model`).
            family: A key of `debug.causal.evaluate.CAUSAL_FAMILIES` ("binding", "range", "boolean").

        Returns:
            The exact sweeps at the targets, in program order.
        """
        # deferred: this module is also used outside pytest (bench/), and torch and nnsight cost seconds to
        # import while only causal cases need them.
        import pytest

        from debug.causal.evaluate import measure_eval_case

        if self._request is None:
            raise RuntimeError("measure.trace needs pytest's request (use the `measure` fixture)")
        config = self._request.config
        results = measure_eval_case(
            case,
            loaded,
            self,
            family=family,
            num_seqs_given=config.getoption("--num-seqs") is not None,
            remote=config.getoption("--remote"),
            cache=self._request.getfixturevalue("debug_backend").cache,
        )
        if not results:
            pytest.skip("no program pair of equal token length to patch (the samples say why)")
        return results

    @property
    def recorded(self) -> bool:
        """Whether anything beyond the default facts was recorded."""
        return bool(self._metrics or self._samples or self._images or len(self._info) > 1)

    def to_record(self) -> dict[str, Any]:
        """The plain-JSON record sent to the controller."""
        info = dict(self._info)
        record: dict[str, Any] = {"id": self.name, "nodeid": self.nodeid}
        for key in _TOP_LEVEL_INFO:
            record[key] = info.pop(key, None)
        record.update(
            info=info,
            metrics=self._metrics,
            samples=self._samples,
            images=self._images,
            duration=time.perf_counter() - self._started,
        )
        return record
