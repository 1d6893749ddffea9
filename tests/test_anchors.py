"""Each shipped scenario's golden summary, held to figures computed without the engine.

The golden files guard against regressions by comparing the code with its own earlier
output; these anchors keep them honest. For every scenario:

- no latency beats physics: the median TTFT is at least `analyze`'s prefill floor for
  the median prompt and the median TPOT at least its decode floor (ideal roofline:
  peak FLOP/s and bandwidth from the datasheet, FLOPs and bytes from the seeds'
  closed forms; a request's TTFT and TPOT are each at least the floor of its own work,
  and the floor grows with the prompt, so the medians keep the inequality; with prefix
  caching, a prompt's work is at least its tokens outside its prefix's full blocks);
- no replica serves faster than requests arrive: throughput is at most the requests
  over the span of their arrivals (drawn by the workload alone);
- the memory a device holds is at least its share of the weights (the seeds' parameter
  count × bytes over tp × pp; with offloading, the share placed on the GPU) and at most
  the device's memory.

Where a published measurement of the same setup exists, the golden is held to it as
well, with the tolerance the fidelity suite reports for that kind of figure.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sim.arith.params import total_params
from sim.arith.precision import Precision
from sim.plan import load_scenario
from sim.plan.analyze import analyze
from sim.workload.arrivals import generate

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted((ROOT / "scenarios").glob("*.yaml"))


def golden(name: str) -> dict:
    return json.loads((ROOT / "tests" / "golden" / f"{name}.json").read_text())


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_golden_keeps_to_physical_bounds(path):
    s = load_scenario(path)
    g = golden(path.stem)
    arrivals = generate(s.workload, s.seed, s.base_dir)
    prompts = arrivals.prompt_tokens
    params = s.scheduler.policy_params()
    if params.prefix_caching and arrivals.prefix_tokens is not None:
        # A cached prefix is not computed: a request's floor is that of its prompt less
        # the most the cache can hold of it (its prefix's full blocks).
        bs = params.block_size
        prompts = prompts - (arrivals.prefix_tokens // bs) * bs
    prompt = int(np.median(prompts))
    par = s.parallel
    tp, pp = par.tp, par.pp
    if s.disaggregation is not None:  # the pools' own splits; the decode pool decodes
        tp, pp = s.disaggregation.decode.tp, s.disaggregation.decode.pp
    precision = Precision.of(s.precision)
    cluster = (
        s.cluster
        if s.disaggregation is None or s.disaggregation.decode.cluster is None
        else s.disaggregation.decode.cluster
    )
    floors = analyze(
        s.model,
        cluster,
        tp=tp,
        pp=pp,
        tp_layout=par.tp_layout,
        attention=par.attention,
        batch=1,
        prompt=prompt,
        output=2,
        dtype=precision.weights,
        kv_dtype=precision.kv,
        activation_dtype=precision.activations,
    )
    assert g["ttft_s"]["p50"] >= floors.prefill_latency_floor_s
    if g["tpot_s"]["p50"] is not None:
        # speculation verifies up to k + 1 tokens per read of the weights
        per_read = 1 if s.speculative is None else s.speculative.k + 1
        assert g["tpot_s"]["p50"] >= floors.decode_latency_floor_s / per_read
    span = float(arrivals.arrival_s.max() - arrivals.arrival_s.min())
    if span > 0:
        assert g["throughput_rps"] <= len(arrivals) / span * (1 + 1e-9)
    # every weight is somewhere: a device holds at least its share over all the devices
    # of a replica (attention ranks replicate the dense weights, so more there)
    devices = tp * pp * (par.dp_attention if s.disaggregation is None else 1)
    weights = total_params(s.model) * precision.w_bytes / devices
    if s.offload is not None:  # only the GPU's share of the weights stays on the GPU
        weights *= s.offload.weights[0]
    device = floors.memory_bytes_per_device
    assert 0.95 * weights <= g["memory_bytes_per_device_peak"] <= device


# Published measurements of the shipped setups themselves (each in the fidelity suite's
# data with its source, sim/fidelity/measurements.yaml, or the scenario's comments).


def test_palm_2d_layout_decodes_at_popes_figure():
    """Pope et al. 2022 (seed 002; the scenario's comment): PaLM 540B on 64 TPU v4 chips,
    2D weight-stationary, batch 64, generates at about 29 ms per token."""
    g = golden("palm-540b-tpu-v4-layouts")
    s = load_scenario(ROOT / "scenarios" / "palm-540b-tpu-v4-layouts.yaml")
    assert s.parallel.tp_layout == "2d-weight-stationary"
    assert g["tpot_s"]["p50"] == pytest.approx(0.029, rel=0.10)


def test_flexgen_opt175b_generates_at_flexgens_figure():
    """FlexGen (Sheng et al. 2023, its README's batch_size_table): OPT-175B on one T4 with
    offloading, prompt 512, 32 generated tokens: 0.69 tokens/s."""
    g = golden("opt-175b-t4-flexgen")
    assert g["output_tokens_per_s"] == pytest.approx(0.69, rel=0.10)
