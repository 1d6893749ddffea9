"""Energy and power (sim.results.energy): idle draw over idle time, the TDP at full
utilisation, conservation over devices, joules per token, and the column in the run
table, compare and sweep."""

from __future__ import annotations

import copy
import csv
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml

from sim.cli.main import main
from sim.errors import LlmsimError
from sim.plan import load_scenario
from sim.results.energy import energy_joules
from sim.results.report import summary_table
from sim.results.run import simulate
from sim.spec import catalog
from sim.spec.hardware import DeviceSpec
from sim.studies.store import COLUMNS, ResultsTable
from tests.cli_helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
QUICK: dict[str, Any] = yaml.safe_load((ROOT / "scenarios" / "quickstart.yaml").read_text())
QUICK.pop("output")


def quick(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(QUICK)
    data["workload"]["requests"] = 12
    data.update(changes)
    return data


def a100() -> DeviceSpec:
    return catalog.device_of("a100-80gb-sxm")


# ------------------------------------------------------------------ the power model


def test_full_utilisation_draws_peak_and_idle_draws_idle():
    dev = a100()
    power = dev.power
    assert power is not None
    peak = dev.flops("bf16")
    seconds = 2.0
    full_compute = seconds * peak * dev.efficiency.compute
    full_memory = seconds * dev.memory_bandwidth_bytes_per_s * dev.efficiency.memory
    assert energy_joules(dev, peak, seconds, seconds, full_compute, 0.0) == pytest.approx(
        power.peak_watts * seconds
    )
    assert energy_joules(dev, peak, seconds, seconds, 0.0, full_memory) == pytest.approx(
        power.peak_watts * seconds
    )
    # more work than the busy time allows (calibrated kernels can beat the derating)
    assert energy_joules(dev, peak, seconds, seconds, 3 * full_compute, 0.0) == pytest.approx(
        power.peak_watts * seconds
    )
    assert energy_joules(dev, peak, seconds, 0.0, 0.0, 0.0) == power.idle_watts * seconds
    # busy half the time at full tilt: idle throughout plus the dynamic share for 1 s
    half = energy_joules(dev, peak, seconds, 1.0, full_compute / 2, 0.0)
    assert half == pytest.approx(power.idle_watts * 2 + (power.peak_watts - power.idle_watts))


def test_device_without_power_has_no_energy():
    dev = a100().model_copy(update={"power": None})
    assert energy_joules(dev, dev.flops("bf16"), 1.0, 1.0, 1.0, 1.0) is None


def test_power_parses_units_and_refuses_idle_above_peak():
    spec = a100().model_dump(by_alias=True)
    spec["power"] = {"idle": "0.1 kW", "peak": "700 W"}
    dev = DeviceSpec.model_validate(spec)
    assert dev.power is not None
    assert (dev.power.idle_watts, dev.power.peak_watts) == (100.0, 700.0)
    spec["power"] = {"idle": "800 W", "peak": "700 W"}
    with pytest.raises(ValueError, match="idle power 800 W is above peak 700 W"):
        DeviceSpec.model_validate(spec)
    spec["power"] = {"idle": "90 watts", "peak": "700 W"}
    with pytest.raises(ValueError, match="expected a power such as '700 W'"):
        DeviceSpec.model_validate(spec)


def test_every_gpu_and_tpu_has_power_with_a_source():
    for path in sorted((ROOT / "hardware" / "devices").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if raw["kind"] == "cpu":
            continue
        dev = DeviceSpec.model_validate(raw)
        assert dev.power is not None, path.name
        assert 0 < dev.power.idle_watts < dev.power.peak_watts, path.name
        assert "power" in dev.sources, path.name


# --------------------------------------------------------------------- runs


def test_an_idle_device_draws_idle_power_for_the_whole_run():
    # one request on two replicas: the second replica's GPU never works
    data = quick(parallel={"tp": 1, "replicas": 2})
    data["workload"]["requests"] = 1
    res = simulate(load_scenario(data))
    idle = res.devices[res.devices["busy_s"] == 0]
    assert len(idle) == 1
    power = a100().power
    assert power is not None
    assert idle["energy_j"].iloc[0] == pytest.approx(power.idle_watts * res.summary.sim_time_s)
    assert idle["power_w"].iloc[0] == pytest.approx(power.idle_watts)
    busy = res.devices[res.devices["busy_s"] > 0]
    assert (busy["power_w"] > power.idle_watts).all()
    assert (busy["power_w"] <= power.peak_watts).all()


def test_energy_is_conserved_and_per_token_is_energy_over_tokens():
    res = simulate(load_scenario(quick(parallel={"tp": 2, "replicas": 2})))
    s = res.summary
    e = s.energy
    assert len(res.devices) == 4
    assert e.joules == pytest.approx(res.devices["energy_j"].sum(), rel=1e-12)
    assert e.watts_mean == pytest.approx(e.joules / s.sim_time_s)
    out_tokens = res.requests.loc[res.requests["status"] == "finished", "output_tokens"].sum()
    assert e.joules_per_output_token == pytest.approx(e.joules / out_tokens)
    assert e.joules_per_request == pytest.approx(e.joules / s.finished)
    assert s.metric("energy.joules_per_output_token") == e.joules_per_output_token
    assert e.devices_without_power == []
    assert "J per output token" in summary_table(s)


def test_a_device_without_power_reports_no_energy_and_says_so():
    cluster = catalog.cluster_from_ref(QUICK["cluster"]).model_dump(by_alias=True)
    cluster["node"]["device"].pop("power")
    res = simulate(load_scenario(quick(cluster=cluster)))
    e = res.summary.energy
    assert (e.joules, e.joules_per_output_token) == (None, None)
    assert e.devices_without_power == ["a100-80gb-sxm"]
    assert res.devices["energy_j"].isna().all()
    assert "energy: not reported (a100-80gb-sxm has no power in the catalog)" in summary_table(
        res.summary
    )
    assert json.loads(json.dumps(res.summary.to_dict()))["energy"]["joules"] is None


# ----------------------------------------------------------------- compare, sweep


def test_compare_shows_joules_per_token(capsys, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(quick()))
    code, out, _ = run_cli(
        capsys, "compare", str(path), "--vary", "parallel.tp=1,2", "--jobs", "1",
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0
    header = next(line for line in out.splitlines() if line.lstrip().startswith("#"))
    assert "$/M tok" in header and header.rstrip().endswith("J/tok")
    with open(tmp_path / "out" / "compare.csv") as f:
        rows = list(csv.DictReader(f))
    doc = json.loads((tmp_path / "out" / "compare.json").read_text())
    for row, variant in zip(rows, doc["variants"], strict=True):
        joules = variant["summary"]["energy"]["joules_per_output_token"]
        assert joules > 0 and float(row["joules_per_output_token"]) == pytest.approx(joules)


def test_sweep_rows_and_pareto_front_carry_joules_per_token(capsys, tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(quick()))
    doc = {
        "name": "e",
        "scenario": "base.yaml",
        "grid": {"parallel.tp": [1, 2]},
        "output": str(tmp_path / "e.sqlite"),
    }
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(doc))
    assert main(["sweep", str(tmp_path / "sweep.yaml"), "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("J/tok") == 2  # the ranked rows and the Pareto front
    with open(tmp_path / "e.pareto.csv") as f:
        front = list(csv.DictReader(f))
    assert front and all(float(r["joules_per_output_token"]) > 0 for r in front)


def test_a_sweep_table_from_before_the_energy_column_gains_it(tmp_path):
    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(str(path))
    conn.execute(f"CREATE TABLE tasks ({', '.join(f'{n} {t}' for n, t in COLUMNS[:-1])})")
    conn.commit()
    conn.close()
    table = ResultsTable(path)
    table.write({"task_id": "a", "seq": 0, "status": "ok", "joules_per_output_token": 0.5})
    assert table.frame()["joules_per_output_token"].tolist() == [0.5]
    table.close()
    conn = sqlite3.connect(str(path))
    conn.execute("CREATE TABLE other (x REAL)")
    conn.execute("ALTER TABLE tasks DROP COLUMN wall_s")
    conn.commit()
    conn.close()
    with pytest.raises(LlmsimError, match="other columns"):
        ResultsTable(path)
