"""DAS: the interchange intervention against plain-torch hooks, the full-space limit, training, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from debug.causal.architectures import get_path, resolve_architecture
from debug.causal.das import _permuted_labels, _random_basis, das, das_by_layer, plot_das
from debug.causal.forward import hidden_arg, with_hidden_arg
from debug.causal.inputs import CausalTracingError
from debug.models import LoadedModel
from debug.programs import Program


def _pairs(n: int) -> list[tuple[Program, Program]]:
    out = []
    for i in range(n):
        o, c, d = i % 10, (i + 3) % 10, (i + 7) % 10
        text = "a={}\nb=a\nc=" + str(d) + "\n#b:"
        out.append(
            (Program(text.format(o), o, {"answer_var": "b"}), Program(text.format(c), c, {"answer_var": "b"}))
        )
    return out


def _reference(loaded: LoadedModel, pair, layer: int, pos: int, basis: torch.Tensor | None) -> torch.Tensor:
    """Capture h_orig and h_cf with hooks, set h_orig + B^T B (h_cf - h_orig) in one more forward."""
    model, tok = loaded.model, loaded.tokenizer
    arch = resolve_architecture(model)
    module = get_path(model, arch.spec.final_norm if layer == arch.num_layers else arch.layer_path(layer))
    acts = []

    def grab(m, args, kwargs):
        acts.append(hidden_arg(args, kwargs)[0, pos].clone())

    ids = [torch.tensor([tok(p.text)["input_ids"]]) for p in pair]
    handle = module.register_forward_pre_hook(grab, with_kwargs=True)
    with torch.no_grad():
        for x in ids:
            model(input_ids=x)
    handle.remove()
    h_o, h_c = acts
    new = h_c if basis is None else h_o + basis.T @ (basis @ (h_c - h_o))

    def put(m, args, kwargs):
        hidden = hidden_arg(args, kwargs).clone()
        hidden[0, pos] = new
        return with_hidden_arg(args, kwargs, hidden)

    handle = module.register_forward_pre_hook(put, with_kwargs=True)
    with torch.no_grad():
        logits = model(input_ids=ids[0]).logits[0, -1].float()
    handle.remove()
    return logits


def _test_metrics(loaded, pairs, rows, layer, pos, basis) -> dict[str, float]:
    tok = loaded.tokenizer
    iia, ld = [], []
    for i in rows:
        o, c = pairs[i]
        o_id, c_id = (tok(str(p.answer), add_special_tokens=False)["input_ids"][0] for p in (o, c))
        logits = _reference(loaded, (o, c), layer, pos, basis)
        iia.append(int(logits.argmax()) == c_id)
        ld.append(float(logits[c_id] - logits[o_id]))
    return {"iia": float(np.mean(iia)), "logit_diff": float(np.mean(ld))}


def test_das_references_equal_the_hook_reference(loaded: LoadedModel) -> None:
    pairs = _pairs(8)
    result = das(loaded, pairs, 1, "ref depth 1", 2, steps=5, seed=3)
    pos = 2  # "ref depth 1": the constant of line 1
    assert result.positions == [pos] * 8 and result.n_train == 6 and result.n_test == 2
    test_rows = [i for i in range(8) if i not in _train_rows(result, 8)]
    basis = torch.from_numpy(result.basis)
    assert torch.allclose(basis @ basis.T, torch.eye(2), atol=1e-5)  # orthonormal rows
    for key, b in (
        ("das", basis),
        ("random_subspace", _random_basis(resolve_architecture(loaded.model).hidden_size, 2, 3)),
        ("full_vector", None),
    ):
        expected = _test_metrics(loaded, pairs, test_rows, 1, pos, b)
        assert result.metrics[key]["iia"] == pytest.approx(expected["iia"])
        assert result.metrics[key]["logit_diff"] == pytest.approx(expected["logit_diff"], abs=1e-4)
    assert result.to_dict()["method"] == "das" and "W^T W" in result.definitions["intervention"]


def _train_rows(result, n: int) -> set[int]:
    from debug.causal.das import _split

    train, _ = _split(n, result.n_test, 3)
    return set(train.tolist())


def test_full_dimension_equals_full_vector_and_training_lowers_the_loss(loaded: LoadedModel) -> None:
    pairs = _pairs(6)
    hidden = resolve_architecture(loaded.model).hidden_size
    full = das(loaded, pairs, 1, "ref depth 1", hidden, steps=2)
    for metric in ("iia", "logit_diff", "prob_cf"):
        assert full.metrics["das"][metric] == pytest.approx(full.metrics["full_vector"][metric], abs=1e-4)
    trained = das(loaded, pairs, 2, "final", 1, steps=60, lr=0.05)
    assert trained.losses[-1] < trained.losses[0]
    assert trained.layer == 2 and trained.num_layers == 2  # the final residual
    results = das_by_layer(loaded, pairs, [0, 1], "final", 1, steps=1)
    assert [r.layer for r in results] == [0, 1] and len(plot_das(results).axes) == 1


def test_das_bad_input_fails_before_any_forward(loaded: LoadedModel, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_forward(*args, **kwargs):
        raise AssertionError("a forward ran")

    monkeypatch.setattr(loaded.model, "forward", no_forward)
    hidden = resolve_architecture(loaded.model).hidden_size
    pairs = _pairs(4)
    with pytest.raises(CausalTracingError, match=rf"dim {hidden + 1}: .*1\.\.{hidden}"):
        das(loaded, pairs, 1, "final", hidden + 1)
    with pytest.raises(CausalTracingError, match="at least 2 pairs for a held-out split"):
        das(loaded, pairs[:1], 1, "final", 2)
    with pytest.raises(CausalTracingError, match=r"layer 3: choose a layer in 0\.\.2"):
        das(loaded, pairs, 3, "final", 2)
    with pytest.raises(CausalTracingError, match="outside the prompt"):
        das(loaded, pairs, 1, 99, 2)
    long = (Program("a=12\nb=a\n#b:", 12), Program("a=34\nb=a\n#b:", 34))
    with pytest.raises(CausalTracingError, match="same token length"):
        das(loaded, pairs + [long], 1, "final", 2)
    same_cf = [(o, pairs[0][1]) for o, _ in pairs[1:3]]  # originals 1, 2; both counterfactual answers 3
    with pytest.raises(CausalTracingError, match="label_control permutes the counterfactual answers"):
        das(loaded, same_cf, 1, "final", 2, label_control=True)


def test_permuted_labels_map_every_answer_to_another_one() -> None:
    labels = torch.tensor([5, 5, 7, 9, 2, 7])
    permuted = _permuted_labels(labels, seed=3)
    mapping = dict(zip(labels.tolist(), permuted.tolist()))
    assert all(a != b for a, b in mapping.items())  # no fixed points
    assert sorted(mapping.values()) == sorted(mapping)  # a permutation of the same answers
    assert [mapping[v] for v in labels.tolist()] == permuted.tolist()  # one mapping for every pair
    assert torch.equal(_permuted_labels(labels, seed=3), permuted)


def test_the_label_control_leaves_the_fit_unchanged(loaded: LoadedModel) -> None:
    pairs = _pairs(8)
    plain = das(loaded, pairs, 1, "final", 2, steps=3, lr=0.05)
    controlled = das(loaded, pairs, 1, "final", 2, steps=3, lr=0.05, label_control=True)
    assert controlled.metrics["das"] == plain.metrics["das"] and controlled.losses == plain.losses
    control = controlled.metrics["permuted_labels"]
    assert set(control) == {"iia_train", "iia"} and all(0 <= v <= 1 for v in control.values())
    assert "permuted_labels" not in plain.metrics and "permuted" in controlled.definitions["references"]


def test_debug_patch_method_das_saves_json_and_picture(tiny_qwen3_dir: Path, tmp_path: Path, capsys) -> None:
    import json

    from debug.causal.cli import main_patch

    argv = ["--method", "das", "--model", str(tiny_qwen3_dir), "--num-hops", "2", "--seq-len", "6"]
    assert (
        main_patch(argv + ["--num-pairs", "3", "--steps", "2", "--dim", "2", "--results-dir", str(tmp_path)])
        == 0
    )
    out = capsys.readouterr().out
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("das-") and str(folder) in out
    assert json.loads((folder / "das.json").read_text())["model"] == str(tiny_qwen3_dir)
    assert (folder / "das.png").stat().st_size > 0
