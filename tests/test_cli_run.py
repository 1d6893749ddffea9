"""`llmsim run`: outputs, and one clear line for every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.cli_helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
N_MODELS = len(list((ROOT / "models").glob("*.yaml")))
QUICK = ROOT / "scenarios" / "quickstart.yaml"


def small(tmp_path: Path, **changes) -> Path:
    data = yaml.safe_load(QUICK.read_text())
    data["workload"]["requests"] = 40
    data.pop("output")
    for key, value in changes.items():
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if value is None:
            node.pop(parts[-1], None)
        else:
            node[parts[-1]] = value
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_run_prints_json_and_writes_results(capsys, tmp_path):
    code, out, _ = run_cli(
        capsys,
        "run",
        str(small(tmp_path)),
        "--json",
        "--out",
        str(tmp_path / "res"),
        "--format",
        "csv",
    )
    assert code == 0
    summary = json.loads(out)
    assert summary["finished"] == 40
    assert summary["ttft_s"]["p99"] >= summary["ttft_s"]["p50"] > 0
    for name in ("summary.json", "scenario.resolved.yaml", "requests.csv", "iterations.csv"):
        assert (tmp_path / "res" / name).exists()


def test_run_table_and_set_override(capsys, tmp_path):
    code, out, _ = run_cli(
        capsys,
        "run",
        str(small(tmp_path)),
        "--set",
        "workload.requests=7",
        "--set",
        "scheduler.max_num_seqs=2",
    )
    assert code == 0
    assert "7/7 finished" in out and "TTFT" in out and "p99" in out


def test_module_entry_point_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "sim", "catalog", "scenarios"],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0 and "quickstart" in proc.stdout


BAD = [
    ({"schedulr": {"policy": "vllm"}}, "s.yaml: schedulr: unknown key"),
    ({"scheduler.policy": "fifo"}, "unknown policy 'fifo'; valid policies: orca, sarathi"),
    ({"scheduler.max_num_seqs": -1}, "scheduler"),
    ({"scheduler.max_num_seqs": "many"}, "max_num_seqs"),
    ({"workload.arrival.rate": -2}, "s.yaml: workload.arrival.rate: must be > 0"),
    ({"workload.arrival.process": "psson"}, "workload.arrival.process"),
    ({"parallel.tp": 3}, "s.yaml: parallel.tp: 3 does not divide n_heads=32"),
    ({"parallel.replicas": 9}, "s.yaml: parallel: replicas × tp × pp = 9 × 1 × 1 = 9 devices, but"),
    (
        {"parallel.pp": 2, "parallel.layers_per_stage": [10, 10]},
        "parallel.layers_per_stage: must be 2 positive counts summing to n_layers=32",
    ),
    (
        {"model": "lama-2-7b"},
        "s.yaml: model: unknown model 'lama-2-7b'; did you mean llama-2-7b, llama-2-70b, llama-7b? "
        f"({N_MODELS} valid models; `llmsim catalog` lists them)",
    ),
    ({"cluster": "cray-1"}, "s.yaml: cluster: unknown cluster 'cray-1'"),
    ({"model": "llama-2-70b"}, "s.yaml: parallel: llama-2-70b does not fit: a device needs"),
    ({"precision.weights": "fp7"}, "precision.weights: unknown dtype 'fp7'"),
    ({"slo.ttft": "soon"}, "slo.ttft"),
    ({"workload": None}, "s.yaml: workload: required key is missing"),
    ({"router.policy": "smart"}, "unknown router 'smart'"),
]


@pytest.mark.parametrize(("changes", "message"), BAD)
def test_bad_scenarios_get_one_line(capsys, tmp_path, changes, message):
    path = small(tmp_path, **changes)
    code, _, err = run_cli(capsys, "run", str(path))
    assert code == 2
    assert err.startswith("llmsim: error: ")
    assert message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_malformed_yaml(capsys, tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nmodel: [llama\n")
    code, _, err = run_cli(capsys, "run", str(path))
    assert code == 2 and "broken.yaml: line 3: malformed YAML" in err


def test_not_a_mapping(capsys, tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    code, _, err = run_cli(capsys, "run", str(path))
    assert code == 2 and "list.yaml: a scenario is a YAML mapping" in err


def test_missing_file(capsys):
    code, _, err = run_cli(capsys, "run", "no/such.yaml")
    assert code == 2 and "no/such.yaml: file not found" in err


def test_bad_set(capsys):
    code, _, err = run_cli(capsys, "run", str(QUICK), "--set", "parallel")
    assert code == 2 and "--set expects key.path=value" in err
    code, _, err = run_cli(capsys, "run", str(QUICK), "--set", "name.x=1")
    assert code == 2 and "cannot set inside a non-mapping" in err


def test_trace_with_broken_rows(capsys, tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0.0,10,5\n0.5,abc,5\n1.0,12,3\n")
    path = small(tmp_path, **{"workload": {"trace": {"path": str(trace)}}})
    code, _, err = run_cli(capsys, "run", str(path))
    assert code == 2
    assert "t.csv: line 3: prompt_tokens: expected a positive integer, got 'abc'" in err


def test_trace_that_goes_back_in_time(capsys, tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n1.0,10,5\n0.5,11,5\n")
    path = small(tmp_path, **{"workload": {"trace": {"path": str(trace)}}})
    code, _, err = run_cli(capsys, "run", str(path))
    assert code == 2 and "t.csv: line 3: arrival_s" in err


def test_requests_that_never_fit_are_rejected_with_a_reason(capsys, tmp_path):
    """A run that serves nothing is an error (exit 2), after its summary, with one line
    saying why; it used to exit 0."""
    path = small(
        tmp_path,
        **{
            "workload.prompt": {"dist": "fixed", "value": 4000},
            "workload.output": {"dist": "fixed", "value": 200},
        },
    )
    code, out, err = run_cli(capsys, "run", str(path), "--json")
    assert code == 2
    summary = json.loads(out)  # the summary is still printed
    assert summary["rejected"] == 40
    assert summary["reject_reasons"] == {"exceeds max_model_len": 40}
    assert err.startswith("llmsim: error: ") and err.count("\n") == 1, err
    assert (
        "s.yaml: all 40 requests were rejected: exceeds max_model_len (40); "
        "the first: prompt + output = 4000 + 200 = 4200 > 4096" in err
    )


def test_all_rejected_table_run_exits_2(capsys, tmp_path):
    path = small(tmp_path, **{"workload.prompt": {"dist": "fixed", "value": 5000}})
    code, out, err = run_cli(capsys, "run", str(path))
    assert code == 2
    assert "0/40 finished, 40 rejected" in out
    assert "all 40 requests were rejected: exceeds max_model_len (40)" in err


def test_some_rejected_is_still_a_result(capsys, tmp_path):
    path = small(tmp_path, **{"workload.prompt": {"dist": "uniform", "min": 100, "max": 8000}})
    code, out, _ = run_cli(capsys, "run", str(path), "--json")
    summary = json.loads(out)
    assert code == 0
    assert 0 < summary["rejected"] < 40 and summary["finished"] == 40 - summary["rejected"]


def test_a_prompt_past_the_context_is_rejected_for_the_context(capsys, tmp_path):
    """A 10,000-token prompt on a 4,096-token model exceeds max_model_len first (it was
    reported as exceeding max_num_batched_tokens, a bound the user never set)."""
    path = small(
        tmp_path,
        **{
            "workload.requests": 3,
            "workload.prompt": {"dist": "fixed", "value": 10_000},
            "workload.output": {"dist": "fixed", "value": 16},
        },
    )
    out_dir = tmp_path / "res"
    code, out, err = run_cli(capsys, "run", str(path), "--json", "--out", str(out_dir))
    assert code == 2
    assert json.loads(out)["reject_reasons"] == {"exceeds max_model_len": 3}
    assert "prompt + output = 10000 + 16 = 10016 > 4096" in err
    requests = pd.read_parquet(out_dir / "requests.parquet")
    assert set(requests["reject_reason"]) == {
        "exceeds max_model_len: prompt + output = 10000 + 16 = 10016 > 4096"
    }


def test_the_step_budget_still_rejects_a_prompt_within_the_context(capsys, tmp_path):
    path = small(
        tmp_path,
        **{
            "workload.requests": 2,
            "workload.prompt": {"dist": "fixed", "value": 3000},
            "workload.output": {"dist": "fixed", "value": 16},
            "scheduler.max_num_batched_tokens": 2048,
        },
    )
    code, out, err = run_cli(capsys, "run", str(path), "--json")
    assert code == 2
    assert json.loads(out)["reject_reasons"] == {"exceeds max_num_batched_tokens": 2}
    assert "prompt 3000 > 2048" in err
