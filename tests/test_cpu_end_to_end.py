"""The whole calibrate → predict path on real hardware: this machine's CPU.

1. `llmsim calibrate --device cpu --quick` measures this CPU (its GEMMs at the shapes
   of a small decoder, attention, element-wise ops) and fits a profile.
2. A real small decoder (PyTorch, random weights, the same architecture) runs prefill
   and decode on the CPU, timed.
3. llmsim simulates the same model and batch on the calibrated CPU device, through the
   ordinary scenario → engine path; the simulated TTFT and TPOT must be within 25% of
   the measured prefill and decode-step latencies.

It measures wall time, so `make test` runs it alone after the parallel suite (marker
`timing`): two tests timing the same two cores would disturb each other.
"""

from __future__ import annotations

import pytest
import yaml

torch = pytest.importorskip("torch", reason="the calibrate extra (PyTorch) is not installed")

from sim.calibrate.reference import measure_decode_step, measure_prefill  # noqa: E402
from sim.cli.main import main  # noqa: E402
from sim.plan import load_scenario  # noqa: E402
from sim.results.run import simulate  # noqa: E402
from sim.spec import catalog  # noqa: E402

TOY = {
    "name": "toy-llama",
    "n_layers": 4,
    "d_model": 512,
    "n_heads": 8,
    "n_kv_heads": 4,
    "d_ff": 1408,
    "mlp": "gated",
    "activation": "silu",
    "norm": "rmsnorm",
    "vocab_size": 8192,
    "max_seq_len": 1024,
    "position": "rotary",
}
BATCH, PROMPT, OUTPUT = 2, 64, 33
TOLERANCE = 0.25


@pytest.fixture
def calibrated(tmp_path, monkeypatch):
    model_path = tmp_path / "toy-llama.yaml"
    model_path.write_text(yaml.safe_dump(TOY))
    profile = tmp_path / "hardware" / "calibration" / "cpu-e2e.yaml"
    code = main(
        [
            "calibrate",
            "--device",
            "cpu",
            "--quick",
            "--threads",
            "1",
            "--models",
            str(model_path),
            "--name",
            "cpu-e2e",
            "--out",
            str(profile),
        ]
    )
    assert code == 0
    monkeypatch.setenv("LLMSIM_CATALOG_PATH", str(tmp_path))
    catalog.clear_cache()
    yield model_path, yaml.safe_load(profile.read_text())
    monkeypatch.delenv("LLMSIM_CATALOG_PATH")
    catalog.clear_cache()


@pytest.mark.timing
def test_simulated_latency_matches_a_real_decoder_on_this_cpu(calibrated):
    model_path, profile = calibrated
    device = profile["device_spec"]["name"]
    assert catalog.load_device(device).calibration == "cpu-e2e"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as calibrated
    try:
        spec = catalog.load_model(str(model_path))
        prefill = measure_prefill(spec, BATCH, PROMPT, "fp32", "cpu", repeats=7)
        context = PROMPT + OUTPUT // 2
        decode = measure_decode_step(spec, BATCH, context, "fp32", "cpu", repeats=7)
    finally:
        torch.set_num_threads(threads)

    scenario = load_scenario(
        {
            "name": "cpu-e2e",
            "cluster": {
                "name": "this-cpu",
                "nodes": 1,
                "node": {
                    "name": "this-cpu",
                    "device": device,
                    "devices_per_node": 1,
                    "fabric": {"kind": "none"},
                    "pcie": {"bandwidth": "10 GB/s"},
                    "host": {"dram": "16 GB"},
                },
            },
            "model": str(model_path),
            "precision": {"weights": "fp32", "activations": "fp32", "kv": "fp32"},
            "scheduler": {
                "policy": "static",
                "batch_size": BATCH,
                "padding": "packed",
                "max_wait": 0,
                "gpu_memory_utilization": 0.5,
            },
            "workload": {
                "requests": BATCH,
                "arrival": {"process": "burst"},
                "prompt": {"dist": "fixed", "value": PROMPT},
                "output": {"dist": "fixed", "value": OUTPUT},
            },
            "engine": {"cost": "calibrated"},
        }
    )
    summary = simulate(scenario).summary
    ttft, tpot = summary.ttft_s.p50, summary.tpot_s.p50
    assert ttft == pytest.approx(prefill, rel=TOLERANCE), (ttft, prefill)
    assert tpot == pytest.approx(decode, rel=TOLERANCE), (tpot, decode)
