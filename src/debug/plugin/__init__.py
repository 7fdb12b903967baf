"""The `debug` pytest plugin: its public API for eval modules.

An eval module declares `TASKS = [Task(...), ...]`; the plugin turns each (model, task, seq_len) into a `Case`
and hands the test a `Measurement` through the `measure` fixture. The hooks themselves live in
`debug.plugin.hooks` (the `pytest11` entry point); see it for how the plugin is split by role.
"""

from __future__ import annotations

from debug.plugin.cases import Case, Task
from debug.plugin.measurement import Measurement

__all__ = ["Case", "Measurement", "Task"]
