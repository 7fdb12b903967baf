"""xdist scheduling that keeps every case of one model on one worker, so each model loads once per run.

pytest-xdist's own `loadgroup` tags node ids with the group name, which pytest 9 no longer allows (node ids
are read-only there), so under pytest 9 the `xdist_group` marks the plugin still sets have no effect.
Instead this
scheduler is `loadscope` with one scope per model: an eval case's node id ends in
`[MODEL_LABEL-TASK-SEQ_LEN]`, and any other test is its own scope, which distributes like `load`.
"""

from __future__ import annotations

from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling


class ModelScheduling(LoadScopeScheduling):
    """`loadscope` whose scope of an eval case is its model (see the module docstring)."""

    def __init__(self, config: pytest.Config, log: Any = None, labels: list[str] | None = None) -> None:
        super().__init__(config, log)
        # Longest first, so a label that prefixes another ("m" and "m-large") cannot steal its cases.
        self.labels = sorted(labels or [], key=len, reverse=True)

    def _split_scope(self, nodeid: str) -> str:
        _, bracket, param = nodeid.partition("[")
        if bracket:
            for label in self.labels:
                if param.startswith(f"{label}-"):
                    return f"debug-model:{label}"
        return nodeid

    def remove_node(self, node: Any) -> str | None:
        """Like `loadscope`, but the test that crashed a worker is not handed to the next worker.

        `loadscope` puts the crashed test back with the rest of its scope, so a test that kills its worker
        kills every replacement too; here it is reported once (xdist marks it failed) and the rest of the
        model's cases run on another worker.
        """
        workload = self.assigned_work.pop(node)
        if not self._pending_of(workload):
            return None
        crashitem = next(nodeid for unit in workload.values() for nodeid, done in unit.items() if not done)
        for unit in workload.values():
            if crashitem in unit:
                unit[crashitem] = True
        self.workqueue.update({scope: unit for scope, unit in workload.items() if not all(unit.values())})
        for other in self.assigned_work:
            self._reschedule(other)
        return crashitem
