"""`llmsim validate`: rows against closed forms, error arithmetic, filtering, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from sim.arith.memory import kv_bytes_per_token
from sim.arith.params import total_params
from sim.errors import LlmsimError
from sim.fidelity.rows import NOT_REPRODUCIBLE, OK, SKIPPED, Report, Row, summarize
from sim.fidelity.validate import default_data_path, validate
from sim.plan.analyze import analyze
from sim.spec import catalog, yamlio
from tests.cli_helpers import run_cli

DATA = default_data_path()
needs_data = pytest.mark.skipif(
    not DATA.is_file(),
    reason=f"the shared measurements ({DATA}) are not beside this checkout",
)
# Entries of the shared file the suite reproduces, and the rows each must give a number.
REPRODUCIBLE_PREFIXES = ("gptfast_", "trtllm_", "vllm_table1_memory/", "vllm_opt13b_kv")


def write_data(tmp_path: Path, entries: list[dict]) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump({"measurements": entries}))
    return path


GPTFAST = {
    "id": "gptfast_Llama_2_7B_bf16_tp1",
    "model": "Llama-2-7B",
    "hardware": "nvidia_a100_80gb_sxm (power-limited to 330 W)",
    "precision": "bf16 (Base)",
    "workload": {"batch": 1, "prompt_tokens": 5},
    "metric": "decode throughput per user (batch 1)",
    "value": 104.9,
    "unit": "tokens/s",
}
MEMORY = {
    "id": "vllm_table1_memory",
    "model": "OPT-13B / OPT-66B",
    "count": {"13B": 1, "66B": 4},
    "value": {
        "13B": {
            "gpus": "A100 (40GB)",
            "total_mem_GB": 40,
            "params_GB": 26,
            "kv_cache_GB": 12,
            "max_kv_slots": "15.7K",
        },
        "66B": {
            "gpus": "4xA100",
            "total_mem_GB": 160,
            "params_GB": 132,
            "kv_cache_GB": 21,
            "max_kv_slots": "9.7K",
        },
    },
}
KV = {
    "id": "vllm_opt13b_kv_per_token",
    "model": "OPT-13B",
    "metric": "KV cache bytes per token (FP16)",
    "value": 800,
    "unit": "KB/token",
}


# ------------------------------------------------------------------------ arithmetic


def test_error_is_relative_to_the_measurement():
    assert Row("a", "m", 200.0, 250.0, "u", "").error_pct == pytest.approx(25.0)
    assert Row("a", "m", 200.0, 150.0, "u", "").error_pct == pytest.approx(-25.0)
    assert Row("a", "m", 0.0, 1.0, "u", "").error_pct is None
    assert Row("a", "m", 1.0, None, "u", "", NOT_REPRODUCIBLE).error_pct is None


def test_summary_uses_absolute_errors_of_numeric_rows_only():
    rows = [
        Row("a", "m", 100.0, 110.0, "u", ""),  # +10
        Row("b", "m", 100.0, 80.0, "u", ""),  # -20
        Row("c", "m", 100.0, 130.0, "u", ""),  # +30
        Row("d", "m", 100.0, None, "u", "why", NOT_REPRODUCIBLE),
        Row("e", "m", None, None, "u", "skipped: x", SKIPPED),
    ]
    s = summarize(rows)
    assert (s.n, s.n_numeric, s.n_not_reproducible, s.n_skipped) == (5, 3, 1, 1)
    assert s.median_abs_error_pct == pytest.approx(20.0)
    assert s.p90_abs_error_pct == pytest.approx(28.0)  # linear between 20 and 30
    empty = summarize([])
    assert empty.median_abs_error_pct is None and empty.p90_abs_error_pct is None


# ------------------------------------------------------------- memory closed forms


def test_kv_per_token_is_the_closed_form(tmp_path):
    assert kv_bytes_per_token(catalog.load_model("opt-13b"), "fp16") == 819200
    (row,) = validate(write_data(tmp_path, [KV])).rows
    assert row.status == OK
    assert row.simulated == 800.0  # 819200 B / 1024
    assert row.error_pct == 0.0


def test_memory_rows_match_the_closed_forms(tmp_path):
    rows = {r.id: r for r in validate(write_data(tmp_path, [MEMORY])).rows}
    assert len(rows) == 6 and all(r.status == OK for r in rows.values())
    for size, model, device, tp in (
        ("13B", "opt-13b", "a100-40gb", 1),
        ("66B", "opt-66b", "a100-40gb", 4),
    ):
        spec = catalog.load_model(model)
        a = analyze(spec, device, tp=tp, dtype="fp16", memory_utilization=0.9)
        free = a.memory_bytes_per_device * 0.9 - a.weight_bytes_per_device
        free -= a.activation_workspace_bytes
        prefix = f"vllm_table1_memory/{size}"
        assert rows[f"{prefix}/params"].simulated == total_params(spec) * 2 / 1e9
        assert rows[f"{prefix}/kv_cache"].simulated == pytest.approx(tp * free / 2**30, rel=1e-12)
        slots = math.floor(free / (16 * a.kv_bytes_per_token_per_device)) * 16
        assert rows[f"{prefix}/slots"].simulated == slots
    # the transcription's "15.7K" is parsed as 15,700 slots
    assert rows["vllm_table1_memory/13B/slots"].measured == 15700
    assert "a100-40gb" in rows["vllm_table1_memory/66B/params"].note  # 160 GB over 4 GPUs


# ------------------------------------------------------------------ setups and input


def test_gptfast_entry_is_simulated_and_notes_the_power_cap(tmp_path):
    (row,) = validate(write_data(tmp_path, [GPTFAST])).rows
    assert row.status == OK and row.simulated is not None and row.simulated > 0
    assert "330 W" in row.note and "not corrected" in row.note


def test_entry_missing_keys_is_a_skipped_row(tmp_path):
    broken = {k: v for k, v in GPTFAST.items() if k != "workload"}
    unknown_hw = {**GPTFAST, "id": "gptfast_x", "hardware": "no_such_gpu"}
    no_id = {"model": "x"}
    rows = validate(write_data(tmp_path, [broken, unknown_hw, no_id])).rows
    assert [r.status for r in rows] == [SKIPPED, SKIPPED, SKIPPED]
    assert rows[0].note == "skipped: entry has no workload.batch"
    assert "no_such_gpu" in rows[1].note
    assert rows[2].id == "entry #2" and "no id" in rows[2].note
    assert rows[0].measured == 104.9


def test_unmodelled_entry_says_why(tmp_path):
    entry = {"id": "something_new", "metric": "m", "value": 3, "unit": "x"}
    (row,) = validate(write_data(tmp_path, [entry])).rows
    assert row.status == NOT_REPRODUCIBLE and row.simulated is None and row.note


def test_missing_file_names_where_it_looked(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(LlmsimError, match=r"nowhere\.yaml: measurements file not found"):
        validate(missing)


@pytest.mark.parametrize(
    "text",
    ["measurements: [\n  {id: x", "just a string\n", "measurements: {id: x}\n"],
    ids=["bad-yaml", "not-a-mapping", "not-a-list"],
)
def test_malformed_file_is_one_error_line(tmp_path, capsys, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code, out, err = run_cli(capsys, "validate", "--data", str(path))
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("llmsim: error: ") and str(path) in lines[0]


def test_cli_only_and_json(tmp_path, capsys):
    data = write_data(tmp_path, [GPTFAST, KV])
    code, out, _ = run_cli(capsys, "validate", "--data", str(data), "--only", "KV_PER", "--json")
    assert code == 0
    obj = json.loads(out)
    assert {"rows", "median_abs_error_pct", "p90_abs_error_pct", "n"} <= set(obj)
    assert obj["n"] == 1 and [r["id"] for r in obj["rows"]] == ["vllm_opt13b_kv_per_token"]
    assert obj["rows"][0]["error_pct"] == 0.0 and obj["median_abs_error_pct"] == 0.0


def test_cli_table(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "validate", "--data", str(write_data(tmp_path, [KV])))
    assert code == 0
    header, row = out.splitlines()[:2]
    assert header.split()[:6] == ["id", "metric", "unit", "measured", "simulated", "error"]
    assert row.startswith("vllm_opt13b_kv_per_token") and "+0.0" in row
    assert "median |error| 0.0%" in out


# ------------------------------------------------------------- the shared data file


@pytest.fixture(scope="module")
def shared_report() -> Report:
    if not DATA.is_file():
        pytest.skip(f"the shared measurements ({DATA}) are not beside this checkout")
    return validate(quick=True)


@needs_data
def test_every_reproducible_entry_gives_a_number(shared_report):
    rows = shared_report.rows
    assert not [r for r in rows if r.status == SKIPPED]
    numeric = [r for r in rows if r.id.startswith(REPRODUCIBLE_PREFIXES)]
    assert len([r for r in numeric if r.id.startswith("gptfast_")]) == 3
    assert len([r for r in numeric if r.id.startswith("trtllm_")]) == 20
    assert len([r for r in numeric if r.id.startswith("vllm_table1_memory/")]) == 9
    assert all(r.status == OK and r.simulated is not None and r.simulated > 0 for r in numeric)
    goodput = {r.id.split("/")[1]: r for r in rows if r.id.startswith("distserve_intro")}
    assert set(goodput) == {
        "colocated_1GPU",
        "prefill_only_per_GPU",
        "decode_only_per_GPU",
        "2P1D_total",
        "2P1D_per_GPU",
    }
    sims = {k: r.simulated for k, r in goodput.items()}
    # quick: one seed, a 5% bisection, and the note says so
    assert all("over 1 seed(s)" in r.note and "bisection to 5%" in r.note for r in goodput.values())
    assert all(
        r.status == OK and v is not None and v > 0
        for (k, v), r in zip(sims.items(), goodput.values(), strict=True)
    )
    # One 2P1D search serves both rows; DistServe's point holds: per GPU, splitting the
    # phases carries more goodput than colocating them.
    assert sims["2P1D_per_GPU"] == sims["2P1D_total"] / 3
    assert sims["2P1D_per_GPU"] > sims["colocated_1GPU"]
    assert sims["decode_only_per_GPU"] > sims["colocated_1GPU"]
    s = shared_report.summary
    simulated = [r for r in rows if r.simulated is not None]
    assert s.n_numeric == len([r for r in simulated if r.error_pct is not None])
    assert s.median_abs_error_pct is not None
    # every row either has a number or says why not; every row knows its group
    assert all(r.note for r in rows if r.simulated is None)
    assert all(r.group for r in rows)
    assert {"C_serving", "P1_serving_load", "P2_step_timing", "P3_tp_scaling"} <= {
        r.group for r in simulated
    }


@needs_data
def test_step_timing_rows_rebuild_the_profiled_setups():
    report = validate(groups=("P3_tp_scaling",))
    decode = [r for r in report.rows if "decode_tp2_4_8" in r.id]
    prefill = [r for r in report.rows if "prefill_tp2_4_8" in r.id]
    assert len(decode) == 15 and len(prefill) == 21
    assert all(r.runtime == "vllm-v0-eager" and r.simulated for r in decode + prefill)
    by_id = {r.id.split("/", 1)[1]: r.simulated for r in decode + prefill}
    # more tensor parallelism never slows a batch-1 prefill of 8192 tokens, and a larger
    # batch never decodes faster
    assert by_id["TP8/prompt8192"] < by_id["TP4/prompt8192"] < by_id["TP2/prompt8192"]
    assert by_id["TP4/batch1"] <= by_id["TP4/batch16"]


def test_the_custom_all_reduce_rows_price_the_runtimes_kernels():
    report = validate(only="custom_allreduce")
    rows = {r.id.split("/", 1)[1]: r for r in report.rows}
    assert len(rows) == 36 and all(r.group == "R_runtime_kernels" for r in rows.values())
    # the 512-byte figures set the latency: the TP4 (median) row is reproduced
    assert rows["trt/tp4/512"].simulated == pytest.approx(0.0048, rel=0.01)
    assert rows["vllm/tp2/512"].simulated == pytest.approx(0.0095, rel=0.01)
    # latency grows with the message and with the group
    assert rows["vllm/tp8/1048576"].simulated > rows["vllm/tp8/262144"].simulated
    assert rows["trt/tp8/1048576"].simulated > rows["trt/tp2/1048576"].simulated


def test_group_errors_hold_a_group_out_of_the_fit(monkeypatch):
    from sim.fidelity import logo
    from sim.fidelity.rows import Report, Row, summarize

    rows = [
        Row("a", "m", 10.0, 11.0, "ms", "", group="G1", runtime="rt"),
        Row("b", "m", 10.0, 9.0, "ms", "", group="G2", runtime="rt"),
        Row("c", "m", 10.0, 10.5, "ms", "", group="G2", runtime="other"),
    ]
    table = {"rt": {"held_out": {"a": 13.0, "b": 8.0}}}
    monkeypatch.setattr(logo, "fit_table", lambda: table)
    report = Report("x", rows, summarize(rows), 0.0)
    by = {g.group: g for g in logo.group_errors(report)}
    assert by["G1"].median_pct == pytest.approx(10.0)
    assert by["G1"].logo_median_pct == pytest.approx(30.0)  # held-out prediction 13
    assert by["G2"].logo_median_pct == pytest.approx((20.0 + 5.0) / 2)  # c is unfitted
    assert by["all"].rows == 3


@needs_data
def test_only_filters_the_shared_file():
    report = validate(only="gptfast_llama_2_7b_INT8")
    assert [r.id for r in report.rows] == ["gptfast_Llama_2_7B_int8_tp1"]


@needs_data
def test_throughput_does_not_depend_on_the_request_count():
    """Steady state: half the published requests give the same tokens/s within 2%."""
    one = "trtllm_Llama_3p1_8B_Instruct_H100_TP1_FP8_128_128"
    (full,) = validate(only=one).rows
    (half,) = validate(only=one, max_requests=15000).rows
    assert full.simulated is not None and half.simulated is not None
    assert "30000 requests" in full.note and "(of 30000)" in half.note
    assert half.simulated == pytest.approx(full.simulated, rel=0.02)


def test_the_shipped_measurements_are_the_published_ones():
    """validate works without ../shared: its measurements ship in the package, derived
    from the developers' file (kept as published, each entry with its source)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "derive_measurements",
        Path(__file__).resolve().parent.parent / "bench" / "derive_measurements.py",
    )
    assert spec is not None and spec.loader is not None
    derive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(derive)
    assert DATA == derive.SHIPPED and DATA.is_file()
    if not derive.SOURCE.is_file():
        pytest.skip("../shared is not beside this checkout")
    assert DATA.read_text() == derive.derived(), "run python bench/derive_measurements.py"
    for entry in yamlio.read_yaml(DATA)["measurements"]:
        assert entry.get("source"), entry["id"]


def test_validate_runs_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = validate(only="vllm_opt13b_kv_per_token")
    (row,) = report.rows
    assert row.simulated == pytest.approx(800.0)  # 819,200 B = 800 KiB per token


def test_rows_of_one_entry_sharing_an_id_are_told_apart_by_metric():
    from sim.fidelity.validate import _unique

    rows = [
        Row("e", "TTFT p50", 1.0, 1.1, "ms", ""),
        Row("e", "TPOT p50", 2.0, 2.2, "ms", ""),
        Row("f", "throughput", 3.0, 3.0, "tok/s", ""),
    ]
    assert [r.id for r in _unique(rows)] == ["e/ttft_p50", "e/tpot_p50", "f"]
