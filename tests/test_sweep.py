"""Sweeps: expansion of grids and lists, resuming an interrupted sweep, the executors,
the Pareto front and the CLI's handling of bad input."""

from __future__ import annotations

import copy
import csv
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sim.cli.main import main
from sim.errors import LlmsimError
from sim.studies.store import ResultsTable, pareto_front, pareto_path
from sim.studies.sweep import run_sweep
from sim.studies.sweep_tasks import SweepSpec, expand_tasks, load_sweep

ROOT = Path(__file__).resolve().parent.parent
QUICK = yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text())
QUICK.pop("output")


def write_base(folder: Path, requests: int = 30) -> Path:
    data = copy.deepcopy(QUICK)
    data["workload"]["requests"] = requests
    data["workload"]["output"] = {"dist": "fixed", "value": 16}
    path = folder / "base.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def write_sweep(folder: Path, **spec) -> Path:
    write_base(folder)
    doc = {"name": "t", "scenario": "base.yaml", "output": str(folder / "t.sqlite"), **spec}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


GRID = {"parallel.tp": [1, 2], "scheduler.max_num_seqs": [8, 64]}


def comparable(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=["wall_s"]).sort_values("task_id").reset_index(drop=True)


# --------------------------------------------------------------------- expansion


def test_grid_is_a_product_with_zipped_keys_and_list_entries():
    spec = SweepSpec.model_validate(
        {
            "name": "x",
            "scenario": "s.yaml",
            "set": {"cluster": "dgx-a100"},
            "grid": {
                "parallel.tp:parallel.replicas": [[1, 2], "2:1"],
                "scheduler": [{"policy": "vllm"}, {"policy": "sarathi", "chunk_size": 256}],
            },
            "list": [{"seed": 1}, {"seed": 2}],
        }
    )
    tasks = expand_tasks(spec)
    assert len(tasks) == 2 * 2 * 2
    first = tasks[0]
    assert first.overrides == (
        ("parallel.tp", 1),
        ("parallel.replicas", 2),
        ("scheduler", {"policy": "vllm"}),
        ("seed", 1),
    )
    assert first.assignments[0] == 'cluster="dgx-a100"'
    assert "scheduler={policy: vllm}" in first.label
    assert tasks[3].overrides[:2] == (("parallel.tp", 1), ("parallel.replicas", 2))
    assert tasks[3].overrides[2][1] == {"policy": "sarathi", "chunk_size": 256}
    assert tasks[4].overrides[:2] == (("parallel.tp", 2), ("parallel.replicas", 1))
    # Ids are stable (the same inputs, the same id) and distinct.
    assert [t.task_id for t in expand_tasks(spec)] == [t.task_id for t in tasks]
    assert len({t.task_id for t in tasks}) == len(tasks)
    # A change of search options makes new tasks.
    cap = spec.model_copy(update={"task": "capacity"})
    assert {t.task_id for t in expand_tasks(cap)}.isdisjoint(t.task_id for t in tasks)


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"parallel.tp:parallel.pp": [[1, 2, 3]]}, "2 keys but value"),
        ({"parallel.tp:parallel.pp": [4]}, "vary together"),
        ({"a..b": [1]}, "empty key"),
    ],
)
def test_bad_grid_values_name_the_grid_key(grid, message):
    spec = SweepSpec.model_validate({"name": "x", "scenario": "s.yaml", "grid": grid})
    with pytest.raises(LlmsimError, match=message) as err:
        expand_tasks(spec)
    assert err.value.key is not None and err.value.key.startswith("grid.")


def test_a_key_set_and_varied_is_an_error():
    spec = SweepSpec.model_validate(
        {"name": "x", "scenario": "s.yaml", "set": {"seed": 1}, "grid": {"seed": [1, 2]}}
    )
    with pytest.raises(LlmsimError, match="seed is set or varied twice"):
        expand_tasks(spec)


# ------------------------------------------------------------------------ resume


def test_an_interrupted_sweep_resumes_and_matches_an_uninterrupted_one(tmp_path):
    whole = load_sweep(write_sweep(tmp_path, grid=GRID), tmp_path / "whole.sqlite")
    done = run_sweep(whole, jobs=1)
    assert (done.ran, done.skipped) == (4, 0)
    assert (done.rows["status"] == "ok").all()

    cut = load_sweep(tmp_path / "sweep.yaml", tmp_path / "cut.sqlite")
    seen: list[str] = []

    def crash_after_two(row):
        seen.append(row["task_id"])
        if len(seen) == 2:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        run_sweep(cut, jobs=1, on_row=crash_after_two)
    table = ResultsTable(cut.table)
    assert table.done_ids() == set(seen)  # both rows were committed before the crash
    table.close()

    ran: list[str] = []
    again = run_sweep(cut, jobs=1, on_row=lambda row: ran.append(row["task_id"]))
    assert (again.ran, again.skipped) == (2, 2)
    assert set(ran) == {t.task_id for t in cut.tasks} - set(seen)  # only the missing ones
    pd.testing.assert_frame_equal(comparable(again.rows), comparable(done.rows))

    third = run_sweep(cut, jobs=1)
    assert third.ran == 0 and third.skipped == 4


def test_a_process_pool_sweep_resumes_after_a_crash(tmp_path):
    sweep = load_sweep(write_sweep(tmp_path, grid=GRID))
    with pytest.raises(RuntimeError):
        run_sweep(sweep, jobs=2, on_row=lambda row: (_ for _ in ()).throw(RuntimeError()))
    table = ResultsTable(sweep.table)
    kept = table.done_ids()
    table.close()
    assert len(kept) == 1
    rest = run_sweep(sweep, jobs=2)
    assert (rest.ran, rest.skipped) == (3, 1)
    serial = run_sweep(load_sweep(tmp_path / "sweep.yaml", tmp_path / "serial.sqlite"), jobs=1)
    pd.testing.assert_frame_equal(comparable(rest.rows), comparable(serial.rows))


def test_cli_limit_runs_part_now_and_the_rest_later(tmp_path, capsys):
    path = write_sweep(tmp_path, grid=GRID)
    assert main(["sweep", str(path), "--limit", "1", "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "ran 1 now, 0 already" in out and "3 left (--limit)" in out
    assert main(["sweep", str(path), "--jobs", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (doc["ran"], doc["skipped"], len(doc["rows"])) == (3, 1, 4)
    goodputs = [r["goodput_rps"] for r in doc["rows"]]
    assert goodputs == sorted(goodputs, reverse=True)
    assert {r["overrides"]["parallel.tp"] for r in doc["rows"]} == {1, 2}


# ------------------------------------------------------------------------- tasks


def test_capacity_tasks_fill_the_capacity_columns_and_the_pareto_front(tmp_path, capsys):
    data = copy.deepcopy(QUICK)
    data["workload"] = {
        "requests": 120,
        "arrival": {"process": "constant", "rate": 10.0},
        "prompt": {"dist": "fixed", "value": 512},
        "output": {"dist": "fixed", "value": 1},
    }
    data["slo"] = {"e2e": "60 ms"}
    (tmp_path / "fixed.yaml").write_text(yaml.safe_dump(data))
    doc = {
        "name": "cap",
        "scenario": "fixed.yaml",
        "task": "capacity",
        "capacity": {"seeds": 1, "tolerance": 0.05},
        "grid": {"parallel.replicas": [1, 2]},
        "output": str(tmp_path / "cap.sqlite"),
    }
    path = tmp_path / "cap.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["sweep", str(path), "--jobs", "2"]) == 0
    out = capsys.readouterr().out
    assert "capacity req/s" in out and "Pareto front: capacity" in out
    table = ResultsTable(tmp_path / "cap.sqlite")
    rows = table.frame().set_index("overrides")
    table.close()
    one, two = rows.loc['{"parallel.replicas": 1}'], rows.loc['{"parallel.replicas": 2}']
    assert one["status"] == two["status"] == "ok"
    # Two replicas behind round-robin carry about twice the load.
    assert two["capacity_rps"] == pytest.approx(2 * one["capacity_rps"], rel=0.1)
    assert one["capacity_lo_rps"] <= one["capacity_rps"] <= one["capacity_hi_rps"]
    assert (one["devices"], two["devices"]) == (1, 2)
    assert "name: cap" not in one["scenario_yaml"] and "replicas: 1" in one["scenario_yaml"]
    with open(pareto_path(tmp_path / "cap.sqlite")) as f:
        front = list(csv.DictReader(f))
    assert 1 <= len(front) <= 2
    assert main(["sweep", str(path), "--max-cost", "0.001"]) == 0
    assert "(no row with both values)" in capsys.readouterr().out


def test_pareto_front_keeps_the_undominated_rows():
    rows = pd.DataFrame(
        {
            "task_id": list("abcdef"),
            "seq": range(6),
            "status": ["ok", "ok", "ok", "ok", "error", "ok"],
            "goodput_rps": [10.0, 12.0, 9.0, 20.0, 99.0, None],
            "usd_per_million_output_tokens": [1.0, 1.0, 2.0, 3.0, 0.1, 0.5],
        }
    )
    front = pareto_front(rows, "goodput_rps")
    assert front["task_id"].tolist() == ["b", "d"]  # a ties b on cost with less; c is beaten
    assert pareto_front(rows, "goodput_rps", max_cost=2.5)["task_id"].tolist() == ["b"]


# -------------------------------------------------------------------- executors


def test_ray_executor_matches_local(tmp_path):
    pytest.importorskip("ray", reason="the Ray executor needs the optional extra llmsim[ray]")
    sweep = load_sweep(write_sweep(tmp_path, grid={"parallel.tp": [1, 2]}))
    by_ray = run_sweep(sweep, executor="ray", jobs=2)
    assert by_ray.ran == 2 and (by_ray.rows["status"] == "ok").all()
    local = run_sweep(load_sweep(tmp_path / "sweep.yaml", tmp_path / "local.sqlite"), jobs=1)
    pd.testing.assert_frame_equal(comparable(by_ray.rows), comparable(local.rows))


def test_ray_executor_without_ray_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    path = write_sweep(tmp_path, grid={"parallel.tp": [1]})
    assert main(["sweep", str(path), "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "llmsim: error: --executor: the ray executor needs Ray: pip install 'llmsim[ray]'"
    assert not (tmp_path / "t.sqlite").exists()  # failed before touching the table


# ------------------------------------------------------------------- bad input


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("llmsim: error: ")
    return err


def test_unknown_sweep_key_is_one_line(tmp_path, capsys):
    path = write_sweep(tmp_path, grid=GRID, grdi={"seed": [1]})
    assert main(["sweep", str(path)]) == 2
    assert one_error_line(capsys).endswith(
        "sweep.yaml: grdi: unknown key; did you mean grid? valid keys: capacity, description, "
        "grid, list, name, output, scenario, set, task"
    )


def test_missing_scenario_file_is_one_line(tmp_path, capsys):
    path = write_sweep(tmp_path, grid=GRID)
    (tmp_path / "base.yaml").unlink()
    assert main(["sweep", str(path)]) == 2
    assert "sweep.yaml: scenario: file not found" in one_error_line(capsys)
    assert main(["sweep", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml: file not found" in one_error_line(capsys)


def test_a_grid_key_that_fails_everywhere_gives_error_rows(tmp_path, capsys):
    path = write_sweep(tmp_path, grid={"parallel.tpp": [1, 2]})
    assert main(["sweep", str(path), "--jobs", "1"]) == 1  # nothing succeeded
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.out.count("FAILED:") == 2
    assert "parallel.tpp: unknown key" in captured.out
    table = ResultsTable(tmp_path / "t.sqlite")
    rows = table.frame()
    table.close()
    assert rows["status"].tolist() == ["error", "error"]
    assert rows["error"].str.contains("parallel.tpp: unknown key").all()
    assert rows["scenario_yaml"].isna().all()


def test_other_bad_options(tmp_path, capsys):
    path = write_sweep(tmp_path, grid=GRID)
    assert main(["sweep", str(path), "--address", "auto"]) == 2
    assert "--address: --address is for --executor ray" in one_error_line(capsys)
    assert main(["sweep", str(path), "--jobs", "0"]) == 2
    assert "--jobs" in one_error_line(capsys)
    bad = write_sweep(tmp_path, grid=GRID, capacity={"seeds": 2})
    assert main(["sweep", str(bad)]) == 2
    assert "capacity options need task: capacity" in one_error_line(capsys)


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_sweeps_load_and_every_task_is_a_valid_scenario(path):
    from sim.plan import load_scenario

    sweep = load_sweep(path)
    assert sweep.tasks and sweep.table.name == f"{sweep.spec.name}.sqlite"
    for task in sweep.tasks:
        load_scenario(task.scenario_path, task.assignments)
