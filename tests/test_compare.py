"""`llmsim compare` (sim.studies.compare, sim.cli.compare), the Chrome trace (sim.results.trace) and
`llmsim run --trace`."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from sim.cli.main import main
from sim.errors import LlmsimError
from sim.studies.compare import (
    GANTT_ROWS,
    default_window,
    gantt_rows,
    gantt_windows,
    replica_layout,
    run_variants,
)
from sim.studies.variants import VaryAxis, expand, parse_vary, parse_window, split_top_level
from tests.cli_helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "scenarios" / "quickstart.yaml"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def small(tmp_path: Path, **top: Any) -> Path:
    """quickstart, 20 requests, Llama-2-13B (so pp=2 on the DGX A100 has two stages)."""
    data = yaml.safe_load(QUICK.read_text())
    data["workload"]["requests"] = 20
    data["model"] = "llama-2-13b"
    data.pop("output")
    data.update(top)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ------------------------------------------------------------------ --vary parsing


def test_split_top_level_keeps_brackets_and_quotes_whole():
    assert split_top_level("{policy: vllm},{policy: sarathi, chunk_size: 256}", ",") == [
        "{policy: vllm}",
        "{policy: sarathi, chunk_size: 256}",
    ]
    assert split_top_level("[1, 2],[3]", ",") == ["[1, 2]", "[3]"]
    assert split_top_level("'a,b',\"c,d\",e", ",") == ["'a,b'", '"c,d"', "e"]
    with pytest.raises(ValueError):
        split_top_level("{a: 1", ",")
    with pytest.raises(ValueError):
        split_top_level("a]", ",")


def test_vary_values_are_yaml():
    axis = parse_vary("parallel.tp=4,8")
    assert axis == VaryAxis(("parallel.tp",), (("4",), ("8",)))
    assert [v.values() for v in expand([axis])] == [{"parallel.tp": 4}, {"parallel.tp": 8}]
    axis = parse_vary("scheduler={policy: vllm},{policy: sarathi, chunk_size: 256}")
    assert [v.values()["scheduler"] for v in expand([axis])] == [
        {"policy": "vllm"},
        {"policy": "sarathi", "chunk_size": 256},
    ]


def test_vary_zipped_keys():
    axis = parse_vary("parallel.tp:parallel.pp=8:1, 4:2")
    assert axis.keys == ("parallel.tp", "parallel.pp")
    assert axis.points == (("8", "1"), ("4", "2"))
    variants = expand([axis])
    assert [v.label for v in variants] == [
        "parallel.tp=8 parallel.pp=1",
        "parallel.tp=4 parallel.pp=2",
    ]
    # a colon inside a mapping is not a separator
    axis = parse_vary("scheduler:parallel.pp={policy: vllm}:2")
    assert axis.points == (("{policy: vllm}", "2"),)


def test_several_vary_form_a_product_in_order():
    variants = expand([parse_vary("parallel.pp=1,2"), parse_vary("scheduler.policy=vllm,sarathi")])
    assert [v.index for v in variants] == [1, 2, 3, 4]
    assert [v.label for v in variants] == [
        "parallel.pp=1 scheduler.policy=vllm",
        "parallel.pp=1 scheduler.policy=sarathi",
        "parallel.pp=2 scheduler.policy=vllm",
        "parallel.pp=2 scheduler.policy=sarathi",
    ]
    assert variants[3].overrides == ["parallel.pp=2", "scheduler.policy=sarathi"]


@pytest.mark.parametrize(
    "spec",
    [
        "parallel.tp",  # no '='
        "=1,2",  # no key
        "parallel..tp=1",  # empty key part
        "parallel.tp=",  # no values
        "parallel.tp=1,,2",  # empty value
        "scheduler={policy: vllm",  # unbalanced
        "parallel.tp:parallel.pp=1:2,4",  # zipped, wrong arity
        "parallel.tp:parallel.tp=1:2",  # key twice
        "parallel.tp=@x",  # not YAML
    ],
)
def test_malformed_vary_names_the_flag(spec):
    with pytest.raises(LlmsimError) as err:
        parse_vary(spec)
    assert err.value.line().startswith("--vary: ")


def test_same_key_in_two_axes_is_an_error():
    with pytest.raises(LlmsimError, match="varied twice"):
        expand([parse_vary("parallel.pp=1,2"), parse_vary("parallel.pp=4")])


def test_window_parsing_and_default():
    assert parse_window("1.5:2") == (1.5, 2.0)
    for bad in ("2:1", "x:1", "1", "1:2:3"):
        with pytest.raises(LlmsimError, match="--window"):
            parse_window(bad)
    n = 100
    stages = pd.DataFrame(
        {"start_s": [i * 1.0 for i in range(n)], "end_s": [i + 0.5 for i in range(n)]}
    )
    assert default_window(stages, 40) == (30.0, 69.5)
    assert default_window(stages.head(10), 40) == (0.0, 9.5)
    assert default_window(stages.head(0), 40) is None


def test_gantt_windows_share_one_length():
    # Two variants whose runs differ in length and pace: one stage execution every
    # 10 ms for 1 s, and one every 50 ms for 20 s. Their own windows (40 executions
    # around the middle) differ five-fold; the panels get the longer length, each from
    # its own start, so equal lengths on the time axis are equal times.
    fast = pd.DataFrame({"start_s": [i * 0.01 for i in range(100)]})
    fast["end_s"] = fast["start_s"] + 0.008
    slow = pd.DataFrame({"start_s": [i * 0.05 for i in range(400)]})
    slow["end_s"] = slow["start_s"] + 0.04
    own = [default_window(fast), default_window(slow), None]
    assert own[0] is not None and own[1] is not None
    assert own[1][1] - own[1][0] > 4 * (own[0][1] - own[0][0])
    windows = gantt_windows(own)
    lengths = [w[1] - w[0] for w in windows if w is not None]
    assert lengths == pytest.approx([own[1][1] - own[1][0]] * 2)
    assert [w[0] for w in windows if w is not None] == [own[0][0], own[1][0]]
    assert windows[2] is None  # a failed variant has no window
    # A given window (--window, compare.window_s) is the same absolute one for all.
    assert gantt_windows(own, (1.0, 1.5)) == [(1.0, 1.5), (1.0, 1.5), None]


def test_gantt_rows_cap_keeps_both_pools():
    colocated = [(r, "both", 2) for r in range(3)]
    rows, hidden = gantt_rows(colocated)
    assert rows == [(r, s, "both") for r in range(3) for s in range(2)] and hidden == 0
    # 12 prefill replicas (pp 1) and 6 decode replicas (pp 2): 24 rows, 16 drawn, and
    # the decode pool is among them though its replicas come last.
    layout = [(r, "prefill", 1) for r in range(12)] + [(12 + r, "decode", 2) for r in range(6)]
    rows, hidden = gantt_rows(layout)
    assert len(rows) == GANTT_ROWS and hidden == 24 - GANTT_ROWS
    assert {role for _, _, role in rows} == {"prefill", "decode"}
    assert rows == sorted(rows)
    decode = [(r, s) for r, s, role in rows if role == "decode"]
    assert {s for _, s in decode} == {0, 1}  # whole replicas: every stage
    # A replica deeper than the cap shows its first stages.
    rows, hidden = gantt_rows([(0, "both", 20)], cap=16)
    assert rows == [(0, s, "both") for s in range(16)] and hidden == 4


# ------------------------------------------------------------------ compare runs


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tmp = tmp_path_factory.mktemp("cmp")
    out = tmp / "out"
    argv = [
        "compare",
        str(small(tmp)),
        "--vary",
        "parallel.pp=1,2",
        "--vary",
        "scheduler={policy: vllm},{policy: sarathi, chunk_size: 256}",
        "--jobs",
        "1",
        "--json",
        "--trace",
        "--out",
        str(out),
    ]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return out, buf.getvalue()


def test_compare_two_by_two_in_order(two_by_two):
    _, stdout = two_by_two
    doc = json.loads(stdout)
    assert doc["scenario"] == "quickstart"
    labels = [v["label"] for v in doc["variants"]]
    assert labels == [
        "parallel.pp=1 scheduler={policy: vllm}",
        "parallel.pp=1 scheduler={policy: sarathi, chunk_size: 256}",
        "parallel.pp=2 scheduler={policy: vllm}",
        "parallel.pp=2 scheduler={policy: sarathi, chunk_size: 256}",
    ]
    assert doc["variants"][2]["overrides"] == {"parallel.pp": 2, "scheduler": {"policy": "vllm"}}
    for v in doc["variants"]:
        assert "error" not in v
        assert v["summary"]["finished"] == 20
    assert len(doc["variants"][0]["summary"]["stage_utilization"]) == 1
    assert len(doc["variants"][2]["summary"]["stage_utilization"]) == 2


def test_compare_panels_share_one_window_length(two_by_two):
    _, stdout = two_by_two
    windows = [v["gantt_window_s"] for v in json.loads(stdout)["variants"]]
    lengths = [end - start for start, end in windows]
    assert lengths == pytest.approx([lengths[0]] * 4) and lengths[0] > 0


def test_compare_writes_files(two_by_two):
    out, stdout = two_by_two
    assert json.loads((out / "compare.json").read_text()) == json.loads(stdout)
    with (out / "compare.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["index"] for r in rows] == ["1", "2", "3", "4"]
    assert float(rows[2]["throughput_rps"]) > 0
    assert len(rows[2]["stage_utilization"].split("/")) == 2
    for name in ("gantt.png", "metrics.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000
    for i in range(1, 5):
        trace = json.loads((out / f"trace-{i}.json").read_text())
        assert any(e["ph"] == "X" for e in trace["traceEvents"])


def test_invalid_variant_is_a_failed_row(capsys, tmp_path):
    code, out, _ = run_cli(
        capsys,
        "compare",
        str(small(tmp_path)),
        "--vary",
        "parallel.tp=1,3,2",
        "--jobs",
        "1",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 0
    lines = out.splitlines()
    failed = [line for line in lines if "FAILED" in line]
    assert len(failed) == 1 and "parallel.tp=3" in failed[0]
    assert "parallel.tp: 3 does not divide" in failed[0]
    doc = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert [("error" in v) for v in doc["variants"]] == [False, True, False]
    assert doc["variants"][2]["summary"]["finished"] == 20
    assert (tmp_path / "out" / "gantt.png").read_bytes().startswith(PNG_MAGIC)


def test_all_variants_failing_exits_nonzero(capsys, tmp_path):
    code, out, _ = run_cli(
        capsys,
        "compare",
        str(small(tmp_path)),
        "--vary",
        "parallel.pp=64",
        "--jobs",
        "1",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 2
    assert "64 stages exceed" in out


def test_scenario_compare_vary_is_used(capsys, tmp_path):
    path = small(
        tmp_path,
        compare={"vary": ["parallel.pp=1,2"], "window_s": [1.0, 1.2]},
    )
    code, out, _ = run_cli(
        capsys, "compare", str(path), "--jobs", "1", "--json", "--out", str(tmp_path / "o")
    )
    assert code == 0
    doc = json.loads(out)
    assert [v["label"] for v in doc["variants"]] == ["parallel.pp=1", "parallel.pp=2"]
    assert doc["variants"][1]["gantt_window_s"] == [1.0, 1.2]


def test_nothing_to_vary_is_one_error_line(capsys, tmp_path):
    code, out, err = run_cli(capsys, "compare", str(small(tmp_path)), "--jobs", "1")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "--vary" in err and "compare.vary" in err


def test_bad_vary_on_the_command_line(capsys, tmp_path):
    code, _, err = run_cli(capsys, "compare", str(small(tmp_path)), "--vary", "parallel.tp")
    assert code == 2
    assert err.startswith("llmsim: error: --vary: ") and err.count("\n") == 1


def test_disaggregated_compare_draws_both_pools(tmp_path):
    from sim.plan import load_scenario
    from sim.studies.compare import to_json, write_outputs

    path = small(tmp_path)
    dis = "{prefill: {replicas: 1}, decode: {replicas: 1, pp: 2}}"
    variants = expand([parse_vary(f"disaggregation=null,{dis}")])
    assert replica_layout(load_scenario(path, variants[1].overrides)) == [
        (0, "prefill", 1),
        (1, "decode", 2),
    ]
    # A window while requests arrive (the first 5 s) holds work of both pools.
    colocated, split = run_variants(path, variants, jobs=1, window_s=(1.0, 3.0))
    assert colocated.lanes == ((0, 0, "both"),)
    assert split.lanes == ((0, 0, "prefill"), (1, 0, "decode"), (1, 1, "decode"))
    assert split.gantt is not None and split.window_s == (1.0, 3.0)
    drawn = set(zip(split.gantt["replica"], split.gantt["stage"], strict=True))
    assert drawn == {(0, 0), (1, 0), (1, 1)}
    out = tmp_path / "out"
    written = write_outputs([colocated, split], out, to_json([colocated, split], "s", []))
    assert (out / "gantt.png").read_bytes().startswith(PNG_MAGIC)
    assert out / "gantt.png" in written.files


def test_compare_progress_on_draws_a_bar(capsys, tmp_path):
    code, out, err = run_cli(
        capsys,
        "compare",
        str(small(tmp_path)),
        "--vary",
        "parallel.pp=1,2",
        "--set",
        "workload.requests=6",
        "--jobs",
        "1",
        "--progress",
        "on",
        "--out",
        str(tmp_path / "out"),
    )
    assert code == 0 and "2 variant(s)" in out
    assert "compare" in err and "2/2" in err and "variant" in err


def test_process_pool_matches_in_process(tmp_path):
    variants = expand([parse_vary("parallel.pp=1,2"), parse_vary("scheduler.policy=vllm,orca")])
    path = small(tmp_path)
    one = run_variants(path, variants, jobs=1)
    pool = run_variants(path, variants, jobs=2)
    assert [r.variant for r in pool] == variants
    assert [r.summary for r in pool] == [r.summary for r in one]


# ------------------------------------------------------------------ traces


def test_chrome_trace_has_one_x_event_per_stage_execution(tmp_path):
    from sim.plan import load_scenario
    from sim.results.run import simulate
    from sim.results.trace import chrome_trace, write_trace

    results = simulate(load_scenario(small(tmp_path), ["parallel.pp=2"]), records=True)
    trace = chrome_trace(results)
    events = trace["traceEvents"]
    xs = [e for e in events if e["ph"] == "X"]
    assert len(xs) == len(results.stages) > 0
    ts = [e["ts"] for e in xs]
    assert ts == sorted(ts)
    all_ts = [e["ts"] for e in events]
    assert all_ts == sorted(all_ts)
    assert {e["tid"] for e in xs} == {0, 1}
    assert {e["name"] for e in xs} <= {"prefill", "decode", "mixed"}
    assert set(xs[0]["args"]) == {"engine", "microbatch", "tokens"}
    names = {
        (e["name"], e["args"]["name"]) for e in events if e["ph"] == "M" and "name" in e["args"]
    }
    assert ("process_name", "replica 0") in names and ("thread_name", "stage 1") in names
    begins = [e for e in events if e["ph"] == "b" and e["name"] == "request"]
    assert len(begins) == results.summary.finished
    path = write_trace(results, tmp_path / "t.json")
    assert json.loads(path.read_text())["displayTimeUnit"] == "ms"


def test_run_trace_writes_a_file(capsys, tmp_path):
    trace = tmp_path / "run.json"
    code, _, _ = run_cli(capsys, "run", str(small(tmp_path)), "--trace", str(trace), "--json")
    assert code == 0
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(e["ph"] == "X" for e in events)


def test_output_trace_writes_trace_json_in_results_dir(capsys, tmp_path):
    path = small(tmp_path, output={"dir": str(tmp_path / "res"), "trace": True, "records": False})
    code, _, _ = run_cli(capsys, "run", str(path), "--json")
    assert code == 0
    assert (tmp_path / "res" / "summary.json").exists()
    assert json.loads((tmp_path / "res" / "trace.json").read_text())["traceEvents"]


def test_run_does_not_import_matplotlib(tmp_path):
    code = (
        "import sys; from sim.cli.main import main; "
        f"main(['run', {str(small(tmp_path))!r}, '--json']); "
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
