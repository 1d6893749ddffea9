"""Offloading (sim.spec.offload, sim.engine.offload) and FlexGen's policy search
(sim.studies.offload_search, `llmsim offload-search`): placements stay within every tier, the
degenerate cases reduce to the plain simulation, slower links never help, and the LP's
policy is as good as any hand-enumerated one in the simulator."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from sim.arith.precision import Precision
from sim.cli.main import main
from sim.cost.offload import tier_bytes
from sim.cost.topology import build_cluster
from sim.errors import LlmsimError
from sim.plan import load_scenario
from sim.plan.offload import check_capacity, offload_machine
from sim.results.run import simulate
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
