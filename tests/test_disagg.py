"""Disaggregated prefill/decode serving: KV handoff over the links between pools."""

from __future__ import annotations

import pytest

from sim.errors import LlmsimError
from sim.results.run import simulate
from sim.spec import catalog
from tests.scenarios_for_tests import make

BASE = {
    "name": "dis",
    "cluster": "dgx-a100",
    "model": "opt-13b",
    "precision": {"weights": "fp16", "activations": "fp16", "kv": "fp16"},
    "scheduler": {"policy": "vllm"},
    "workload": {
        "requests": 200,
        "arrival": {"process": "poisson", "rate": 3.0},
        "prompt": {"dist": "fixed", "value": 512},
        "output": {"dist": "fixed", "value": 64},
    },
    "slo": {"ttft": "400 ms", "tpot": "40 ms", "percentile": 90},
    "disaggregation": {"prefill": {"replicas": 2}, "decode": {"replicas": 1}},
}


def decode_cluster(nic_bandwidth: str) -> dict:
    """A one-GPU A100 box whose only way out is a NIC of the given bandwidth."""
    node = catalog.load_node("dgx-a100").model_dump(by_alias=True)
    node.update(
        name="a100-box", devices_per_node=1, nic={"bandwidth": nic_bandwidth, "latency": "5 us"}
    )
    return {"name": "a100-box", "node": node, "nodes": 1}


def test_tokens_conserved_and_every_request_decodes_on_the_decode_pool():
    res = simulate(make(BASE))
    req = res.requests
    assert (req["status"] == "finished").all()
    assert (req["replica"] == 2).all()  # replicas 0-1 prefill, 2 decodes
    assert int(res.iterations["tokens_out"].sum()) == int(req["output_tokens"].sum())
    assert res.summary.kv_transfer.transfers == 200
    assert res.summary.kv_transfer.bytes == 200 * 512 * 819_200
    roles = res.devices.groupby("role")["device"].apply(sorted).to_dict()
    assert roles == {"prefill": [0, 1], "decode": [2]}
    # Prefill replicas never decode: all their iterations are prefills.
    prefill_iters = res.iterations[res.iterations["replica"] < 2]
    assert (prefill_iters["decode_seqs"] == 0).all()


def test_zero_bandwidth_between_pools_is_rejected():
    s = make(
        BASE,
        disaggregation={
            "prefill": {"replicas": 1},
            "decode": {"replicas": 1, "cluster": decode_cluster("0 GB/s")},
        },
    )
    with pytest.raises(LlmsimError, match="zero bandwidth: the KV cache cannot move") as err:
        simulate(s)
    assert err.value.key == "disaggregation"


def test_fast_links_approach_decode_only_latency():
    def tpot(bandwidth: str) -> tuple[float, float]:
        s = make(
            BASE,
            disaggregation={
                "prefill": {"replicas": 1},
                "decode": {"replicas": 1, "cluster": decode_cluster(bandwidth)},
            },
        )
        res = simulate(s)
        it = res.iterations
        decode_only = it[(it["replica"] == 1) & (it["prefill_tokens"] == 0)]
        step = (decode_only["end_s"] - decode_only["start_s"]) / decode_only["iterations"]
        return res.summary.tpot_s.p50, float(step.median())

    slow, _ = tpot("1 GB/s")
    fast, step = tpot("1 PB/s")
    assert slow > fast * 1.1  # 420 MB of KV per request over 1 GB/s shows in TPOT
    assert fast == pytest.approx(step, rel=0.03)  # the decode step alone


def test_pools_of_different_devices():
    s = make(
        BASE,
        cluster="dgx-h100",
        disaggregation={
            "prefill": {"replicas": 1, "tp": 2},
            "decode": {"replicas": 1, "cluster": "dgx-a100"},
        },
    )
    res = simulate(s)
    assert (res.requests["status"] == "finished").all()
    kinds = res.devices.groupby("role")["kind"].first().to_dict()
    assert kinds == {"prefill": "h100-sxm", "decode": "a100-80gb-sxm"}
    assert res.summary.cost.devices == 3


def test_pool_errors_name_the_pool():
    with pytest.raises(LlmsimError, match=r"disaggregation\.decode\.tp: 3 does not divide"):
        make(BASE, disaggregation={"prefill": {}, "decode": {"tp": 3}})
    with pytest.raises(LlmsimError, match="the pools need 9 devices of cluster dgx-a100"):
        make(BASE, disaggregation={"prefill": {"replicas": 8}, "decode": {"replicas": 1}})
    with pytest.raises(LlmsimError, match="cannot decode requests prefilled elsewhere"):
        make(BASE, scheduler={"policy": "orca"})
