"""The cost kernels: roofline, calibrated profiles, fitting, and the per-op breakdown."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.arith.ops import Op, Work, layer_plan
from sim.arith.precision import Precision
from sim.calibrate.fit import fit_stream, fit_surface, surface_at
from sim.cli.main import main
from sim.cost import CalibratedKernel, CollectiveModel, RooflineKernel
from sim.cost.curves import stream_time
from sim.cost.roofline import floor_time
from sim.cost.topology import build_cluster
from sim.plan.analyze import op_breakdown
from sim.plan.kernels import make_kernel
from sim.spec import catalog
from sim.spec.profile import GemmPoint, Measurements, Profile

CALIBRATED = ["a100-80gb-sxm", "h100-sxm", "h200", "a40", "a30"]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "calibration" / "vidur"


@pytest.mark.parametrize("device", CALIBRATED)
def test_shipped_profiles_load_by_device_name(device):
    spec = catalog.load_device(device)
    profile = catalog.profile_for(spec)
    assert profile is not None and profile.device == device
    assert "vidur" in profile.source.lower()
    assert profile.fit.gemm is not None and profile.fit.attention is not None
    assert not profile.measurements.gemm  # shape-based curves, not per-model tables
    kernel, _ = make_kernel(spec, Precision())
    assert isinstance(kernel, CalibratedKernel)


def test_devices_without_profile_use_the_roofline():
    kernel, profile = make_kernel(catalog.load_device("t4"), Precision("fp16", "fp16"))
    assert profile is None and isinstance(kernel, RooflineKernel)
    with pytest.raises(Exception, match="t4 has no calibration profile"):
        make_kernel(catalog.load_device("t4"), Precision("fp16", "fp16"), "calibrated")


ops_and_work = st.tuples(
    st.sampled_from([*CALIBRATED, "t4", "l4"]),
    st.sampled_from(["llama-2-7b", "llama-2-70b", "mixtral-8x7b", "opt-13b", "phi-2"]),
    st.sampled_from([1, 2, 4, 8]),
    st.sampled_from(["bf16", "fp8", "int8", "int4"]),
    st.integers(1, 16384),
    st.integers(0, 32768),
)


@settings(max_examples=150, deadline=None)
@given(ops_and_work)
def test_no_op_is_ever_priced_below_the_roofline(case):
    device_name, model_name, tp, wdtype, tokens, kv = case
    device = catalog.load_device(device_name)
    model = catalog.load_model(model_name)
    if model.n_heads % tp or model.d_ff_expert % tp:
        return
    act = "fp8" if wdtype == "fp8" else ("fp16" if device_name == "t4" else "bf16")
    precision = Precision(wdtype, act, act)
    kernel, _ = make_kernel(device, precision)
    plan = layer_plan(model, tp, precision)
    works = [Work.prefill(1, tokens, kv), Work.decode(tokens, kv)]
    for op in plan.ops:
        for work in works:
            t = kernel.op_time(op, work)
            assert t >= floor_time(device, precision, op, work) * (1 - 1e-12)
            assert math.isfinite(t)


def test_vectorised_decode_attention_matches_the_scalar_kernel():
    device = catalog.load_device("a100-80gb-sxm")
    kernel, _ = make_kernel(device, Precision())
    op = next(
        o for o in layer_plan(catalog.load_model("llama-2-7b")).ops if o.kind == "attn_decode"
    )
    kv = np.array([0.0, 10.0, 1000.0, 123456.0])
    vec = kernel.decode_attention_times(op, 8, kv)
    for i, k in enumerate(kv):
        scalar = kernel.op_time(op, Work(tokens=8, decode_seqs=8, decode_kv_tokens=int(k)))
        assert vec[i] == pytest.approx(scalar, rel=1e-12)


def _profile_with(points: list[GemmPoint]) -> Profile:
    base = catalog.load_profile("a100-80gb-sxm")
    return base.model_copy(update={"measurements": Measurements(gemm=tuple(points))})


def test_measured_gemms_are_interpolated_and_scaled():
    device = catalog.load_device("a100-80gb-sxm")
    pts = [GemmPoint(m=m, n=4096, k=4096, median_s=1e-4 * m**0.5) for m in (1, 16, 256)]
    kernel = CalibratedKernel(device, Precision("fp16", "fp16"), _profile_with(pts))
    op = Op("x", "gemm", n=4096, k=4096)
    at = lambda m, o=op: kernel.op_time(o, Work(tokens=m))  # noqa: E731
    assert at(16) == pytest.approx(4e-4)  # a measured point
    assert at(4) == pytest.approx(2e-4)  # log-log between 1 and 16: 1e-4 · 4^0.5
    # A neighbouring shape (n twice as large) scales by the ratio of rooflines.
    wide = Op("y", "gemm", n=8192, k=4096)
    ratio = kernel._roofline(16, 8192, 4096) / kernel._roofline(16, 4096, 4096)
    assert kernel.op_time(wide, Work(tokens=16)) == pytest.approx(4e-4 * ratio)
    # Outside the measured m range: the fitted surface.
    surface_only = CalibratedKernel(device, Precision("fp16", "fp16"), _profile_with([]))
    assert at(1024) == pytest.approx(surface_only.op_time(op, Work(tokens=1024)))


def test_fitted_gemm_time_grows_with_tokens():
    for device in CALIBRATED:
        kernel, _ = make_kernel(catalog.load_device(device), Precision())
        for n, k in ((12288, 4096), (4096, 11008), (1024, 8192)):
            op = Op("x", "gemm", n=n, k=k)
            times = [kernel.op_time(op, Work(tokens=m)) for m in (1, 64, 512, 4096, 16384)]
            assert times == sorted(times), (device, n, k, times)


def test_surface_fit_recovers_a_smooth_function():
    rng = np.random.default_rng(0)
    x = rng.uniform([0, 6, 6], [13, 17, 17], size=(4000, 3))
    y = 0.5 + 0.05 * x[:, 0] - 0.02 * (x[:, 1] - 12) ** 2 / 10
    surface = fit_surface(x, y, smoothing=0.1)
    test = rng.uniform([1, 7, 7], [12, 16, 16], size=(200, 3))
    truth = 0.5 + 0.05 * test[:, 0] - 0.02 * (test[:, 1] - 12) ** 2 / 10
    assert np.max(np.abs(surface_at(surface, test) - truth)) < 0.02


def test_stream_fit_recovers_launch_and_bandwidth():
    moved = np.logspace(3, 9, 40)
    t = 5e-6 + moved / (1e12 * 0.8)
    fit = fit_stream(moved, t, 1e12)
    assert np.allclose(stream_time(fit, moved, 1e12), t, rtol=0.12)
    assert stream_time(fit, 1e9, 1e12) == pytest.approx(1e9 / 0.8e12, rel=0.02)


def test_calibrated_all_reduce_used_on_the_measured_fabric():
    profile = catalog.load_profile("h100-sxm")
    cluster = build_cluster(catalog.load_cluster("dgx-h100"))
    col = CollectiveModel(cluster, range(8), profile.fit.collectives)
    fit = col.measured["all_reduce"]
    assert col.all_reduce_s(1e6) == pytest.approx(fit.alpha_s + 1e6 / fit.bandwidth_bytes_per_s)
    assert not CollectiveModel(cluster, range(3), profile.fit.collectives).measured


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data/calibration/vidur is absent")
def test_vidur_mapping_to_our_shapes():
    from sim.calibrate.vidur import compute_points

    gemms, elems = compute_points(
        SHARED / "profiling/compute/a100/meta-llama/Llama-2-7b-hf/mlp.csv"
    )
    plan = layer_plan(catalog.load_model("llama-2-7b"), 1)
    ours = {(o.n, o.k) for o in plan.ops if o.kind == "gemm"}
    theirs = {(p.n, p.k) for p in gemms if p.n in (12288, 4096, 22016, 4096)}
    assert (12288, 4096) in ours & theirs  # fused QKV
    assert (22016, 4096) in theirs  # gate and up fused in Vidur: 2 x 11008
    assert {p.op for p in elems} == {"norm", "rotary", "act", "add", "embedding"}


def test_analyze_ops_json(capsys):
    code = main(
        [
            "analyze",
            "--model",
            "llama-2-70b",
            "--hardware",
            "dgx-h100",
            "--tp",
            "8",
            "--ops",
            "--tokens",
            "512",
            "--kv-len",
            "2048",
            "--json",
        ]
    )
    assert code == 0
    ops = json.loads(capsys.readouterr().out)["ops"]
    for name in (
        "qkv_proj",
        "o_proj",
        "mlp_up",
        "mlp_gate",
        "mlp_act",
        "mlp_down",
        "norm",
        "rotary",
        "residual_add",
        "attn_prefill",
        "attn_decode",
        "all_reduce",
    ):
        assert ops[name]["seconds"] > 0
        assert ops[name]["source"] in ("calibrated", "roofline") or ops[name]["source"].startswith(
            "links"
        )
    assert ops["qkv_proj"]["source"] == "calibrated"
    roof = op_breakdown("llama-2-70b", "dgx-h100", tp=8, tokens=512, cost="roofline")
    assert roof["qkv_proj"]["source"] == "roofline"
    assert roof["all_reduce"]["source"] == "links of dgx-h100"


def test_analyze_ops_on_a_device_without_profile(capsys):
    code = main(["analyze", "--model", "llama-2-7b", "--hardware", "l4", "--ops", "--tokens", "8"])
    out = capsys.readouterr().out
    assert code == 0 and "qkv_proj" in out and "roofline" in out


def test_an_encoder_has_no_lm_head_in_its_time_or_its_flops():
    from sim.cost.stage import StageCost

    kernel = RooflineKernel(catalog.load_device("a100-80gb-sxm"), Precision())
    for name, samples in (("bert-base", False), ("llama-2-7b", True)):
        plan = layer_plan(catalog.load_model(name), 1, Precision())
        cost = StageCost(plan, 2, kernel, None)
        work = Work.prefill(4, 128)
        assert (cost.time(work, 4) > cost.time(work, 0)) is samples
        assert (cost.flops(work, 4) > cost.flops(work, 0)) is samples


@pytest.mark.parametrize("name", ["roofline", "calibrated"])
def test_ops_some_layers_run_cost_their_share_and_capacity_buffers_cost_their_rows(name):
    """DeepSeek's dense-MLP ops run in 3 of 61 layers and its MoE ops in 58: a kernel
    prices an op for its share of layers; an expert op with a capacity factor runs every
    expert's fixed buffer (sim.arith.ops.gemm_rows / gemm_matrices)."""
    device = catalog.load_device("h100-sxm")
    p = Precision("bf16", "bf16", "bf16")
    kernel, _ = make_kernel(device, p, name)
    dense = Op("mlp_up", "gemm", n=18432, k=7168)
    partial = Op("mlp_up", "gemm", n=18432, k=7168, layer_share=3 / 61)
    w = Work(tokens=64)
    launch = kernel.launch_part(dense, w)
    assert kernel.op_time(partial, w) == pytest.approx(3 / 61 * kernel.op_time(dense, w))
    assert kernel.launch_part(partial, w) == pytest.approx(3 / 61 * launch)
    expert = Op("mlp_up", "gemm", n=2048, k=7168, count=256, top_k=8)
    buffered = Op("mlp_up", "gemm", n=2048, k=7168, count=256, top_k=8, capacity_factor=1.25)
    # 64 tokens x 8 picks over 256 experts: buffers of ceil(1.25 * 2) = 3 rows, all 256 run
    one_row = Op("mlp_up", "gemm", n=2048, k=7168, count=256)
    assert kernel.op_time(buffered, Work(tokens=64)) >= kernel.op_time(expert, Work(tokens=64))
    if name == "calibrated":
        assert isinstance(kernel, CalibratedKernel)
        assert kernel._gemm(buffered, 64) == pytest.approx(
            256 * kernel._gemm_shape(3.0, 2048, 7168)
        )
        assert kernel._gemm(one_row, 3) == pytest.approx(256 * kernel._gemm_shape(3.0, 2048, 7168))
