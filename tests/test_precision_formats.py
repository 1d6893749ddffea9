"""FP8 (per-tensor and block scales), NVFP4 and MXFP4: bytes with their scales, each
device's peak rate per format, and a format a device lacks refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from sim.arith.ops import Work, dequant_flops, layer_plan
from sim.arith.params import total_params
from sim.arith.precision import Precision
from sim.errors import LlmsimError
from sim.spec.catalog import load_device, load_model
from sim.spec.precision import PrecisionSpec


def test_block_scaled_bytes():
    assert Precision("nvfp4", "nvfp4", "nvfp4").w_bytes == 0.5 + 1 / 16  # e4m3 per 16
    assert Precision("mxfp4").w_bytes == 0.5 + 1 / 32  # e8m0 per 32
    assert Precision("fp8", "fp8").w_bytes == 1.0  # one scale per tensor, not counted
    block = Precision("fp8", "fp8", "fp8", fp8_scales="block")
    assert block.w_bytes == 1.0 + 4 / (128 * 128)
    assert block.a_bytes == 1.0 + 4 / 128
    assert block.kv_bytes == 1.0


def test_the_scenario_spec_carries_fp8_scaling():
    spec = PrecisionSpec(weights="fp8", activations="fp8", fp8_scales="block")
    assert Precision.of(spec).w_bytes == 1.0 + 4 / (128 * 128)
    with pytest.raises(ValidationError):
        PrecisionSpec(weights="fp8", fp8_scales="row")


def test_deepseek_v3_weights_in_each_format():
    m = load_model("deepseek-v3")
    n = total_params(m)
    assert n * Precision("nvfp4").w_bytes == n * 0.5625
    assert n * Precision("mxfp4").w_bytes == n * 0.53125


@pytest.mark.parametrize(
    ("device", "dtype", "tflops"),
    [
        ("b200", "nvfp4", 9000),
        ("b200", "mxfp4", 9000),
        ("gb200", "nvfp4", 10000),
        ("mi355x", "mxfp4", 10066.3),
        ("h100", "fp8", 1978.9),
    ],
)
def test_peak_rate_per_format(device: str, dtype: str, tflops: float):
    assert load_device(device).flops(dtype) == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize(
    ("device", "dtype"), [("h100", "nvfp4"), ("h200", "mxfp4"), ("mi355x", "nvfp4")]
)
def test_a_format_a_device_lacks_is_refused(device: str, dtype: str):
    spec = load_device(device)
    with pytest.raises(LlmsimError) as info:
        spec.flops(dtype)
    assert info.value.key == "precision.activations"
    assert spec.name in str(info.value) and ", ".join(spec.peak_flops) in str(info.value)


def test_fp4_weights_only_dequantise_on_devices_without_fp4():
    m = load_model("qwen3-30b-a3b")
    p = Precision("nvfp4", "bf16")
    up = next(op for op in layer_plan(m, 1, p).ops if op.name == "qkv_proj")
    assert dequant_flops(up, Work(tokens=1), p) == up.k * up.n * 4.0
    assert load_device("h100").flops(p.compute_dtype) == load_device("h100").flops("bf16")
