"""Transformers' tensor parallelism (`tp_plan="auto"`) under torchrun, two CPU processes over gloo.

What docs/serving.md says of models larger than one GPU, run for real: the embedded binder sharded over two
ranks answers exactly as one process does, and a patching sweep of the sharded model is refused in one line
before any trace (nnsight cannot trace it in this version pairing; the refusal names the way round).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

WORKER = textwrap.dedent(
    """
    import os

    from debug.causal import sweep
    from debug.causal.inputs import CausalTracingError
    from debug.counterfactual import create_counterfactual
    from debug.generators import make_variable_binding_program
    from debug.models import load
    from debug.scoring import score_programs

    rank = int(os.environ["RANK"])
    programs = [make_variable_binding_program(8, seed) for seed in range(8)]
    sharded = load("embedded:binder", device="cpu", tp_plan="auto")
    assert sharded.model.tp_size == 2, sharded.model.tp_size
    answers = [s.predicted_answer for s in score_programs(sharded, programs, "{code}")]
    if rank == 0:
        whole = load("embedded:binder", device="cpu")
        expected = [s.predicted_answer for s in score_programs(whole, programs, "{code}")]
        print("ANSWERS", answers == expected, answers)
    counterfactual = create_counterfactual(programs[0], 0, sharded.tokenizer)
    try:
        sweep(sharded, programs[0], counterfactual, layers=[0])
    except CausalTracingError as error:
        if rank == 0:
            print("REFUSED", str(error))
    """
)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without torch.distributed")
def test_sharded_binder_answers_like_one_process_and_patching_is_refused(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517"]
    run = subprocess.run(
        [*torchrun, str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    answers = [line for line in run.stdout.splitlines() if line.startswith("ANSWERS")]
    assert answers and answers[0].startswith("ANSWERS True"), run.stdout
    refused = [line for line in run.stdout.splitlines() if line.startswith("REFUSED")]
    assert refused, run.stdout
    assert "tensor-parallel" in refused[0] and 'device_map="auto"' in refused[0]
