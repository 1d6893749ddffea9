"""`sim.plan.analyze` and the `llmsim analyze` / `llmsim catalog` commands."""

from __future__ import annotations

import json

import pytest

from sim.arith.memory import layers_per_stage
from sim.arith.precision import Precision
from sim.errors import LlmsimError
from sim.plan.analyze import analyze, analyze_scenario
from tests.cli_helpers import run_cli

REQUIRED_KEYS = {
    "params",
    "weight_bytes",
    "weight_bytes_per_device",
    "kv_bytes_per_token",
    "kv_bytes_peak",
    "flops_per_token",
    "flops_split",
    "ridge_flops_per_byte",
    "prefill_bound",
    "decode_bound",
    "max_batch",
    "prefill_latency_floor_s",
    "decode_latency_floor_s",
}


def test_analyze_json_has_the_promised_keys(capsys):
    code, out, _ = run_cli(
        capsys,
        "analyze",
        "--model",
        "llama-2-70b",
        "--hardware",
        "h100-sxm",
        "--tp",
        "4",
        "--batch",
        "16",
        "--prompt",
        "1024",
        "--output",
        "256",
        "--json",
    )
    assert code == 0
    data = json.loads(out)
    assert set(data) >= REQUIRED_KEYS
    assert data["weight_bytes_per_device"] == pytest.approx(data["weight_bytes"] / 4, rel=0.01)
    assert sum(data["flops_split"].values()) == pytest.approx(1.0)
    assert data["prefill_bound"] == "compute"
    assert data["decode_bound"] == "memory"
    assert data["ridge_flops_per_byte"] == pytest.approx(989.4e12 / 3.35e12)


def test_analyze_table_is_readable(capsys):
    code, out, _ = run_cli(
        capsys, "analyze", "--model", "meta-llama/Llama-2-7b-hf", "--hardware", "a100-80gb-sxm"
    )
    assert code == 0
    assert "llama-2-7b on a100-80gb-sxm" in out
    assert "memory-bound" in out and "ridge point" in out


def test_kv_peak_and_max_batch_are_consistent():
    a = analyze("llama-2-7b", "a100-80gb-sxm", batch=4, prompt=1000, output=24)
    assert a.kv_bytes_peak == 4 * 1024 * a.kv_bytes_per_token
    room = (
        a.memory_bytes_per_device * 0.9 - a.weight_bytes_per_device - (a.activation_workspace_bytes)
    )
    assert a.max_batch == int(room // (1024 * a.kv_bytes_per_token_per_device))
    assert analyze("llama-2-7b", "a100-80gb-sxm", batch=a.max_batch, prompt=1000, output=24).fits
    assert not analyze(
        "llama-2-7b", "a100-80gb-sxm", batch=a.max_batch + 1, prompt=1000, output=24
    ).fits


def test_floors_never_beat_the_roofline_and_scale():
    one = analyze("llama-2-7b", "a100-80gb-sxm", batch=1, prompt=512, output=1)
    # Decode reads every weight once: the floor is at least weights / bandwidth.
    assert one.decode_latency_floor_s >= one.weight_bytes * 0.98 / 2039e9 * 0.99
    # Prefill of 512 tokens is compute-bound: at least 2·params·tokens / peak.
    assert one.prefill_latency_floor_s >= 2 * one.non_embedding_params * 512 / 312e12
    eight = analyze("llama-2-7b", "a100-80gb-sxm", batch=8, prompt=512, output=1)
    assert eight.prefill_latency_floor_s > 7 * one.prefill_latency_floor_s


def test_pipeline_stages_split_layers():
    assert layers_per_stage(80, 3) == [27, 27, 26]
    assert layers_per_stage(32, 1) == [32]
    with pytest.raises(LlmsimError, match="exceed"):
        layers_per_stage(4, 8)


def test_unknown_model_lists_valid_models(capsys):
    code, _, err = run_cli(capsys, "analyze", "--model", "nope", "--hardware", "a100-80gb")
    assert code == 2
    assert err.startswith("llmsim: error: ")
    assert "unknown model 'nope'" in err and "llama-2-7b" in err and "gpt3-175b" in err
    assert "Traceback" not in err
    assert err.count("\n") == 1


def test_unknown_hardware_lists_valid_names(capsys):
    code, _, err = run_cli(capsys, "analyze", "--model", "llama-2-7b", "--hardware", "z80")
    assert code == 2
    assert "unknown hardware 'z80'" in err and "h100-sxm" in err


def test_tp_3_on_32_heads_says_why(capsys):
    code, _, err = run_cli(
        capsys, "analyze", "--model", "llama-2-7b", "--hardware", "a100-80gb", "--tp", "3"
    )
    assert code == 2
    assert "parallel.tp: 3 does not divide n_heads=32" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dtype", "fp7"], "unknown dtype 'fp7'"),
        (["--batch", "0"], "batch: must be at least 1"),
        (["--pp", "100"], "100 pipeline stages exceed"),
    ],
)
def test_bad_values_are_one_line(capsys, args, message):
    code, _, err = run_cli(
        capsys, "analyze", "--model", "llama-2-7b", "--hardware", "a100-80gb", *args
    )
    assert code == 2
    assert message in err
    assert err.count("\n") == 1


def test_analyze_needs_model_and_hardware(capsys):
    code, _, err = run_cli(capsys, "analyze", "--model", "llama-2-7b")
    assert code == 2 and "both --model and --hardware" in err


def test_analyze_a_scenario(capsys):
    code, out, _ = run_cli(capsys, "analyze", "scenarios/quickstart.yaml", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["model"] == "llama-2-7b" and data["device"] == "a100-80gb-sxm"


def test_catalog_lists_what_ships(capsys):
    code, out, _ = run_cli(capsys, "catalog", "--json")
    assert code == 0
    data = json.loads(out)
    names = {k: {e["name"] for e in v} for k, v in data.items()}
    for device in (
        "t4",
        "l4",
        "a10",
        "a30",
        "a40",
        "a100-40gb",
        "a100-80gb-sxm",
        "h100-sxm",
        "h100-pcie",
        "h200",
        "b200",
        "mi300x",
        "tpu-v4",
        "tpu-v5e",
        "tpu-v5p",
        "host-cpu",
    ):
        assert device in names["device"]
    for model in (
        "gpt3-175b",
        "opt-175b",
        "llama-2-70b",
        "llama-3.1-8b",
        "qwen2-7b",
        "mistral-7b",
        "mixtral-8x7b",
        "palm-540b",
        "bert-base",
        "phi-2",
    ):
        assert model in names["model"]
    assert {"dgx-a100", "dgx-h100", "hgx-h200", "t4-flexgen", "tpu-v4-4x4x4"} <= names["cluster"]
    code, out, _ = run_cli(capsys, "catalog", "models")
    assert code == 0 and "meta-llama/Llama-2-70b-hf" in out


def test_catalog_unknown_kind(capsys):
    code, _, err = run_cli(capsys, "catalog", "gizmos")
    assert code == 2 and "unknown catalog kind 'gizmos'" in err


@pytest.mark.parametrize("model", ["opt-13b", "llama-2-7b"])  # tied, untied embeddings
def test_pipeline_weights_match_the_engine(model):
    """`analyze`'s most loaded device holds what the simulator sizes: with tied
    embeddings both end stages keep the whole matrix (embedding and LM head)."""
    from sim.arith.memory import weight_bytes_per_device
    from sim.cost.topology import build_cluster
    from sim.plan import load_scenario
    from sim.plan.memory import plan_memory as plan_replica

    s = load_scenario(
        {
            "name": "pp3",
            "cluster": "dgx-a100",
            "model": model,
            "parallel": {"tp": 2, "pp": 3},
            "workload": {
                "requests": 1,
                "arrival": {"process": "burst"},
                "prompt": {"dist": "fixed", "value": 16},
                "output": {"dist": "fixed", "value": 4},
            },
        }
    )
    precision = Precision.of(s.precision)
    sizes = plan_replica(s, build_cluster(s.cluster), precision)
    assert weight_bytes_per_device(s.model, 2, 3, precision) == pytest.approx(
        max(sizes.weight_bytes), rel=1e-12
    )


@pytest.mark.parametrize(
    "extra",
    [["--model", "llama-2-70b"], ["--hardware", "h100-sxm"], ["--model", "x", "--hardware", "y"]],
)
def test_a_scenario_with_model_or_hardware_is_an_error(capsys, extra):
    """--model/--hardware beside a scenario were silently ignored."""
    code, out, err = run_cli(capsys, "analyze", "scenarios/quickstart.yaml", *extra)
    assert code == 2 and out == ""
    assert err.startswith("llmsim: error: give a scenario or --") and err.count("\n") == 1
    assert "not both" in err


def test_tp_beyond_the_node_names_the_node_and_its_devices(capsys):
    code, _, err = run_cli(
        capsys, "analyze", "--model", "llama-2-7b", "--hardware", "dgx-a100", "--tp", "16"
    )
    assert code == 2 and err.count("\n") == 1
    assert (
        "tp: tp × pp = 16 × 1 = 16 devices, but dgx-a100 has 8 "
        "(node dgx-a100: 8 a100-80gb-sxm)" in err
    )
    code, _, err = run_cli(
        capsys, "analyze", "--model", "llama-2-7b", "--hardware", "dgx-a100", "--tp", "8"
    )
    assert code == 0, err
    # A device alone says nothing of how many there are: no bound.
    assert analyze("llama-2-7b", "a100-80gb-sxm", tp=16).tp == 16


def test_tp_beyond_a_scenario_cluster_is_an_error():
    with pytest.raises(LlmsimError, match=r"16 devices, but dgx-a100 has 8"):
        analyze_scenario("scenarios/quickstart.yaml", tp=16)


def test_a_batch_split_scenario_analyzes_as_the_simulator_sizes_it(capsys):
    """palm-540b-tpu-v4-layouts splits attention by batch (48 heads over 64 chips) in
    the 2D layout; analyze refused it, checking a split by heads."""
    from sim.cost.topology import build_cluster
    from sim.plan import load_scenario
    from sim.plan.memory import plan_memory

    path = "scenarios/palm-540b-tpu-v4-layouts.yaml"
    code, out, err = run_cli(capsys, "analyze", path, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert (data["tp"], data["tp_layout"], data["attention"]) == (
        64,
        "2d-weight-stationary",
        "batch",
    )
    s = load_scenario(path)
    sizes = plan_memory(s, build_cluster(s.cluster), Precision.of(s.precision))
    assert data["weight_bytes_per_device"] == pytest.approx(max(sizes.weight_bytes), rel=1e-12)
    assert data["kv_bytes_per_token_per_device"] == pytest.approx(
        max(sizes.kv_bytes_per_token), rel=1e-12
    )
    code, out, _ = run_cli(capsys, "analyze", path)
    assert code == 0 and "tp=64, pp=1, 2d-weight-stationary, attention by batch" in out
    code, out, err = run_cli(capsys, "analyze", path, "--ops", "--json")
    assert code == 0, err
    assert "links of tpu-v4-4x4x4" in json.loads(out)["ops"]["all_reduce"]["source"]


def test_attention_by_batch_shrinks_the_kv_of_a_multiquery_model():
    heads = analyze("palm-540b", "tpu-v4", tp=16)
    batch = analyze("palm-540b", "tpu-v4", tp=16, attention="batch")
    # One K/V head, replicated on every device by heads; 1/16 of the sequences by batch.
    assert batch.kv_bytes_per_token_per_device == pytest.approx(
        heads.kv_bytes_per_token_per_device / 16
    )
    with pytest.raises(LlmsimError, match="unknown tp_layout 'diagonal'"):
        analyze("palm-540b", "tpu-v4", tp=16, tp_layout="diagonal")


def test_a_moe_model_reports_the_parameters_a_token_touches(capsys):
    """DeepSeek-V3: 671B parameters, 37B activated per token (its model card); the
    table says so only for a model whose active and total counts differ."""
    code, out, _ = run_cli(
        capsys, "analyze", "--model", "deepseek-v3", "--hardware", "dgx-h100", "--tp", "8",
        "--dtype", "fp8", "--json",
    )  # fmt: skip
    a = json.loads(out)
    assert code == 0
    assert a["params"] / 1e9 == pytest.approx(671.0, rel=5e-3)
    assert a["active_params"] / 1e9 == pytest.approx(37.5, rel=5e-3)
    dense = analyze("llama-2-7b", "a100-80gb-sxm")
    assert dense.active_params == dense.params
    code, out, _ = run_cli(capsys, "analyze", "--model", "deepseek-v3", "--hardware", "h200")
    assert "37.55B active per token" in out
