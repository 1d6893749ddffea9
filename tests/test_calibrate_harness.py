"""`llmsim calibrate` on the CPU, its bad-input lines, and the reference decoder."""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import io
import sys
from pathlib import Path

import pytest
import yaml

from sim.arith.ops import layer_plan
from sim.arith.params import total_params
from sim.cli.main import main
from sim.spec.catalog import load_model
from sim.spec.model import ModelSpec
from sim.spec.profile import Profile

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(
    not HAS_TORCH, reason="PyTorch is not installed (the `calibrate` extra)"
)

TINY_LLAMA = ModelSpec(
    name="tiny-llama",
    n_layers=2,
    d_model=256,
    n_heads=8,
    n_kv_heads=2,
    d_ff=688,
    mlp="gated",
    activation="silu",
    norm="rmsnorm",
    vocab_size=1000,
    max_seq_len=2048,
    position="rotary",
)
TINY_GPT = ModelSpec(
    name="tiny-gpt",
    n_layers=2,
    d_model=192,
    n_heads=6,
    d_ff=768,
    bias=True,
    vocab_size=1000,
    max_seq_len=512,
    position="learned",
    tied_embeddings=True,
)
TINY_PARALLEL = ModelSpec(
    name="tiny-parallel",
    n_layers=1,
    d_model=128,
    n_heads=4,
    n_kv_heads=1,
    d_ff=512,
    mlp="gated",
    activation="geglu",
    parallel_block=True,
    qkv_bias=True,
    vocab_size=500,
    max_seq_len=512,
)


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------- the quick run


@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> tuple[Profile, str, Path]:
    path = tmp_path_factory.mktemp("calibrate") / "tmp" / "p.yaml"
    # One thread: CI runs two test workers on two cores, and oversubscribed OpenMP
    # threads make CPU timings erratic.
    code, _, err = run_cli(
        "calibrate", "--device", "cpu", "--quick", "--threads", "1", "--out", str(path)
    )
    assert code == 0, err
    profile = Profile.model_validate(yaml.safe_load(path.read_text()))
    return profile, err, path


# How long --quick takes ("well under a minute" on a 2-core CPU, says the CLI) is a
# figure of bench/component_speed.py, not a pass/fail here: a busy machine is slow.
@needs_torch
def test_quick_cpu_run_reports_each_family(quick):
    _, err, path = quick
    for family in ("gemm", "attention", "elementwise", "launch", "copy"):
        assert f"calibrate: {family}:" in err
    assert "Traceback" not in err
    assert path.exists()


@needs_torch
def test_quick_profile_has_positive_ordered_timings(quick):
    profile = quick[0]
    m = profile.measurements
    assert m.gemm and m.attention and m.elementwise and m.copies
    assert m.launch_s is not None and m.launch_s > 0
    for point in (*m.gemm, *m.attention, *m.elementwise, *m.copies):
        assert point.median_s > 0
        assert point.p10_s is not None and point.p90_s is not None
        assert point.p10_s <= point.median_s <= point.p90_s
    assert {p.phase for p in m.attention} == {"prefill", "decode"}
    assert all(p.q_len == 1 for p in m.attention if p.phase == "decode")
    assert all(p.q_len == p.kv_len for p in m.attention if p.phase == "prefill")
    assert {p.op for p in m.elementwise} == {"norm", "act", "rotary", "add", "embedding"}


@needs_torch
def test_quick_profile_shapes_come_from_the_layer_plan(quick):
    profile = quick[0]
    model = load_model("gpt3-125m")
    plan = layer_plan(model, 1)
    expected = {(op.n, op.k) for op in plan.ops if op.kind == "gemm"}
    expected.add((model.vocab_size, model.d_model))  # the LM head
    measured = {(p.n, p.k) for p in profile.measurements.gemm}
    assert measured == expected
    assert {p.m for p in profile.measurements.gemm} == {1, 2, 8, 64, 256}
    attn = next(op for op in plan.ops if op.kind == "attn_prefill")
    assert {(p.heads, p.kv_heads, p.head_dim) for p in profile.measurements.attention} == {
        (attn.heads, attn.kv_heads, attn.head_dim)
    }


@needs_torch
def test_quick_profile_names_device_and_environment(quick):
    import torch

    profile = quick[0]
    assert profile.device == "cpu-calibrated"
    assert profile.dtype == "fp32"
    assert profile.name == "cpu-calibrated-fp32"
    env = profile.environment
    assert env.torch == torch.__version__
    assert env.device_name and env.python and env.host
    assert dt.datetime.fromisoformat(env.date).tzinfo is not None
    assert "--quick" in profile.source
    assert "scaled_dot_product_attention" in profile.description


@needs_torch
def test_quick_profile_is_fitted_when_the_fit_exists(quick):
    profile, err, _ = quick
    assert "the fit failed" not in err
    assert profile.fit.gemm is not None


# ------------------------------------------------------------------------ bad input


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("llmsim: error: ")
    return lines[0]


@needs_torch
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--device", "tpu"], "unknown device 'tpu'; expected cpu, cuda or cuda:N"),
        (["--device", "cpu:1"], "unknown device"),
        (["--models", "nope"], "--models: unknown model 'nope'"),
        (["--models", ","], "--models: give at least one model name"),
        (["--models", "llama-3-8b", "--tp", "3"], "--tp: 3 does not divide n_heads=32"),
        (["--tp", "two"], "--tp: expected comma-separated integers"),
        (["--threads", "0"], "--threads: must be at least 1"),
        (["--collectives"], "--collectives: needs --device cuda and 2 or more GPUs"),
        (["--dtype", "fp8"], "--dtype: unknown dtype 'fp8'; valid: fp32, bf16, fp16"),
        (["--catalog-device", "nope"], "--catalog-device: unknown device 'nope'"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, expected):
    out = tmp_path / "p.yaml"
    code, _, err = run_cli("calibrate", "--device", "cpu", "--quick", "--out", str(out), *args)
    assert code == 2
    assert expected in one_error_line(err)
    assert not out.exists()


@needs_torch
def test_cuda_without_cuda_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = run_cli("calibrate", "--device", "cuda:0", "--out", str(tmp_path / "p.yaml"))
    assert code == 2
    assert "--device: CUDA is not available" in one_error_line(err)


@needs_torch
def test_unwritable_out_fails_before_measuring(tmp_path, monkeypatch):
    from sim.calibrate import harness

    measured: list[object] = []
    monkeypatch.setattr(harness, "calibrate", lambda *args, **kw: measured.append(args))
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    code, _, err = run_cli(
        "calibrate", "--device", "cpu", "--quick", "--out", str(blocker / "p.yaml")
    )
    assert code == 2
    line = one_error_line(err)
    assert str(blocker / "p.yaml") in line and "cannot write the profile" in line
    assert measured == []  # it failed before measuring anything


def test_missing_torch_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    code, _, err = run_cli("calibrate", "--device", "cpu", "--out", str(tmp_path / "p.yaml"))
    assert code == 2
    line = one_error_line(err)
    assert "pip install 'llmsim[calibrate]'" in line
    assert "torch==2.13.0" in line


# ----------------------------------------------------------------------- the harness


@needs_torch
def test_measure_orders_percentiles_and_counts_calls():
    import torch

    from sim.calibrate.timing import measure

    calls = []
    median, p10, p90 = measure(
        lambda: calls.append(1), torch.device("cpu"), warmup=2, repeats=7, calls=3
    )
    assert len(calls) == 2 + 7 * 3
    assert 0 < p10 <= median <= p90


@needs_torch
def test_parse_device():
    from sim.calibrate.grids import parse_device
    from sim.errors import LlmsimError

    assert parse_device("cpu") == ("cpu", None)
    assert parse_device("cuda") == ("cuda", None)
    assert parse_device("CUDA:3") == ("cuda", 3)
    for bad in ("tpu", "cuda:", "cuda:x", "mps", "cpu:0"):
        with pytest.raises(LlmsimError, match="unknown device"):
            parse_device(bad)


@needs_torch
def test_measured_device_spec_is_the_best_seen(quick):
    from sim.calibrate.environment import measured_device_spec

    m = quick[0].measurements
    spec = measured_device_spec("cpu-calibrated", "cpu", m, "fp32", 16e9)
    best = max(2 * p.m * p.n * p.k / p.median_s for p in m.gemm)
    assert spec.flops("fp32") == pytest.approx(best)
    assert spec.memory_bandwidth_bytes_per_s > 0
    assert spec.launch_overhead_s == pytest.approx(m.launch_s)


@needs_torch
def test_collectives_over_gloo_on_localhost():
    """The spawn / process-group / timing path of the NCCL benchmark, on CPU with gloo."""
    from sim.calibrate.collectives import measure_collectives

    points = measure_collectives(
        world=2, sizes=(1024, 8192), backend="gloo", warmup=1, repeats=3, fabric="loopback"
    )
    assert {p.op for p in points} == {
        "all_reduce",
        "all_gather",
        "reduce_scatter",
        "all_to_all",
        "send_recv",
    }
    assert all(p.n_devices == 2 and p.fabric == "loopback" for p in points)
    assert {p.bytes for p in points} == {1024, 8192}
    assert all(0 < p.p10_s <= p.median_s <= p.p90_s for p in points)  # type: ignore[operator]


# -------------------------------------------------------------- the reference decoder


@pytest.fixture
def one_thread():
    """Two test workers share two cores in CI: one torch thread each keeps them apart."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@needs_torch
@pytest.mark.parametrize("spec", [TINY_LLAMA, TINY_GPT, TINY_PARALLEL], ids=lambda s: s.name)
def test_reference_decoder_has_the_models_parameters(spec):
    from sim.calibrate.reference import build_decoder

    decoder = build_decoder(spec)
    assert sum(p.numel() for p in decoder.parameters()) == total_params(spec)


@needs_torch
@pytest.mark.parametrize("spec", [TINY_LLAMA, TINY_GPT, TINY_PARALLEL], ids=lambda s: s.name)
def test_reference_decoder_matmuls_are_the_layer_plan(spec):
    """Every gemm of the plan is a Linear of the same (n, k) under the same name."""
    from sim.calibrate.reference import build_decoder

    layer = build_decoder(spec).layers[0]
    plan = layer_plan(spec, 1)
    linears = {
        name: tuple(mod.weight.shape)
        for name, mod in layer.named_children()
        if mod.__class__.__name__ == "Linear"
    }
    assert linears == {op.name: (op.n, op.k) for op in plan.ops if op.kind == "gemm"}


@needs_torch
def test_reference_prefill_and_decode_take_positive_time(one_thread):
    from sim.calibrate.reference import measure_decode_step, measure_prefill

    assert measure_prefill(TINY_LLAMA, batch=2, prompt=16) > 0
    assert measure_decode_step(TINY_LLAMA, batch=2, context=16) > 0
    assert measure_decode_step(TINY_GPT, batch=2, context=16, repeats=2) > 0


@needs_torch
def test_reference_decode_matches_a_prefill_of_the_same_tokens(one_thread):
    """The cache path computes what a full causal pass does (the same architecture)."""
    import torch

    from sim.calibrate.reference import build_decoder

    decoder = build_decoder(TINY_LLAMA, seed=1)
    ids = torch.randint(0, TINY_LLAMA.vocab_size, (2, 9))
    with torch.inference_mode():
        full = decoder(ids, decoder.new_cache(2, 9), 0)
        cache = decoder.new_cache(2, 9)
        decoder(ids[:, :8], cache, 0)
        step = decoder(ids[:, 8:], cache, 8)
    torch.testing.assert_close(step, full, rtol=1e-4, atol=1e-4)


@needs_torch
def test_reference_decoder_refuses_what_it_does_not_build():
    from sim.calibrate.reference import build_decoder
    from sim.errors import LlmsimError

    with pytest.raises(LlmsimError, match="no MoE"):
        build_decoder(load_model("mixtral-8x7b").model_copy(update={"n_layers": 1}))
    with pytest.raises(LlmsimError, match="position 'alibi'"):
        build_decoder(TINY_LLAMA.model_copy(update={"position": "alibi"}))
