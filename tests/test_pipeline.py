"""Micro-batch pipeline schedules: bubbles, steady state, and who wins when."""

from __future__ import annotations

import numpy as np
import pytest

from sim.arith.ops import Work
from sim.cost.stage import StageCost
from sim.engine.pipeline import SCHEDULES, split_work
from sim.engine.replica import Replica
from sim.plan.layers import balance_layers
from sim.results.run import simulate
from tests.scenarios_for_tests import make

BASE = {
    "name": "pipe",
    "cluster": "dgx-a100",
    "model": "llama-2-13b",
    "parallel": {"tp": 1, "pp": 4, "layers_per_stage": [10, 10, 10, 10]},
    "scheduler": {"policy": "static", "batch_size": 64, "padding": "packed", "max_wait": 0},
    "workload": {
        "requests": 64,
        "arrival": {"process": "burst"},
        "prompt": {"dist": "fixed", "value": 64},
        "output": {"dist": "fixed", "value": 32},
    },
}


def scenario(**changes):
    return make(BASE, **changes)


@pytest.fixture
def constant_stages(monkeypatch):
    """Every stage takes 1 ms per micro-batch and activations cost nothing to send:
    balanced stages, equal micro-batches, no communication."""
    monkeypatch.setattr(StageCost, "time", lambda self, work, logits: 1e-3)
    original = Replica.__init__

    def no_sends(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.act_bytes_per_token = 0.0

    monkeypatch.setattr(Replica, "__init__", no_sends)


@pytest.mark.parametrize(("p", "m"), [(4, 1), (4, 4), (4, 8), (2, 8), (8, 8)])
def test_fill_drain_bubble_is_exact(constant_stages, p, m):
    s = scenario(
        parallel={
            "tp": 1,
            "pp": p,
            "layers_per_stage": [40 // p] * p,
            "pipeline": {"schedule": "fill-drain", "microbatches": m},
        }
    )
    res = simulate(s)
    assert res.summary.bubble_fraction == pytest.approx((p - 1) / (m + p - 1), abs=1e-9)
    spans = res.stages
    assert len(spans) == p * m * res.summary.iterations


def test_continuous_has_no_bubble_at_steady_state(constant_stages):
    s = scenario(
        parallel={
            "tp": 1,
            "pp": 4,
            "layers_per_stage": [10] * 4,
            "pipeline": {"schedule": "continuous", "microbatches": 4},
        },
        scheduler={"policy": "vllm", "max_num_seqs": 64},
        workload__requests=256,
        workload__output={"dist": "fixed", "value": 64},
    )
    res = simulate(s)
    spans = res.stages
    end = spans["end_s"].max()
    lo, hi = 0.2 * end, 0.6 * end
    for stage, g in spans.groupby("stage"):
        busy = (np.minimum(g["end_s"], hi) - np.maximum(g["start_s"], lo)).clip(lower=0).sum()
        assert busy / (hi - lo) > 0.999, stage
    # Over the whole run, only the fill at the start and the drain at the end are idle.
    assert res.summary.bubble_fraction < 0.02


def test_hybrid_beats_fill_drain_for_small_decode_batches_on_many_stages():
    """The DeepSpeed-Inference setting: many stages, small decode batches."""
    common = {
        "scheduler": {"policy": "vllm", "max_num_seqs": 32},
        "workload__requests": 32,
        "workload__output": {"dist": "fixed", "value": 128},
    }
    par = {"tp": 1, "pp": 8}
    fill = simulate(
        scenario(
            parallel={**par, "pipeline": {"schedule": "fill-drain", "microbatches": 8}}, **common
        )
    )
    hybrid = simulate(
        scenario(
            parallel={**par, "pipeline": {"schedule": "hybrid", "decode_microbatches": 8}}, **common
        )
    )
    assert hybrid.summary.output_tokens_per_s > 1.3 * fill.summary.output_tokens_per_s
    assert hybrid.summary.bubble_fraction < fill.summary.bubble_fraction


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_every_schedule_conserves_tokens_with_real_costs(schedule):
    s = scenario(
        parallel={"tp": 2, "pp": 2, "pipeline": {"schedule": schedule}},
        scheduler={"policy": "vllm"},
        workload__requests=40,
        workload__arrival={"process": "poisson", "rate": 10.0},
    )
    res = simulate(s)
    done = res.requests[res.requests["status"] == "finished"]
    assert len(done) == 40
    assert int(res.iterations["tokens_out"].sum()) == int(done["output_tokens"].sum())
    starts = res.stages.sort_values(["stage", "start_s"])
    for _, g in starts.groupby(["replica", "stage"]):  # a stage runs one thing at a time
        assert (g["start_s"].to_numpy()[1:] >= g["end_s"].to_numpy()[:-1] - 1e-12).all()


def test_split_work_shares_everything():
    w = Work(
        tokens=103,
        prefill_tokens=100,
        prefill_pairs=5050.0,
        prefill_kv_tokens=100,
        decode_seqs=3,
        decode_kv_tokens=3000,
    )
    parts = split_work(w, 4, 4)
    assert sum(p.work.tokens for p in parts) == 103
    assert sum(p.work.decode_seqs for p in parts) == 3
    assert sum(p.work.prefill_pairs for p in parts) == pytest.approx(5050.0)
    assert sum(p.logits for p in parts) == 4
    assert (
        max(p.work.prefill_tokens for p in parts) - min(p.work.prefill_tokens for p in parts) <= 1
    )


def test_balanced_split_gives_the_lm_head_stage_fewer_layers():
    assert balance_layers(80, 4, per_layer=1.0, first=0.0, last=0.0) == [20, 20, 20, 20]
    split = balance_layers(80, 4, per_layer=1.0, first=1.0, last=6.0)
    assert sum(split) == 80 and split[-1] < split[1]
    costs = [n + (1.0 if i == 0 else 0) + (6.0 if i == 3 else 0) for i, n in enumerate(split)]
    assert max(costs) - min(costs) <= 1.0
    s = scenario(parallel={"tp": 1, "pp": 4, "pipeline": {"layer_split": "balanced"}})
    assert sum(s.parallel.layers_per_stage or ()) in (0, 40)


def test_unknown_schedule_lists_valid_ones():
    with pytest.raises(Exception, match="unknown schedule 'gpipe'; valid schedules: continuous"):
        scenario(parallel={"tp": 1, "pp": 2, "pipeline": {"schedule": "gpipe"}})


def test_several_engines_share_one_stage_without_overlap():
    """A one-stage replica with several request groups: they take turns on the device."""
    s = scenario(
        parallel={"tp": 1, "pp": 1, "pipeline": {"schedule": "continuous", "microbatches": 4}},
        scheduler={"policy": "vllm"},
        workload__requests=60,
        workload__arrival={"process": "poisson", "rate": 20.0},
    )
    res = simulate(s)
    assert res.summary.device_utilization <= 1 + 1e-9
    spans = res.stages.sort_values("start_s")
    assert (spans["start_s"].to_numpy()[1:] >= spans["end_s"].to_numpy()[:-1] - 1e-12).all()
