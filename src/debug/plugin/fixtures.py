"""The plugin's fixtures: `measure` (per test), `debug_model` (the loaded model of a parametrized eval case; a
model that fails to load errors its own cases only) and `debug_backend` (the session-wide loader and scorer;
override it in a conftest to plug in another scorer, e.g. `debug.plugin.testing.FakeBackend`).
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from debug.plugin.cases import Case, family_of
from debug.plugin.evaluate import Backend
from debug.plugin.measurement import Measurement
from debug.plugin.options import get_options

MEASUREMENT_KEY = pytest.StashKey[Measurement]()


def _family_of_item(item: pytest.Item) -> str:
    module = getattr(item, "module", None)
    return family_of(module) if module is not None else item.name


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Measurement:
    """Record metrics, samples and images of this test (see `debug.plugin.measurement` for the API)."""
    item = request.node
    measurement = Measurement(item.name, item.nodeid, _family_of_item(item), request)
    case = getattr(getattr(item, "callspec", None), "params", {}).get("debug_case")
    if isinstance(case, Case):
        measurement.info(**case.describe())
    # Which process measured the case: shows that xdist kept each model's cases on one worker.
    measurement.info(worker=os.environ.get("PYTEST_XDIST_WORKER", "main"))
    item.stash[MEASUREMENT_KEY] = measurement
    return measurement


@pytest.fixture(scope="session")
def debug_backend(pytestconfig: pytest.Config) -> Any:
    """The session's model loader and scorer (`debug.plugin.evaluate.Backend`); override to swap it."""
    return Backend(get_options(pytestconfig))


@pytest.fixture
def debug_model(debug_case: Case, debug_backend: Any) -> Any:
    """The loaded model of this eval case; loads once per process. A load failure errors this case only."""
    return debug_backend.load(debug_case.model)


def record_for_report(item: pytest.Item) -> dict[str, Any] | None:
    """The measurement record of an item (None when it has none), with case facts for eval cases."""
    measurement = item.stash.get(MEASUREMENT_KEY, None)
    case = getattr(getattr(item, "callspec", None), "params", {}).get("debug_case")
    if measurement is None and not isinstance(case, Case):
        return None
    if measurement is None:
        measurement = Measurement(item.name, item.nodeid, _family_of_item(item))
        measurement.info(**case.describe())
    return measurement.to_record()  # already plain JSON: every recorded value went through `jsonable`
