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
HAS_TRANSFORMERS = importlib.util.find_spec("transformers") is not None
needs_transformers = pytest.mark.skipif(
    not (HAS_TORCH and HAS_TRANSFORMERS),
    reason="PyTorch or transformers is not installed (the `calibrate` extra)",
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
    for family in ("gemm", "attention", "elementwise", "launch", "copy", "runtime"):
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
def test_quick_profile_measures_the_runtime(quick):
    profile = quick[0]
    rt = profile.runtime
    assert rt is not None
    assert rt.host_step_s.eager is not None and rt.host_step_s.eager > 0
    assert rt.host_layer_s.eager is not None and rt.host_layer_s.eager > 0
    assert rt.kernels_per_layer is not None and rt.kernels_per_layer > 5
    assert rt.kernel_launch_s == profile.measurements.launch_s
    assert rt.host_step_s.compiled is None  # --quick does not compile
    assert "compiled: not measured (--quick)" in rt.notes
    assert rt.graph_launch_s is None and any("no CUDA graphs" in n for n in rt.notes)
    assert "reference decoder" in rt.decoder
    # no hf forms without --hf
    m = profile.measurements
    assert all(p.form is None for p in (*m.gemm, *m.attention, *m.elementwise))
    assert profile.fit.hf == {} and all(f.form is None for f in profile.fit.attention_shapes)


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
        (
            ["--runtime-out", "rt.yaml", "--runtime-base", "nope"],
            "--runtime-base: unknown runtime 'nope'",
        ),
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


# -------------------------------------------------------------- the runtime family


@needs_torch
def test_measure_with_a_budget_takes_fewer_samples_of_a_slow_call():
    import time

    import torch

    from sim.calibrate.timing import measure

    calls = []

    def slow() -> None:
        calls.append(1)
        time.sleep(0.15)  # at least this long: past the budget

    measure(slow, torch.device("cpu"), warmup=2, repeats=7, calls=1, budget_s=0.1)
    assert len(calls) == 1 + 2  # one warm-up, two samples
    fast: list[int] = []
    measure(lambda: fast.append(1), torch.device("cpu"), warmup=2, repeats=7, calls=3, budget_s=60)
    assert len(fast) == 2 + 7 * 3  # well within the budget: as without one


def _cpu_run(**options: object):
    from sim.calibrate.grids import Options, resolve

    return resolve(Options(device="cpu", quick=True, models=("gpt3-125m",), **options))  # type: ignore[arg-type]


@needs_torch
def test_a_compiler_that_fails_is_a_note_not_an_error():
    from sim.calibrate.runtime import measure_compiled

    def broken(module: object) -> object:
        raise RuntimeError("no C++ compiler found\nmore detail")

    seconds, note = measure_compiled(_cpu_run(), compile_fn=broken)
    assert seconds is None
    assert note == "compiled: torch.compile failed here (RuntimeError: no C++ compiler found)"


@needs_torch
def test_the_compiled_step_is_timed_through_the_compiler_given(one_thread):
    from sim.calibrate.runtime import measure_compiled

    compiled: list[object] = []

    def identity(module: object) -> object:  # stands in for torch.compile
        compiled.append(module)
        return module

    seconds, note = measure_compiled(_cpu_run(), compile_fn=identity)
    assert note == "" and seconds is not None and seconds > 0
    assert len(compiled) == 1


@needs_torch
def test_no_compile_skips_the_compiled_step_and_says_so(one_thread):
    from sim.calibrate.grids import Options, resolve
    from sim.calibrate.runtime import measure_host

    run = resolve(Options(device="cpu", models=("gpt3-125m",), compile=False))
    step, layer, kernels, notes = measure_host(run, compiled=False)
    assert step.compiled is None and notes == ["compiled: not measured (--no-compile)"]
    assert step.eager is not None and layer.eager is not None and kernels > 5


def test_the_recorded_command_reproduces_the_runtime_options():
    import argparse

    from sim.cli.calibrate import _command

    ns = argparse.Namespace(
        device="cpu",
        dtype="bf16",
        models=None,
        tp=None,
        name=None,
        catalog_device=None,
        threads=1,
        quick=False,
        collectives=False,
        hf=True,
        no_compile=True,
    )
    expected = "llmsim calibrate --device cpu --dtype bf16 --threads 1 --hf --no-compile"
    assert _command(ns) == expected


class _FakeGraph:
    """Stands in for torch.cuda.CUDAGraph: records what a capture issued."""

    def __init__(self) -> None:
        self.kernels = 0

    def replay(self) -> None:
        pass


class _FakeCuda:
    """What measure_graph_launch uses of torch.cuda, on a machine without CUDA."""

    CUDAGraph = _FakeGraph

    class Stream:
        def wait_stream(self, other: object) -> None:
            pass

    def __init__(self) -> None:
        self.graphs: list[_FakeGraph] = []

    def current_stream(self) -> _FakeCuda.Stream:
        return _FakeCuda.Stream()

    @contextlib.contextmanager
    def stream(self, s: object):
        yield

    @contextlib.contextmanager
    def graph(self, g: _FakeGraph):
        import torch

        seen = []
        original = torch.Tensor.add_

        def counting(t, *a, **k):
            seen.append(1)
            return original(t, *a, **k)

        torch.Tensor.add_ = counting  # type: ignore[method-assign]
        try:
            yield
        finally:
            torch.Tensor.add_ = original  # type: ignore[method-assign]
            g.kernels = len(seen)
            self.graphs.append(g)


@needs_torch
def test_graph_launch_replays_graphs_of_one_and_many_kernels():
    from sim.calibrate.runtime import GRAPH_KERNELS, measure_graph_launch

    cuda = _FakeCuda()
    replays: list[int] = []

    def timer(fn, device, **kw):
        graph = fn.__self__
        replays.append(graph.kernels)
        t = 5e-6 + 1e-6 * (graph.kernels - 1)  # 5 us a graph, 1 us each further kernel
        return t, t, t

    launch, per_kernel = measure_graph_launch(_cpu_run(), cuda=cuda, timer=timer)
    assert [g.kernels for g in cuda.graphs] == [1, GRAPH_KERNELS]
    assert replays == [1, GRAPH_KERNELS]
    assert launch == pytest.approx(5e-6) and per_kernel == pytest.approx(1e-6)


@needs_torch
def test_graph_launch_on_cuda():
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA here: the stand-in test above covers the code path")
    from sim.calibrate.grids import Options, resolve
    from sim.calibrate.runtime import measure_graph_launch

    run = resolve(Options(device="cuda", quick=True, models=("gpt3-125m",)))
    launch, per_kernel = measure_graph_launch(run)
    assert launch > 0 and per_kernel > 0


@needs_torch
def test_kernels_are_counted_without_views():
    import torch

    from sim.calibrate.runtime import count_kernels

    x = torch.ones(4, 4)
    assert count_kernels(lambda: (x + 1).view(16).transpose(0, 0) * 2) == 2


# ------------------------------------------------------------------- the hf forms


@pytest.fixture(scope="module")
def quick_hf(tmp_path_factory) -> tuple[Profile, Path, str]:
    root = tmp_path_factory.mktemp("calibrate-hf")
    models = []
    for spec in (TINY_LLAMA, TINY_GPT):
        path = root / f"{spec.name}.yaml"
        path.write_text(yaml.safe_dump(spec.model_dump(mode="json", exclude_none=True)))
        models.append(str(path))
    out, rt = root / "p.yaml", root / "runtimes" / "tiny-hf-eager.yaml"
    code, stdout, err = run_cli(
        *("calibrate", "--device", "cpu", "--quick", "--threads", "1", "--hf"),
        *("--models", ",".join(models), "--out", str(out)),
        *("--runtime-out", str(rt), "--runtime-base", "hf-eager"),
    )
    assert code == 0, err
    assert f"wrote {rt}: runtime tiny-hf-eager" in stdout
    return Profile.model_validate(yaml.safe_load(out.read_text())), rt, err


@needs_transformers
def test_hf_forms_are_measured_per_model_shape(quick_hf):
    import transformers

    profile, _, err = quick_hf
    assert "calibrate: hf:" in err and "Traceback" not in err
    assert profile.environment.transformers == transformers.__version__
    m = profile.measurements
    hf_shapes = {(p.heads, p.kv_heads, p.head_dim) for p in m.attention if p.form == "hf"}
    assert hf_shapes == {(8, 2, 32), (6, 6, 32)}
    assert {p.phase for p in m.attention if p.form == "hf"} == {"prefill", "decode"}
    # GPT-2's four Conv1D GEMMs; Llama's Q and K/V projections as Linear shapes
    gpt = layer_plan(TINY_GPT, 1)
    conv = {(p.n, p.k) for p in m.gemm if p.form == "conv1d"}
    assert conv == {
        (op.n, op.k) for op in gpt.ops if op.name in ("qkv_proj", "o_proj", "mlp_up", "mlp_down")
    }
    linear = {(p.n, p.k) for p in m.gemm if p.form is None}
    assert {(TINY_LLAMA.q_dim, 256), (TINY_LLAMA.kv_dim, 256)} <= linear
    kernels = {p.kernel for p in m.elementwise if p.form == "hf"}
    assert kernels == {"rmsnorm", "layernorm", "silu_and_mul", "gelu_new", "rotary", "kv_cat"}
    fits = profile.fit
    assert set(fits.hf) == kernels
    assert {(f.heads, f.kv_heads, f.head_dim, f.form) for f in fits.attention_shapes} == {
        (8, 2, 32, None),
        (6, 6, 32, None),
        (8, 2, 32, "hf"),
        (6, 6, 32, "hf"),
    }
    # the one-kernel fits are fitted to the one-kernel points only
    assert fits.attention is not None and "hf" not in fits.attention.source


@needs_transformers
def test_runtime_out_writes_a_runtime_that_loads(quick_hf):
    from sim.spec import catalog

    profile, path, _ = quick_hf
    text = path.read_text()
    assert text.startswith("# Host and launch times measured by `llmsim calibrate")
    runtime = catalog.load_runtime(str(path))
    assert runtime.name == "tiny-hf-eager"
    assert runtime.engine == catalog.load_runtime("hf-eager").engine  # behaves as its base
    rt = profile.runtime
    assert rt is not None and rt.host_layer_s.eager is not None
    assert runtime.kernel_launch_s == rt.kernel_launch_s
    # An hf-eager base takes transformers' own step (its layers are priced per layer by
    # sim.cost.hf_eager), the mean over the families measured, not the probe decoder's.
    assert set(rt.hf) == {"gpt2", "llama"}
    mean_step = (rt.hf["gpt2"].step_s + rt.hf["llama"].step_s) / 2
    assert runtime.host.fixed_s == pytest.approx(mean_step, rel=1e-12)
    assert "small transformers model" in runtime.sources["host"]
    for key in ("host", "kernel_launch"):
        assert "llmsim calibrate" in runtime.sources[key]
    # A bare base: the probe decoder's step less its two layers.
    from sim.calibrate.runtime import runtime_file

    bare = runtime_file(profile, "bare-measured", catalog.load_runtime("bare"))
    assert bare["host"]["fixed"] == pytest.approx(
        max(rt.host_step_s.eager - 2 * rt.host_layer_s.eager, 0.0)  # type: ignore[operator]
    )
    assert "probe decoder" in bare["sources"]["host"]


@needs_transformers
def test_hf_forms_run_the_kernels_transformers_runs(one_thread):
    """gelu_new is eight kernels, LlamaRMSNorm six in fp32, rotary ten, the cache append
    two; grouped heads reach SDPA with enable_gqa, as transformers sends them."""
    import torch
    import torch.nn.functional as F

    from sim.calibrate import hf
    from sim.calibrate.runtime import count_kernels

    run = _cpu_run()
    assert count_kernels(hf._act_fn(run, "gelu_new", 4, 64)) == 8
    assert count_kernels(hf._norm_fn(run, "rmsnorm", 4, 64)) == 6
    assert count_kernels(hf._rotary_fn(run, 4, h=8, hk=2, d=32)) == 10
    assert count_kernels(hf._kv_cat_fn(run, 2, 16, 2, 32)) == 2
    seen: list[dict[str, object]] = []
    original = F.scaled_dot_product_attention

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(kwargs)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    torch.nn.functional.scaled_dot_product_attention = spy  # type: ignore[assignment]
    try:
        hf._hf_decode_fn(run, 2, 16, 8, 2, 32)()
        hf._hf_prefill_fn(run, 2, 16, 8, 2, 32)()
        hf._hf_decode_fn(run, 2, 16, 6, 6, 32)()
    finally:
        torch.nn.functional.scaled_dot_product_attention = original
    assert [k.get("enable_gqa", False) for k in seen] == [True, True, False]
    assert [k.get("is_causal") for k in seen] == [False, True, False]


def test_hf_without_transformers_is_one_line(tmp_path, monkeypatch):
    if not HAS_TORCH:
        pytest.skip("the torch check comes first")
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now fails
    code, _, err = run_cli(
        "calibrate", "--device", "cpu", "--quick", "--hf", "--out", str(tmp_path / "p.yaml")
    )
    assert code == 2
    assert "--hf: transformers is not installed" in one_error_line(err)
