"""The hf-eager runtimes' prices (sim.cost.hf_eager), the per-shape attention curves of
the calibrated kernel, and bench/hf_cpu.py run at one tiny size.

The kernel tests build profiles by hand (no PyTorch); the bench test needs the
calibrate extra (PyTorch and transformers) and is skipped without it.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from sim.arith.ops import Op, Work, layer_plan
from sim.arith.precision import Precision
from sim.cost.calibrated import CalibratedKernel, pick_attention
from sim.cost.hf_eager import HfEagerKernel, hf_family, hf_kernels, is_hf_eager, runtime_kernel
from sim.cost.roofline import RooflineKernel
from sim.cost.stage import StageCost
from sim.spec import catalog
from sim.spec.hardware import DeviceSpec
from sim.spec.model import ModelSpec
from sim.spec.profile import (
    AttentionFit,
    Curve,
    Fit,
    GemmFit,
    GemmPoint,
    Measurements,
    Profile,
    StreamFit,
    Surface,
)
from sim.spec.runtime import RuntimeSpec

HAS_EXTRA = all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))
needs_extra = pytest.mark.skipif(
    not HAS_EXTRA, reason="PyTorch or transformers is not installed (the `calibrate` extra)"
)

CPU = DeviceSpec.model_validate(
    {
        "name": "test-cpu",
        "kind": "cpu",
        "peak_flops": {"fp32": 1e11},
        "memory_bytes": 16e9,
        "memory_bandwidth": 2e10,
        "launch_overhead": 3e-6,
        "efficiency": {"compute": 1.0, "memory": 1.0},
    }
)
FP32 = Precision("fp32", "fp32", "fp32")
LLAMA = ModelSpec(
    name="small-llama",
    n_layers=4,
    d_model=512,
    n_heads=8,
    n_kv_heads=2,
    d_ff=1408,
    mlp="gated",
    activation="silu",
    norm="rmsnorm",
    vocab_size=32000,
    max_seq_len=2048,
    position="rotary",
)
GPT2 = ModelSpec(
    name="gpt2",
    n_layers=12,
    d_model=768,
    n_heads=12,
    d_ff=3072,
    bias=True,
    vocab_size=50257,
    max_seq_len=1024,
    position="learned",
    tied_embeddings=True,
)


def flat(value: float) -> Curve:
    return Curve(log2_x=(0.0, 40.0), y=(value, value))


def stream(launch: float, eff: float) -> StreamFit:
    return StreamFit(launch_s=launch, efficiency=flat(eff))


def attention(eff: float, launch: float, **key: object) -> AttentionFit:
    return AttentionFit(
        prefill_launch_s=launch,
        prefill_compute=flat(eff),
        decode_launch_s=launch,
        decode_memory=flat(eff),
        **key,  # type: ignore[arg-type]
    )


def profile(hf: bool = True) -> Profile:
    """A CPU profile with a one-kernel fit of every family and, with `hf`, the forms
    transformers runs: slower norms and activations, a KV append, per-shape attention
    (MHA and GQA), and GPT-2's Conv1D GEMMs twice nn.Linear's time."""
    linear = [GemmPoint(m=m, n=n, k=768, median_s=1e-3 * m) for n in (2304, 768) for m in (1, 64)]
    conv1d = [
        GemmPoint(m=m, n=n, k=768, median_s=2e-3 * m, form="conv1d")
        for n in (2304, 768)
        for m in (1, 64)
    ]
    one_kernel = stream(5e-6, 0.5)
    surface = Surface(lo=(0.0, 6.0, 6.0), step=1.0, shape=(2, 2, 2), values=(1.0,) * 8)
    fit = Fit(
        gemm=GemmFit(surface=surface, peak_flops=1e11, bandwidth_bytes_per_s=2e10),
        norm=one_kernel,
        act=one_kernel,
        rotary=one_kernel,
        add=one_kernel,
        embedding=one_kernel,
        attention=attention(0.5, 1e-5),
        attention_shapes=(
            attention(0.4, 1e-5, heads=8, kv_heads=2, head_dim=64),
            *(
                (
                    attention(0.05, 3e-5, heads=8, kv_heads=2, head_dim=64, form="hf"),
                    attention(0.2, 3e-5, heads=12, kv_heads=12, head_dim=64, form="hf"),
                )
                if hf
                else ()
            ),
        ),
        hf={
            "rmsnorm": stream(3e-5, 0.1),
            "layernorm": stream(6e-6, 0.5),
            "gelu_new": stream(4e-5, 0.08),
            "silu_and_mul": stream(1e-5, 0.3),
            "rotary": stream(5e-5, 0.1),
            "kv_cat": stream(1e-5, 0.25),
        }
        if hf
        else {},
    )
    return Profile(
        name="test-cpu-fp32",
        device="test-cpu",
        source="hand-made",
        dtype="fp32",
        device_spec=CPU,
        measurements=Measurements(gemm=tuple(linear + (conv1d if hf else []))),
        fit=fit,
    )


HF = catalog.load_runtime("hf-eager")
HF_NONE = catalog.load_runtime("hf-eager-no-cache")


def kernels(model: ModelSpec, hf: bool = True, runtime: RuntimeSpec = HF):
    base = CalibratedKernel(CPU, FP32, profile(hf))
    return base, runtime_kernel(base, model, runtime)


def op(model: ModelSpec, name: str) -> Op:
    return next(o for o in layer_plan(model, 1, FP32).ops if o.name == name)


# ------------------------------------------------------------------- which kernel


def test_only_the_hf_eager_runtimes_over_a_calibrated_kernel_get_hf_prices():
    base, hf = kernels(LLAMA)
    assert isinstance(hf, HfEagerKernel) and hf.cache
    assert isinstance(runtime_kernel(base, LLAMA, HF_NONE), HfEagerKernel)
    assert not runtime_kernel(base, LLAMA, HF_NONE).cache  # type: ignore[attr-defined]
    assert runtime_kernel(base, LLAMA, RuntimeSpec()) is base
    roofline = RooflineKernel(CPU, FP32)
    assert runtime_kernel(roofline, LLAMA, HF) is roofline  # nothing measured to use
    assert is_hf_eager(HF) and is_hf_eager(HF_NONE) and not is_hf_eager(RuntimeSpec())


def test_model_shapes_pick_the_modules_transformers_runs():
    assert hf_family(GPT2) == "gpt2" and hf_family(LLAMA) == "llama"
    assert hf_kernels(GPT2) == {
        "norm": "layernorm",
        "act": "gelu_new",
        "rotary": "rotary",
        "add": "add",
    }
    assert hf_kernels(LLAMA)["norm"] == "rmsnorm" and hf_kernels(LLAMA)["act"] == "silu_and_mul"
    opt = GPT2.model_copy(update={"activation": "relu"})  # OPT: nn.Linear, ReLU
    assert hf_family(opt) == "other" and hf_kernels(opt)["act"] == "relu"


# ------------------------------------------------------------------------ prices


def test_without_hf_measurements_the_prices_are_the_calibrated_kernels():
    base, hf = kernels(LLAMA, hf=False)
    works = (Work.prefill(2, 64), Work.decode(4, 300), Work(tokens=7))
    for o in layer_plan(LLAMA, 1, FP32).ops:
        for w in works:
            if o.kind == "attn_decode" or o.kind == "attn_prefill" or o.kind == "elementwise":
                assert hf.op_time(o, w) == pytest.approx(base.op_time(o, w)), o.name
    # Llama's QKV still splits into three Linear calls: each pays its own matrix.
    w = Work(tokens=1)
    split = base.op_time(Op("q", "gemm", n=512, k=512), w) + 2 * base.op_time(
        Op("kv", "gemm", n=128, k=512), w
    )
    assert hf.op_time(op(LLAMA, "qkv_proj"), w) == pytest.approx(split)


def test_gpt2_gemms_are_conv1d_where_measured():
    base, hf = kernels(GPT2)
    qkv = op(GPT2, "qkv_proj")
    for tokens in (1, 8, 64):
        w = Work(tokens=tokens)
        assert hf.op_time(qkv, w) == pytest.approx(2 * base.op_time(qkv, w), rel=1e-6)
    # Beyond the measured token counts: nn.Linear's price times the edge's ratio.
    w = Work(tokens=256)
    assert hf.op_time(qkv, w) == pytest.approx(2 * base.op_time(qkv, w), rel=1e-6)
    lm = Op("lm_head", "gemm", n=50257, k=768)  # tied to the embedding: nn.Linear
    assert hf.op_time(lm, w) == base.op_time(lm, w)
    assert hf.source(qkv) == "calibrated (hf-eager)" and hf.source(lm) == "calibrated"


def test_elementwise_ops_take_the_forms_transformers_runs():
    base, hf = kernels(GPT2)
    w = Work(tokens=16)
    act = op(GPT2, "mlp_act")  # gelu_new: eight kernels, priced by its own fit
    moved = 16 * 3072 * 2 * 4
    assert hf.op_time(act, w) == pytest.approx(4e-5 + moved / (2e10 * 0.08))
    assert hf.op_time(act, w) > base.op_time(act, w)
    _, llama = kernels(LLAMA)
    norm = op(LLAMA, "norm")
    assert llama.op_time(norm, w) == pytest.approx(3e-5 + 16 * 512 * 2 * 4 / (2e10 * 0.1))


def test_decode_attention_is_the_shapes_hf_curve_plus_the_cache_append():
    base, hf = kernels(LLAMA)
    _, none = kernels(LLAMA, runtime=HF_NONE)
    dec = op(LLAMA, "attn_decode")
    w = Work.decode(4, 512)
    kv = 4 * 512 * 2 * 2 * 64 * 4  # bytes of K and V read
    sdpa = 3e-5 + kv / (2e10 * 0.05)
    append = 1e-5 + 2 * (4 * 513) * 2 * 2 * 64 * 4 / (2e10 * 0.25)
    assert hf.op_time(dec, w) == pytest.approx(sdpa + append)
    assert none.op_time(dec, w) == pytest.approx(sdpa)  # no cache, no append
    assert base.op_time(dec, w) == pytest.approx(1e-5 + kv / (2e10 * 0.4))  # its own shape
    assert hf.launch_part(dec, w) == 0.0


def test_vectorised_decode_attention_matches_the_scalar_price():
    for model in (LLAMA, GPT2):
        for runtime in (HF, HF_NONE):
            _, hf = kernels(model, runtime=runtime)
            dec = op(model, "attn_decode")
            kv = np.array([8, 300, 4096, 70000])
            many = hf.decode_attention_times(dec, 8, kv)
            one = [
                hf.op_time(dec, Work(tokens=8, decode_seqs=8, decode_kv_tokens=int(k))) for k in kv
            ]
            np.testing.assert_allclose(many, one, rtol=1e-9)


def test_hf_prices_are_never_below_the_roofline():
    ideal = RooflineKernel(CPU, FP32, ideal=True)
    _, hf = kernels(GPT2)
    for o in layer_plan(GPT2, 1, FP32).ops:
        for w in (Work.prefill(4, 512), Work.decode(16, 512), Work(tokens=1)):
            assert hf.op_time(o, w) >= ideal.op_time(o, w)


def test_a_stage_prices_with_the_hf_kernel():
    base, hf = kernels(LLAMA)
    plan = layer_plan(LLAMA, 1, FP32)
    eager = StageCost(plan, LLAMA.n_layers, hf, None, runtime=HF)
    plain = StageCost(plan, LLAMA.n_layers, base, None, runtime=HF)
    w = Work.decode(4, 512)
    assert eager.time(w, 4) > plain.time(w, 4)
    times = eager.decode_times(4, 4 * 512, 4, 3)
    assert times[0] == pytest.approx(eager.time(w, 4))


# ----------------------------------------------------------- per-shape attention


def test_attention_fits_are_picked_by_shape_then_grouping():
    fits = profile().fit.attention_shapes
    gqa = pick_attention(fits, 8, 2, 64, form=None)
    assert gqa is not None and gqa.heads == 8
    assert pick_attention(fits, 8, 2, 64, form="hf") is fits[1]
    assert pick_attention(fits, 32, 8, 128, form="hf") is fits[1]  # GQA, 4 per K/V head
    assert pick_attention(fits, 32, 32, 128, form="hf") is fits[2]  # MHA
    assert pick_attention(fits, 32, 32, 128, form=None) is None  # no MHA shape: the general fit
    base = CalibratedKernel(CPU, FP32, profile())
    mha = Op("attn_decode", "attn_decode", heads=32, kv_heads=32, head_dim=128)
    w = Work.decode(1, 1000)
    general = 1e-5 + 1000 * 2 * 32 * 128 * 4 / (2e10 * 0.5)
    assert base.op_time(mha, w) == pytest.approx(general)


# ------------------------------------------------------------------- the bench


@needs_extra
def test_the_bench_runs_at_a_tiny_size(tmp_path):
    """bench/hf_cpu.py end to end at one tiny size: calibrate (quick), predict, measure,
    report. Whether the figures agree is the bench's to print, not a test's to assert."""
    from bench import hf_cpu

    tiny = {
        "tiny-llama": (
            "LlamaConfig",
            {
                "hidden_size": 64,
                "intermediate_size": 172,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "vocab_size": 512,
                "max_position_embeddings": 256,
            },
        )
    }
    lines: list[str] = []
    result = hf_cpu.run(
        tmp_path,
        configs=tiny,
        dtypes=("fp32",),
        prefill=[(1, 16)],
        decode=[(2, 32)],
        rounds=1,
        quick=True,
        samples=2,
        say=lines.append,
    )
    assert len(result.rows) == 4  # prefill and decode, with and without a cache
    for row in result.rows:
        assert row.predicted > 0 and row.measured is not None and row.measured > 0
    report = hf_cpu.report(result)
    assert any("fp32 with cache: median |error|" in line for line in report)
    assert any("fp32 no cache (recompute): median |error|" in line for line in report)
    assert lines and lines[0].startswith("fp32 round 1/1")
    rt = result.profiles["fp32"].runtime
    assert rt is not None and rt.host_step_s.eager is not None


def test_a_scenario_under_hf_eager_plans_its_stages_with_the_hf_kernel(monkeypatch):
    """The plan wraps the device's calibrated kernel for the hf-eager runtimes (and
    only for them), so `llmsim run` prices a step as transformers runs it."""
    import sim.plan.deploy as deploy_module
    from sim.plan import load_scenario
    from sim.plan.deploy import deploy

    def calibrated(device, precision, mode="auto"):
        return CalibratedKernel(device, precision, profile()), profile()

    monkeypatch.setattr(deploy_module, "make_kernel", calibrated)
    base = {
        "cluster": "dgx-a100",
        "model": "gpt3-125m",
        "workload": {
            "requests": 4,
            "arrival": {"process": "poisson", "rate": 1},
            "prompt": {"dist": "fixed", "value": 32},
            "output": {"dist": "fixed", "value": 4},
        },
    }
    for name, cache in (("hf-eager", True), ("hf-eager-no-cache", False)):
        (replica,) = deploy(load_scenario({**base, "runtime": name})).replicas
        kernel = replica.stages[0].cost.kernel
        assert isinstance(kernel, HfEagerKernel) and kernel.cache is cache
    (replica,) = deploy(load_scenario({**base, "runtime": "vllm-v1"})).replicas
    assert isinstance(replica.stages[0].cost.kernel, CalibratedKernel)
