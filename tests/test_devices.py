"""One GPU per worker, device lists, memory budgets and where a model ran, with the GPUs faked (none here)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from debug import models
from debug.plugin.evaluate import Backend
from debug.plugin.options import DebugOptions


def _fake_gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    # Under `pytest -n` this test runs on a worker gwK; the placement under test must not see that.
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_workers_take_the_visible_gpus_in_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpus(monkeypatch, 3)
    assert models.visible_devices() == ["cuda:0", "cuda:1", "cuda:2"]
    placed = [models.worker_device(f"gw{k}") for k in range(5)]
    assert placed == ["cuda:0", "cuda:1", "cuda:2", "cuda:0", "cuda:1"]
    assert models.worker_device("main") == models.worker_device(None) == "cuda:0"  # outside xdist: worker 0
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw2")
    assert models.worker_device() == "cuda:2"


def test_an_explicit_device_list_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpus(monkeypatch, 4)
    devices = models.parse_devices("cuda:3, cuda:1")
    assert devices == ("cuda:3", "cuda:1")
    assert [models.worker_device(f"gw{k}", devices) for k in range(3)] == ["cuda:3", "cuda:1", "cuda:3"]
    for bad in ("gpu0", "cuda:", "cuda:0,,tpu", " , "):
        with pytest.raises(ValueError, match="--devices takes comma-separated devices") as info:
            models.parse_devices(bad)
        assert "\n" not in str(info.value)


def test_without_gpus_workers_use_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpus(monkeypatch, 0)
    assert models.visible_devices() == []
    assert models.worker_device("gw1") == "auto"
    assert models.worker_device("gw1", ("cpu",)) == "cpu"


def test_a_gpu_past_the_visible_ones_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_gpus(monkeypatch, 2)
    assert models.resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match=r"torch sees 2 GPU\(s\) \(cuda:0..cuda:1\)") as info:
        models.resolve_device("cuda:2")
    assert "\n" not in str(info.value)


def test_memory_budgets_parse_for_device_map_auto() -> None:
    assert models.parse_max_memory("0=20GiB, 1=20GiB,cpu=64GiB") == {0: "20GiB", 1: "20GiB", "cpu": "64GiB"}
    assert models.parse_max_memory({0: "500MB"}) == {0: "500MB"}
    for bad in ("20GiB", "0=lots", "gpu=2GiB", "0=20 parsecs", ""):
        with pytest.raises(ValueError, match="--max-memory takes DEVICE=SIZE pairs") as info:
            models.parse_max_memory(bad)
        assert "\n" not in str(info.value)


def test_placement_names_every_device_of_a_split_model() -> None:
    split = models.LoadedModel(
        SimpleNamespace(hf_device_map={"embed": 0, "layers.0": 1, "head": "cpu"}), None, "m", "f"
    )
    assert split.placement == "cuda:0,cuda:1,cpu"
    assert models.placement(object()) is None


def _options(tmp_path: Path, **kw: Any) -> DebugOptions:
    return DebugOptions(
        models=("m",),
        num_seqs=1,
        seq_lens=None,
        seed=0,
        report_dir=tmp_path,
        baseline=None,
        compare_fail=None,
        gates=(),
        no_cache=True,
        cache_dir=tmp_path,
        batch_size=None,
        max_new_tokens=None,
        **kw,
    )


def test_the_backend_places_each_worker_on_its_own_gpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _fake_gpus(monkeypatch, 2)
    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(models, "load", lambda model_id, **kw: calls.append((model_id, kw)) or model_id)
    for worker in ("gw0", "gw1", "gw2"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        Backend(_options(tmp_path)).load("m")
    assert [kw for _, kw in calls] == [{"device": "cuda:0"}, {"device": "cuda:1"}, {"device": "cuda:0"}]
    calls.clear()
    Backend(_options(tmp_path, devices=("cuda:1",))).load("m")
    Backend(_options(tmp_path, max_memory={0: "20GiB", 1: "20GiB"})).load("m")
    assert [kw for _, kw in calls] == [
        {"device": "cuda:1"},
        {"device_map": "auto", "max_memory": {0: "20GiB", 1: "20GiB"}},
    ]
