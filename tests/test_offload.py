"""Offloading (sim.spec.offload, sim.engine.offload) and FlexGen's policy search
(sim.studies.offload_search, `llmsim offload-search`): placements stay within every tier, the
degenerate cases reduce to the plain simulation, slower links never help, and the LP's
policy is as good as any hand-enumerated one in the simulator."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sim.arith.memory import embedding_weight_elems, layer_weight_elems
from sim.arith.ops import Work, layer_plan
from sim.arith.precision import Precision
from sim.cli.main import main
from sim.cost.offload import (
    StepPricer,
    decompress_bytes_per_value,
    host_attention_bytes_per_value,
    host_attention_seconds,
    host_stream_bytes_per_s,
    pinned_copy_bytes_per_s,
    tier_bytes,
)
from sim.cost.roofline import RooflineKernel, floor_time
from sim.cost.topology import build_cluster
from sim.errors import LlmsimError
from sim.fidelity.validate import validate
from sim.plan import load_scenario
from sim.plan.offload import check_capacity, offload_machine
from sim.results.run import simulate
from sim.spec import catalog
from sim.spec.offload import TENSORS, TIERS, OffloadSpec
from sim.spec.scenario import Scenario
from sim.studies.offload_search import OffloadModel, search

PROMPT, OUTPUT = 64, 4


def scenario(
    offload: dict[str, Any] | None = None,
    *,
    block: int = 8,
    layers: int | None = None,
    node: dict[str, float] | None = None,
    prompt: int = PROMPT,
    output: int = OUTPUT,
) -> Scenario:
    """OPT-13B (fp16) on t4-flexgen, one static block of `block` requests at once; `node`
    changes figures of an inline copy of the t4-flexgen node ("host.dram": bytes, ...)."""
    if offload is not None:
        block = offload.get("gpu_batch_size", 1) * offload.get("gpu_batches", 1)
    data: dict[str, Any] = {
        "name": "t",
        "cluster": "t4-flexgen",
        "model": "opt-13b",
        "precision": {"weights": "fp16", "activations": "fp16"},
        "scheduler": {"policy": "static", "batch_size": block, "max_wait": 0},
        "workload": {
            "requests": block,
            "arrival": {"process": "burst"},
            "prompt": {"dist": "fixed", "value": prompt},
            "output": {"dist": "fixed", "value": output},
        },
        "output": {"records": False},
    }
    if offload is not None:
        data["offload"] = offload
    s = load_scenario(data, [f"model.n_layers={layers}"] if layers else [])
    if node:
        data = s.resolved_dict()
        for path, value in node.items():
            where = data["cluster"]["node"]
            *parents, last = path.split(".")
            for p in parents:
                where = where[p]
            where[last] = value
        s = load_scenario(data)
    return s


def placement(rng: np.random.Generator, gbs: int = 4, batches: int = 2) -> dict[str, Any]:
    out: dict[str, Any] = {
        t: [float(v) for v in np.round(rng.dirichlet([0.7] * 3), 3)] for t in TENSORS
    }
    for t in TENSORS:  # exact sums after rounding
        out[t][2] = round(1.0 - out[t][0] - out[t][1], 6)
        if out[t][2] < 0:
            out[t] = [out[t][0], 1.0 - out[t][0], 0.0]
    out.update(gpu_batch_size=gbs, gpu_batches=batches, cpu_attention=bool(rng.integers(2)))
    return out


def needs(s: Scenario) -> dict[str, float]:
    assert s.offload is not None
    return {
        t: lin.at(s.offload.values())
        for t, lin in tier_bytes(
            s.model, Precision.of(s.precision), s.offload, PROMPT, OUTPUT
        ).items()
    }


def capacities(s: Scenario) -> dict[str, float]:
    cluster = build_cluster(s.cluster)
    machine = offload_machine(cluster)
    gpu = cluster.device.memory_bytes * s.scheduler.policy_params().gpu_memory_utilization
    return {"gpu": gpu, "cpu": machine.cpu_bytes, "disk": machine.disk_bytes}


def sim_s(s: Scenario) -> float:
    return float(simulate(s).summary.sim_time_s)


# ------------------------------------------------------------------ capacities

SMALL_HOST = {"host.dram": 16e9, "host.disk.capacity": 20e9}


def test_random_placements_fit_or_are_rejected_naming_the_tier():
    rng = np.random.default_rng(3)
    fitted = rejected = 0
    for _ in range(40):
        s = scenario(placement(rng), node=SMALL_HOST)
        need, have = needs(s), capacities(s)
        short = [t for t in TIERS if need[t] > have[t] + 1]
        if short:
            with pytest.raises(LlmsimError, match=f"the {short[0]} tier is short"):
                simulate(s)
            rejected += 1
            continue
        assert s.offload is not None
        checked = check_capacity(
            s.model,
            Precision.of(s.precision),
            s.offload,
            offload_machine(build_cluster(s.cluster)),
            PROMPT,
            OUTPUT,
            have["gpu"],
        )
        assert all(checked[t] <= have[t] for t in TIERS)
        assert simulate(s).summary.finished == s.offload.block
        fitted += 1
    assert fitted >= 5 and rejected >= 5  # both sides were exercised


@pytest.mark.parametrize(
    ("offload", "node", "tier"),
    [
        ({"weights": [1, 0, 0]}, None, "gpu"),
        ({"weights": [0, 1, 0]}, {"host.dram": 8e9}, "cpu"),
        ({"weights": [0, 0, 1]}, {"host.disk.capacity": 8e9}, "disk"),
    ],
)
def test_over_capacity_placement_is_rejected_naming_the_tier(offload, node, tier):
    s = scenario({**offload, "gpu_batch_size": 4, "gpu_batches": 2}, node=node)
    with pytest.raises(LlmsimError, match=f"offload: the {tier} tier is short"):
        simulate(s)


def test_search_policies_fit_every_tier_and_match_the_simulator():
    s = scenario(node=SMALL_HOST)
    result = search(s, max_block=16, top=6)
    cap = capacities(s)
    assert result.policies
    for p in result.policies:
        assert all(p.tier_bytes[t] <= cap[t] for t in TIERS)
        assert p.simulated_s is not None
        assert p.simulated_s == pytest.approx(p.seconds, rel=1e-9)
    scores = [p.throughput for p in result.policies]
    assert scores == sorted(scores, reverse=True)


# ------------------------------------------------------------------ degenerate cases


def test_all_on_gpu_equals_the_plain_simulation():
    gpu = {t: [1, 0, 0] for t in TENSORS}
    off = simulate(scenario({**gpu, "gpu_batch_size": 8, "gpu_batches": 1}, layers=4))
    plain = simulate(scenario(block=8, layers=4))
    a = off.requests.sort_values("request")
    b = plain.requests.sort_values("request")
    for col in ("first_token_s", "finish_s"):
        np.testing.assert_allclose(a[col].to_numpy(), b[col].to_numpy(), rtol=1e-9, atol=0)


FREE_LINKS = {
    "pcie.bandwidth": 1e18,
    "host.disk.read_bandwidth": 1e18,
    "host.disk.write_bandwidth": 1e18,
}


def test_offloading_over_free_links_costs_nothing():
    shape = {"gpu_batch_size": 4, "gpu_batches": 2, "cpu_attention": False}
    on_gpu = sim_s(scenario({**shape}, layers=4, node=FREE_LINKS))
    spread = {"weights": [0.2, 0.3, 0.5], "kv": [0, 0.5, 0.5], "activations": [0, 0, 1]}
    offloaded = sim_s(scenario({**spread, **shape}, layers=4, node=FREE_LINKS))
    assert offloaded == pytest.approx(on_gpu, rel=1e-6)
    # ... and on the real links it does cost something.
    assert sim_s(scenario({**spread, **shape}, layers=4)) > 1.5 * on_gpu


def test_a_slower_disk_never_makes_a_policy_faster():
    rng = np.random.default_rng(7)
    for _ in range(8):
        off = placement(rng)
        base = scenario(off)
        if any(needs(base)[t] > capacities(base)[t] for t in TIERS):
            continue
        fast = sim_s(base)
        slow_read = sim_s(scenario(off, node={"host.disk.read_bandwidth": 1e9}))
        slow_both = sim_s(
            scenario(off, node={"host.disk.read_bandwidth": 1e9, "host.disk.write_bandwidth": 5e8})
        )
        assert fast <= slow_read <= slow_both
        if off["weights"][2] > 0.05:
            assert slow_read > fast


# ------------------------------------------------------------------ the search


def _grid_options(step: float) -> list[tuple[float, float, float]]:
    n = round(1 / step)
    return [
        (i * step, j * step, (n - i - j) * step) for i in range(n + 1) for j in range(n + 1 - i)
    ]


def test_search_beats_every_hand_enumerated_policy_in_the_simulator():
    node = {"host.dram": 8e9}  # 26 GB of weights: some must reach the disk
    best = search(scenario(node=node), gpu_batch_sizes=(4, 8), gpu_batches=(1, 2), top=1).best
    assert best.tier_bytes["disk"] > 0 and best.simulated_s is not None
    best_tps = best.block * OUTPUT / best.simulated_s
    template = scenario({"gpu_batch_size": 4, "gpu_batches": 2}, node=node)
    cap = capacities(template)
    om = OffloadModel(template)
    halves = _grid_options(0.5)
    tried = 0
    # A subset of the searched space: halves of weights and KV, activations whole on the
    # GPU or the CPU, two of the block shapes, CPU attention off and on.
    for (gbs, nb), cpu, w, kv, act in itertools.product(
        ((4, 2), (8, 1)), (False, True), halves, halves, ((1, 0, 0), (0, 1, 0))
    ):
        spec = OffloadSpec(
            weights=w, kv=kv, activations=act, gpu_batch_size=gbs, gpu_batches=nb, cpu_attention=cpu
        )
        tiers = om.tiers(spec, PROMPT, OUTPUT)
        if any(tiers[t].at(spec.values()) > cap[t] for t in TIERS):
            continue
        s = template.model_copy(update={"offload": spec})  # same block of 8 requests
        hand = spec.block * OUTPUT / sim_s(s)
        tried += 1
        assert best_tps >= hand * (1 - 1e-9), spec
    assert tried >= 20


def test_the_latency_objective_prefers_small_blocks():
    s = scenario(layers=8)
    fast = search(s, "latency", max_block=16, top=1, simulate=False).best
    wide = search(s, "throughput", max_block=16, top=1, simulate=False).best
    assert fast.block <= wide.block
    assert fast.seconds_per_token <= wide.seconds_per_token
    assert wide.throughput >= fast.throughput


def test_representative_context_approximates_every_step():
    s = scenario(node=SMALL_HOST, output=16)
    exact = search(s, max_block=8, top=1).best
    approx = search(s, max_block=8, top=1, representative=True).best
    assert approx.simulated_s is not None
    assert approx.seconds == pytest.approx(approx.simulated_s, rel=0.02)
    assert exact.seconds <= approx.simulated_s * (1 + 1e-9)


def test_nothing_fits_names_the_short_capacity():
    with pytest.raises(LlmsimError, match=r"beyond the 1 GB of host DRAM and 2 GB of disk"):
        search(scenario(node={"host.dram": 1e9, "host.disk.capacity": 2e9}), max_block=4)
    with pytest.raises(LlmsimError, match=r"GB of GPU memory beyond the 14\.4 GB usable"):
        search(scenario(prompt=1024), gpu_batch_sizes=(4096,), gpu_batches=(1,))


# ------------------------------------------------------------------ the command


def _file(tmp_path: Path) -> Path:
    data = {
        "name": "t",
        "description": "opt-13b on t4-flexgen",
        "cluster": "t4-flexgen",
        "model": "opt-13b",
        "precision": {"weights": "fp16", "activations": "fp16"},
        "workload": {
            "requests": 1,
            "arrival": {"process": "burst"},
            "prompt": {"dist": "fixed", "value": PROMPT},
            "output": {"dist": "fixed", "value": OUTPUT},
        },
    }
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_cli_prints_a_table_and_a_pasteable_snippet(tmp_path, capsys):
    path = _file(tmp_path)
    code = main(["offload-search", str(path), "--top", "3", "--max-block", "16"])
    out = capsys.readouterr().out
    assert code == 0
    assert "LP tok/s" in out and "sim tok/s" in out and "weights g/c/d %" in out
    snippet = out.split("one block of requests):\n", 1)[1]
    pasted = yaml.safe_load(snippet)
    spec = OffloadSpec.model_validate(pasted["offload"])
    assert pasted["scheduler"] == {"policy": "static", "batch_size": spec.block}
    data = yaml.safe_load(path.read_text())
    data.update(pasted)
    data["workload"]["requests"] = spec.block
    assert simulate(load_scenario(data)).summary.finished == spec.block


def test_cli_json(tmp_path, capsys):
    code = main(["offload-search", str(_file(tmp_path)), "--json", "--max-block", "8"])
    doc = yaml.safe_load(capsys.readouterr().out)
    assert code == 0
    assert doc["model"] == "opt-13b" and doc["policies"]
    top = doc["policies"][0]
    assert top["simulated_seconds"] == pytest.approx(top["lp_seconds"], rel=1e-9)


def test_cli_infeasible_is_one_line_naming_the_capacity(tmp_path, capsys):
    path = _file(tmp_path)
    code = main(["offload-search", str(path), "--set", "model.n_layers=4000"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "no offload policy fits" in err and "host DRAM" in err and "disk" in err


# ------------------------------------------------------------------ priced as it runs

T4 = "t4-flexgen"


def _machine(node: dict[str, float] | None = None):
    return offload_machine(build_cluster(scenario(node=node).cluster))


def _pricer(precision: Precision, model: str = "opt-13b") -> StepPricer:
    m = catalog.load_model(model)
    machine = _machine()
    return StepPricer(m, precision, machine, RooflineKernel(machine.gpu, precision))


FP16 = Precision("fp16", "fp16", "fp16")
INT4 = Precision("int4", "fp16", "int4", 64)


def test_pcie_is_priced_at_the_achieved_pinned_copy_rate():
    """bandwidthTest on a T4 (PCIe Gen3 x16, 16 GB/s nominal): 12.3 GB/s host→device,
    13.2 GB/s device→host; the offload model carries the same share of any link."""
    m = _machine()
    assert m.pcie_bytes_per_s == 16e9
    assert m.h2d_bytes_per_s == pytest.approx(12.3e9)
    assert m.d2h_bytes_per_s == pytest.approx(13.2e9)
    assert _machine({"pcie.bandwidth": 32e9}).h2d_bytes_per_s == pytest.approx(24.6e9)
    # a weight layer streamed from DRAM crosses PCIe at the achieved rate, not the nominal
    p = _pricer(FP16)
    step = p.step(OffloadSpec(weights=(0, 1, 0)), Work.decode(8, 64), 8)
    w_layer = layer_weight_elems(p.model, 1) * 2
    assert step.terms["ctog"].coef["weights.cpu"] == pytest.approx(w_layer / 12.3e9)


def test_measured_copies_replace_the_share_but_never_beat_the_link():
    assert pinned_copy_bytes_per_s(16e9, 14e9, "h2d") == 14e9
    assert pinned_copy_bytes_per_s(16e9, 20e9, "h2d") == 16e9
    assert pinned_copy_bytes_per_s(16e9, None, "d2h") == pytest.approx(16e9 * 13.2 / 16)
    cpu = catalog.load_device("host-cpu")
    assert host_stream_bytes_per_s(cpu) == pytest.approx(128e9 * 0.7)
    assert host_stream_bytes_per_s(cpu, 30e9) == 60e9  # a memcpy reads and writes each byte
    assert host_stream_bytes_per_s(cpu, 100e9) == 128e9  # never above the datasheet


@pytest.mark.parametrize(
    ("precision", "per_value"),
    [
        (FP16, 2 + 4 + 4),  # read fp16, write fp32, bmm reads fp32
        (Precision("fp16", "fp16", "fp32"), 4),  # already fp32: the bmm's read only
        (INT4, 6 * 0.5 + 5 * 4 + 4 / 64 + 4),  # decompressed into fp32, then read
    ],
    ids=["fp16", "fp32", "int4"],
)
def test_cpu_attention_is_its_bytes_at_the_achieved_bandwidth(precision, per_value):
    machine = _machine()
    model = catalog.load_model("opt-13b")
    op = next(o for o in layer_plan(model, 1, precision).ops if o.kind == "attn_decode")
    work = Work.decode(16, 512)
    assert host_attention_bytes_per_value(precision) == pytest.approx(per_value)
    cached = work.decode_kv_tokens * 2 * op.kv_heads * op.head_dim
    q_o = work.decode_seqs * 2 * op.heads * op.head_dim * 4
    new_kv = work.decode_seqs * 2 * op.kv_heads * op.head_dim * precision.kv_bytes
    rate = 128e9 * 0.7  # host-cpu: datasheet bandwidth × efficiency.memory
    expected = (cached * per_value + q_o + new_kv) / rate + 2 * machine.cpu.launch_overhead_s
    seconds = host_attention_seconds(machine, op, work, precision, batches=2)
    assert seconds == pytest.approx(expected, rel=1e-12)
    # never below the op's roofline on the CPU (peak bandwidth and FLOP/s, no overhead)
    cpu_precision = Precision("fp32", "fp32", precision.kv, precision.group_size)
    assert seconds > floor_time(machine.cpu, cpu_precision, op, work)
    # and a calibration profile's memcpy rate replaces the datasheet figure
    measured = replace(machine, cpu_stream_bytes_per_s=40e9)
    slower = host_attention_seconds(measured, op, work, precision, batches=2)
    assert slower == pytest.approx(
        (cached * per_value + q_o + new_kv) / 40e9 + 2 * machine.cpu.launch_overhead_s
    )


def test_dequantisation_is_priced_for_compressed_weights_and_absent_otherwise():
    """FlexGen decompresses a layer's int4 weights with element-wise passes (13 bytes of
    traffic a value into fp16, plus the scales) once per GPU batch, at the GPU's achieved
    bandwidth; fp16 weights cost nothing of the kind."""
    spec = OffloadSpec(weights=(0, 1, 0), kv=(0, 1, 0), gpu_batch_size=4, gpu_batches=2)
    decode = Work.decode(8, 64)
    plain = _pricer(FP16)
    assert plain.dequant_s(decode, 8, 2) == 0.0
    assert decompress_bytes_per_value("fp16", 64, 2) == 0.0
    p = _pricer(INT4)
    values = layer_weight_elems(p.model, 1)
    stream = 320e9 * 0.8  # t4: datasheet bandwidth × efficiency.memory
    per_batch = values * (6 * 0.5 + 5 * 2 + 4 / 64) / stream
    kv_values = decode.decode_kv_tokens * 2 * p.model.d_model
    kv = kv_values * (6 * 0.5 + 5 * 2 + 4 / 64) / stream
    new_kv = decode.decode_seqs * 2 * p.model.d_model * (11 * 2 + 4 + 4 / 64) / stream
    # one launch per pass and tensor: 4 weight matrices × 6 passes, K and V × 6 passes to
    # decompress and × 10 to compress the new token's, each of 2 GPU batches
    launches = 2 * (4 * 6 + 2 * 6 + 2 * 10) * 4e-6
    dequant = p.dequant_s(decode, 8, 2)
    assert dequant == pytest.approx(2 * per_batch + kv + new_kv + launches, rel=1e-9)
    # the GPU's compute of an int4 step carries it; its matmuls read decompressed fp16
    step = p.step(spec, decode, 8)
    base = plain.step(spec, decode, 8)
    gpu_int4 = step.terms["comp_gpu"].at(spec.values())
    gpu_fp16 = base.terms["comp_gpu"].at(spec.values())
    assert gpu_int4 == pytest.approx(gpu_fp16 + dequant, rel=1e-9)
    # and its decompressed MLP weights are held on the GPU
    tiers_int4 = tier_bytes(p.model, INT4, spec, PROMPT, OUTPUT)["gpu"].const
    tiers_fp16 = tier_bytes(p.model, FP16, spec, PROMPT, OUTPUT)["gpu"].const
    mlp = 2 * p.model.d_model * p.model.d_ff * 2
    embed = embedding_weight_elems(p.model, 1)
    assert tiers_int4 - tiers_fp16 == pytest.approx(mlp + embed * (INT4.w_bytes - 2))


def test_flexgen_figures_are_in_the_fidelity_suite():
    rows = {r.id: r for r in validate(only="flexgen_").rows}
    assert {
        "flexgen_opt175b_t4_fp16_512",
        "flexgen_opt30b_t4_fp16_512",
        "flexgen_opt175b_t4_int4_512",
        "flexgen_opt175b_t4_int4_512_breakdown/prefill_s",
        "flexgen_opt175b_t4_int4_512_breakdown/decode_s",
        "flexgen_t4_pcie_pinned_copies/h2d",
        "flexgen_t4_pcie_pinned_copies/d2h",
    } == set(rows)
    assert rows["flexgen_opt175b_t4_fp16_512"].measured == 0.69
    assert rows["flexgen_opt175b_t4_int4_512_breakdown/decode_s"].measured == 2603
    numeric = [r for r in rows.values() if r.status == "ok"]
    assert len(numeric) == 5 and all(r.simulated and r.simulated > 0 for r in numeric)
    # the 30B policy is cut to fit llmsim's GPU tier, and says so
    assert "instead of 20%" in rows["flexgen_opt30b_t4_fp16_512"].note
    pcie = rows["flexgen_t4_pcie_pinned_copies/h2d"]
    assert pcie.measured == 12.3 and pcie.simulated is None and "circular" in pcie.note
    # prefill and decode of one block add up to its makespan
    tps = rows["flexgen_opt175b_t4_int4_512"].simulated
    pre = rows["flexgen_opt175b_t4_int4_512_breakdown/prefill_s"].simulated
    dec = rows["flexgen_opt175b_t4_int4_512_breakdown/decode_s"].simulated
    assert tps == pytest.approx(144 * 32 / (pre + dec), rel=1e-9)
