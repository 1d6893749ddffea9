"""The microbenchmarks behind `llmsim calibrate`: op times of one device, with PyTorch.

What is measured, each as the median, p10 and p90 seconds of one kernel:

- GEMMs `x[m,k] @ w[k,n]` for the per-device (n, k) of every `gemm` op in the chosen
  models' layer plans (`sim.arith.ops.layer_plan`) at the chosen TP degrees, times a grid of
  token counts m.
- Attention: causal prefill of `batch` sequences of `q_len` tokens each, and decode (one
  query per sequence against `kv_len` keys), for the (heads, kv_heads, head_dim) one
  device holds. flash_attn's `flash_attn_func` / `flash_attn_with_kvcache` when that
  package imports (CUDA, fp16/bf16); otherwise torch's `scaled_dot_product_attention`
  with whichever backend torch picks. Grouped heads: prefill uses `enable_gqa` (or
  expands K/V once, outside the timing, on a torch without it); decode folds the query
  heads of a group into the query axis, so each K/V head is read once, as FlashDecoding
  does.
- Element-wise ops at the layer plan's widths (elements read per token): the model's
  norm (RMSNorm or LayerNorm), its MLP activation (SiLU-and-mul for a gated MLP, the
  plain activation otherwise), rotary embedding over the device's Q and K heads, the
  residual add and the embedding gather.
- Launch overhead (a one-element in-place add, back to back), copies between pinned host
  memory and the device (on CPU: a memcpy between two tensors, recorded as h2d), and,
  with several GPUs and on request, NCCL collectives over torch.distributed.

Assumptions: eager PyTorch, no CUDA graphs and no torch.compile, so every kernel pays
its launch and composite ops (rotary, SiLU-and-mul) run as several kernels, as in
Hugging Face transformers; serving engines with fused kernels are faster there. A
sample is a batch of back-to-back calls timed together (CUDA events on GPU,
`time.perf_counter` on CPU) divided by the count, after warm-up, so a kernel shorter
than its launch is timed at the launch rate, as it runs in a forward pass. GEMM weights
and decode KV caches are read from memory: calls cycle through copies that together
outgrow the last-level cache (GPU L2, CPU L3), as a forward pass through many layers
does; activations, produced just before they are used, stay cached. Operands are random
normal (zeros draw less power and run faster on recent GPUs).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import os
import platform
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml

from sim.arith.ops import check_tp, layer_plan, valid_tp
from sim.calibrate.fit import elementwise_bytes, fit_measurements, gemm_bytes
from sim.errors import LlmsimError
from sim.spec.hardware import DeviceSpec
from sim.spec.model import ModelSpec
from sim.spec.profile import (
    AttentionPoint,
    CollectivePoint,
    CopyPoint,
    ElementwisePoint,
    Environment,
    Fit,
    GemmPoint,
    Measurements,
    Profile,
)
from sim.units import dtype_bytes

DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
DEFAULT_MODELS = {
    "cuda": ("llama-2-7b", "llama-3-8b", "qwen2-7b", "llama-2-13b", "mixtral-8x7b", "llama-3-70b"),
    "cpu": ("gpt3-125m",),
}
DEFAULT_TPS = {"cuda": (1, 2, 4, 8), "cpu": (1,)}
COLLECTIVE_OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all")
# SDPA learnt `enable_gqa` in torch 2.5 (it is a builtin: no signature to inspect).
SDPA_GQA = tuple(int(p) for p in re.findall(r"\d+", torch.__version__)[:2]) >= (2, 5)

Stats = tuple[float, float, float]  # median, p10, p90 seconds


# ----------------------------------------------------------------------------- grids


def _pow2(lo: int, hi: int) -> tuple[int, ...]:
    return tuple(2**i for i in range(lo.bit_length() - 1, hi.bit_length()))


def _pow2_and_3s(lo: int, hi: int) -> tuple[int, ...]:
    """Powers of two and the midpoints 3·2^i, to see wave quantisation between them."""
    out = set(_pow2(lo, hi)) | {3 * p for p in _pow2(lo, hi) if 3 * p <= hi}
    return tuple(sorted(out))


def _pow4_bytes(lo: int, hi: int) -> tuple[int, ...]:
    sizes, size = [], lo
    while size <= hi:
        sizes.append(size)
        size *= 4
    return tuple(sizes)


@dataclass(frozen=True)
class Grid:
    """The sizes one run measures and how it samples them."""

    gemm_m: tuple[int, ...]
    prefill_batch: tuple[int, ...]
    prefill_len: tuple[int, ...]
    prefill_max_tokens: int
    decode_batch: tuple[int, ...]
    decode_kv: tuple[int, ...]
    decode_max_kv_tokens: int
    elementwise_tokens: tuple[int, ...]
    copy_bytes: tuple[int, ...]
    collective_bytes: tuple[int, ...]
    warmup: int
    repeats: int
    sample_s: float  # a sample batches back-to-back calls up to this long...
    max_calls: int  # ...and at most this many


KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

GRIDS: dict[tuple[str, bool], Grid] = {
    ("cuda", False): Grid(
        gemm_m=_pow2_and_3s(1, 4096),
        prefill_batch=(1, 4, 16),
        prefill_len=(128, 512, 2048, 8192),
        prefill_max_tokens=32768,
        decode_batch=(1, 4, 16, 64, 256),
        decode_kv=(128, 512, 2048, 8192, 32768),
        decode_max_kv_tokens=1 << 20,
        elementwise_tokens=_pow2_and_3s(1, 16384),
        copy_bytes=_pow4_bytes(KiB, GiB),
        collective_bytes=_pow4_bytes(KiB, GiB),
        warmup=5,
        repeats=25,
        sample_s=1e-3,
        max_calls=200,
    ),
    ("cuda", True): Grid(
        gemm_m=_pow2(1, 4096),
        prefill_batch=(1, 8),
        prefill_len=(128, 1024, 4096),
        prefill_max_tokens=16384,
        decode_batch=(1, 16, 128),
        decode_kv=(256, 2048, 16384),
        decode_max_kv_tokens=1 << 19,
        elementwise_tokens=_pow2(1, 16384)[::2],
        copy_bytes=_pow4_bytes(KiB, 64 * MiB),
        collective_bytes=_pow4_bytes(KiB, 64 * MiB),
        warmup=3,
        repeats=10,
        sample_s=5e-4,
        max_calls=100,
    ),
    ("cpu", False): Grid(
        gemm_m=_pow2(1, 1024),
        prefill_batch=(1, 2, 4),
        prefill_len=(32, 128, 512),
        prefill_max_tokens=1024,
        decode_batch=(1, 4, 16),
        decode_kv=(128, 512, 2048),
        decode_max_kv_tokens=16384,
        elementwise_tokens=(1, 8, 64, 256, 1024),
        copy_bytes=_pow4_bytes(KiB, 64 * MiB),
        collective_bytes=_pow4_bytes(KiB, 4 * MiB),
        warmup=3,
        repeats=15,
        sample_s=2e-3,
        max_calls=200,
    ),
    ("cpu", True): Grid(
        # 1 and 2 both: on CPUs m = 1 takes a GEMV path and m >= 2 a GEMM path, which
        # can be slower (small decode batches sit on that step).
        gemm_m=(1, 2, 8, 64, 256),
        prefill_batch=(1, 2),
        prefill_len=(32, 128),
        prefill_max_tokens=256,
        decode_batch=(1, 8),
        decode_kv=(128, 512),
        decode_max_kv_tokens=4096,
        elementwise_tokens=(1, 64, 256),
        copy_bytes=_pow4_bytes(KiB, 4 * MiB)[::2],
        collective_bytes=_pow4_bytes(KiB, MiB)[::2],
        warmup=2,
        repeats=5,
        sample_s=1e-3,
        max_calls=50,
    ),
}


# ------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    """What `llmsim calibrate` was asked: strings as the user gave them, checked by
    `resolve` before anything is measured."""

    device: str = "cpu"
    dtype: str | None = None
    models: tuple[str, ...] = ()
    tps: tuple[int, ...] = ()
    quick: bool = False
    collectives: bool = False
    name: str | None = None
    catalog_device: str | None = None
    threads: int | None = None
    command: str = ""


@dataclass(frozen=True)
class Run:
    """Resolved options: the torch device, dtype, models and grid of one run."""

    device: torch.device
    dtype_name: str
    models: tuple[ModelSpec, ...]
    tps: dict[str, tuple[int, ...]]
    grid: Grid
    catalog_device: DeviceSpec | None
    options: Options

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.dtype_name]

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"


def parse_device(text: str) -> tuple[str, int | None]:
    """`cpu`, `cuda` or `cuda:N` as (type, index); anything else is an error."""
    match = re.fullmatch(r"(cpu|cuda)(?::(\d+))?", text.strip().lower())
    if match is None or (match.group(1) == "cpu" and match.group(2) is not None):
        raise LlmsimError(f"unknown device {text!r}; expected cpu, cuda or cuda:N", key="--device")
    index = match.group(2)
    return match.group(1), int(index) if index is not None else None


def resolve(options: Options) -> Run:
    """Check every option (device, dtype, models, TP degrees, catalog device)."""
    from sim.spec.catalog import load_device, load_model

    kind, index = parse_device(options.device)
    if kind == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}" + (
                "" if torch.version.cuda else " is a CPU-only build"
            )
            raise LlmsimError(
                f"CUDA is not available ({build}; no GPU visible); use --device cpu",
                key="--device",
            )
        count = torch.cuda.device_count()
        index = 0 if index is None else index
        if index >= count:
            raise LlmsimError(
                f"cuda:{index} does not exist; this machine has {count} GPU(s)", key="--device"
            )
        device = torch.device("cuda", index)
    else:
        device = torch.device("cpu")
    dtype_name = options.dtype or ("bf16" if kind == "cuda" else "fp32")
    if dtype_name not in DTYPES:
        raise LlmsimError(
            f"unknown dtype {dtype_name!r}; valid: {', '.join(DTYPES)}", key="--dtype"
        )
    models: list[ModelSpec] = []
    for name in options.models or DEFAULT_MODELS[kind]:
        try:
            models.append(load_model(name))
        except LlmsimError as exc:
            raise LlmsimError(exc.line(), key="--models") from None
    tps: dict[str, tuple[int, ...]] = {}
    for model in models:
        if options.tps:
            for tp in options.tps:
                try:
                    check_tp(model, tp)
                except LlmsimError as exc:
                    raise LlmsimError(exc.message, key="--tp") from None
            tps[model.name] = tuple(options.tps)
        else:
            tps[model.name] = tuple(t for t in DEFAULT_TPS[kind] if t in valid_tp(model))
    if options.collectives and (kind != "cuda" or torch.cuda.device_count() < 2):
        gpus = torch.cuda.device_count() if kind == "cuda" else 0
        raise LlmsimError(
            f"needs --device cuda and 2 or more GPUs; this run has {gpus}", key="--collectives"
        )
    if options.threads is not None and options.threads < 1:
        raise LlmsimError(f"must be at least 1, got {options.threads}", key="--threads")
    spec = None
    if options.catalog_device:
        try:
            spec = load_device(options.catalog_device)
        except LlmsimError as exc:
            raise LlmsimError(exc.line(), key="--catalog-device") from None
    return Run(
        device=device,
        dtype_name=dtype_name,
        models=tuple(models),
        tps=tps,
        grid=GRIDS[(kind, options.quick)],
        catalog_device=spec,
        options=options,
    )


# ---------------------------------------------------------------------------- timing


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _elapsed_s(fn: Callable[[], object], device: torch.device, calls: int) -> float:
    """Seconds for `calls` back-to-back calls of `fn`, finished on the device."""
    if device.type == "cuda":
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) / 1e3
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return time.perf_counter() - t0


def measure(
    fn: Callable[[], object],
    device: torch.device,
    *,
    warmup: int,
    repeats: int,
    sample_s: float = 0.0,
    max_calls: int = 1,
    calls: int | None = None,
) -> Stats:
    """Median, p10 and p90 seconds of one call of `fn` over `repeats` samples.

    Each sample times `calls` back-to-back calls (by default as many as fill `sample_s`,
    at most `max_calls`) and divides by their count.
    """
    for _ in range(warmup):
        fn()
    _sync(device)
    if calls is None:
        one = _elapsed_s(fn, device, 1)
        calls = int(min(max_calls, max(1.0, sample_s / max(one, 1e-9))))
    return _stats([_elapsed_s(fn, device, calls) / calls for _ in range(max(1, repeats))])


def _stats(samples: Sequence[float] | np.ndarray) -> Stats:
    """Median, p10 and p90 of per-call seconds."""
    p10, median, p90 = np.percentile(samples, [10, 50, 90])
    floor = 1e-12  # a timer that reads 0 still means "took some time"
    return max(float(median), floor), max(float(p10), floor), max(float(p90), floor)


def _timing(stats: Stats) -> dict[str, float]:
    return {"median_s": stats[0], "p10_s": stats[1], "p90_s": stats[2]}


def _try_point(
    run: Run, skipped: list[str], what: str, build: Callable[[], Callable[[], object]]
) -> Stats | None:
    """Build one kernel's operands and time it; a point that does not fit in device
    memory is skipped (and counted), the rest of the grid goes on."""
    g = run.grid
    try:
        fn = build()
        return measure(
            fn,
            run.device,
            warmup=g.warmup,
            repeats=g.repeats,
            sample_s=g.sample_s,
            max_calls=g.max_calls,
        )
    except torch.cuda.OutOfMemoryError:
        skipped.append(what)
        if run.is_cuda:
            torch.cuda.empty_cache()
        return None


def _randn(shape: Sequence[int], run: Run) -> torch.Tensor:
    return torch.randn(*shape, dtype=run.dtype, device=run.device)


# ----------------------------------------------------------------------------- GEMMs


def gemm_shapes(run: Run) -> list[tuple[int, int]]:
    """Distinct per-device (n, k) of the `gemm` ops of every model at every TP degree,
    the LM head (vocab-parallel) included."""
    shapes: set[tuple[int, int]] = set()
    for model in run.models:
        for tp in run.tps[model.name]:
            for op in layer_plan(model, tp).ops:
                if op.kind == "gemm":
                    shapes.add((op.n, op.k))
            if not model.encoder_only:
                shapes.add((-(-model.vocab_size // tp), model.d_model))
    return sorted(shapes)


def cache_bytes(run: Run) -> int:
    """The last-level cache operands must outgrow to be read from memory: the GPU's L2,
    or the CPU's L3 (32 MiB where the system does not say)."""
    if run.is_cuda:
        props = torch.cuda.get_device_properties(run.device)
        return int(getattr(props, "L2_cache_size", 0)) or 64 * MiB
    try:
        size = os.sysconf("SC_LEVEL3_CACHE_SIZE")
    except (ValueError, OSError):
        size = 0
    return size if size > 0 else 32 * MiB


MAX_COPIES = 64


def _cold(run: Run, tensors: tuple[torch.Tensor, ...]) -> list[tuple[torch.Tensor, ...]]:
    """`tensors` and enough clones of them to outgrow the cache twice over (at most
    MAX_COPIES sets): cycling through them, each call reads its operands from memory,
    as a forward pass does, where every layer's weights and KV cache are evicted by the
    other layers' before they are used again."""
    size = sum(t.numel() * t.element_size() for t in tensors)
    copies = max(1, min(MAX_COPIES, math.ceil(2 * cache_bytes(run) / max(size, 1))))
    return [tensors] + [tuple(t.clone() for t in tensors) for _ in range(copies - 1)]


def _cycle(sets: list[tuple[torch.Tensor, ...]]) -> Callable[[], tuple[torch.Tensor, ...]]:
    if len(sets) == 1:
        only = sets[0]
        return lambda: only
    return itertools.cycle(sets).__next__


def _gemm_fn(run: Run, m: int, weights: list[tuple[torch.Tensor, ...]]) -> Callable[[], object]:
    x = _randn((m, weights[0][0].shape[1]), run)
    nxt = _cycle(weights)
    return lambda: torch.nn.functional.linear(x, nxt()[0])


def measure_gemms(run: Run, skipped: list[str]) -> list[GemmPoint]:
    """linear(x[m,k], W[n,k]): the weight layout of nn.Linear, which frameworks use (on
    CPUs it runs up to 2x slower than x @ w[k,n] at small m); the activations stay
    cached, the weights come from memory."""
    points = []
    for n, k in gemm_shapes(run):
        weights = _cold(run, (_randn((n, k), run),))
        for m in run.grid.gemm_m:
            build = partial(_gemm_fn, run, m, weights)
            stats = _try_point(run, skipped, f"gemm {m}x{n}x{k}", build)
            if stats is not None:
                points.append(GemmPoint(m=m, n=n, k=k, **_timing(stats)))
        del weights
    return points


# ------------------------------------------------------------------------- attention


def attention_configs(run: Run) -> list[tuple[int, int, int]]:
    """Distinct (heads, kv_heads, head_dim) one device holds, over models and TP."""
    configs: set[tuple[int, int, int]] = set()
    for model in run.models:
        if model.encoder_only:
            continue
        for tp in run.tps[model.name]:
            for op in layer_plan(model, tp).ops:
                if op.kind == "attn_prefill":
                    configs.add((op.heads, op.kv_heads, op.head_dim))
    return sorted(configs)


def flash_backend(run: Run) -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    """flash_attn's prefill and KV-cache kernels, when usable for this run."""
    if not run.is_cuda or run.dtype_name not in ("bf16", "fp16"):
        return None
    return _flash_attn()


@cache  # a failing import is not retried for every attention point
def _flash_attn() -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    try:
        from flash_attn import flash_attn_func, flash_attn_with_kvcache
    except Exception:  # an absent or broken install (ABI mismatch) both mean SDPA
        return None
    return flash_attn_func, flash_attn_with_kvcache


def attention_backend_name(run: Run) -> str:
    if flash_backend(run) is not None:
        return "flash_attn (flash_attn_func, flash_attn_with_kvcache)"
    gqa = "enable_gqa" if SDPA_GQA else "K/V expanded before timing"
    return f"torch scaled_dot_product_attention (default backend choice; GQA prefill: {gqa})"


def _prefill_fn(run: Run, b: int, s: int, h: int, hk: int, d: int) -> Callable[[], object]:
    flash = flash_backend(run)
    if flash is not None:
        q, k, v = _randn((b, s, h, d), run), _randn((b, s, hk, d), run), _randn((b, s, hk, d), run)
        func = flash[0]
        return lambda: func(q, k, v, causal=True)
    q = _randn((b, h, s, d), run)
    k, v = _randn((b, hk, s, d), run), _randn((b, hk, s, d), run)
    if h == hk:
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if SDPA_GQA:
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    k, v = k.repeat_interleave(h // hk, dim=1), v.repeat_interleave(h // hk, dim=1)
    return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _decode_fn(run: Run, b: int, kv: int, h: int, hk: int, d: int) -> Callable[[], object]:
    """One query per sequence against a KV cache read from memory (see `_cold`)."""
    flash = flash_backend(run)
    if flash is not None:
        q = _randn((b, 1, h, d), run)
        caches = _cold(run, (_randn((b, kv, hk, d), run), _randn((b, kv, hk, d), run)))
        lens = torch.full((b,), kv, dtype=torch.int32, device=run.device)
        func, nxt = flash[1], _cycle(caches)

        def flash_step() -> object:
            k_cache, v_cache = nxt()
            return func(q, k_cache, v_cache, cache_seqlens=lens)

        return flash_step
    # The h/hk query heads that share a K/V head become that head's query rows: exact
    # for one query per sequence (no causal mask), and each K/V head is read once.
    q = _randn((b, hk, h // hk, d), run)
    kvs = _cycle(_cold(run, (_randn((b, hk, kv, d), run), _randn((b, hk, kv, d), run))))

    def sdpa_step() -> object:
        k, v = kvs()
        return F.scaled_dot_product_attention(q, k, v)

    return sdpa_step


def measure_attention(run: Run, skipped: list[str]) -> list[AttentionPoint]:
    g = run.grid
    cases = [
        ("prefill", b, s)
        for b in g.prefill_batch
        for s in g.prefill_len
        if b * s <= g.prefill_max_tokens
    ] + [
        ("decode", b, kv)
        for b in g.decode_batch
        for kv in g.decode_kv
        if b * kv <= g.decode_max_kv_tokens
    ]
    points = []
    for h, hk, d in attention_configs(run):
        for phase, b, length in cases:
            build = partial(
                _prefill_fn if phase == "prefill" else _decode_fn, run, b, length, h, hk, d
            )
            stats = _try_point(run, skipped, f"{phase} b={b} len={length} h={h}", build)
            if stats is None:
                continue
            points.append(
                AttentionPoint(
                    phase="prefill" if phase == "prefill" else "decode",
                    batch=b,
                    q_len=length if phase == "prefill" else 1,
                    kv_len=length,
                    heads=h,
                    kv_heads=hk,
                    head_dim=d,
                    **_timing(stats),
                )
            )
    return points


# ---------------------------------------------------------------------- element-wise


@dataclass(frozen=True)
class ElementwiseCase:
    """One element-wise kernel at one width (elements read per token)."""

    op: Literal["norm", "act", "rotary", "add", "embedding"]
    width: int
    kernel: str  # rmsnorm layernorm silu_and_mul gelu_and_mul relu_and_mul gelu relu silu
    head_dim: int = 0  # rotary
    vocab: int = 0  # embedding


# A ModelSpec activation -> its base function (swiglu and geglu are the gated forms of
# SiLU and GELU), and each base function in torch.
ACTIVATION_BASE = {
    "silu": "silu",
    "swiglu": "silu",
    "gelu": "gelu",
    "geglu": "gelu",
    "relu": "relu",
}
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "gelu": F.gelu,
    "relu": F.relu,
}


def _act_kernel(model: ModelSpec) -> str:
    act = ACTIVATION_BASE[model.activation]
    return f"{act}_and_mul" if model.mlp == "gated" else act


def elementwise_cases(run: Run) -> list[ElementwiseCase]:
    """The element-wise ops of the models' layer plans, one per (op, width); rotary is
    measured for every model (over its Q and K heads) so that each family has points."""
    cases: dict[tuple[str, int], ElementwiseCase] = {}

    def add(case: ElementwiseCase) -> None:
        cases.setdefault((case.op, case.width), case)

    for model in run.models:
        for tp in run.tps[model.name]:
            for op in layer_plan(model, tp).ops:
                width = int(op.read_elems)
                if op.name.startswith("norm"):
                    add(ElementwiseCase("norm", width, model.norm))
                elif op.name == "mlp_act":
                    add(ElementwiseCase("act", width, _act_kernel(model)))
                elif op.name.startswith("residual_add"):
                    add(ElementwiseCase("add", width, "add"))
                elif op.kind == "attn_prefill":
                    rot = (op.heads + op.kv_heads) * op.head_dim
                    add(ElementwiseCase("rotary", rot, "rotary", head_dim=op.head_dim))
        add(ElementwiseCase("embedding", model.d_model, "embedding", vocab=model.vocab_size))
    return sorted(cases.values(), key=lambda c: (c.op, c.width))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    if hasattr(F, "rms_norm"):
        return F.rms_norm(x, (x.shape[-1],), weight, eps)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the two halves of each head (GPT-NeoX / LLaMA layout)."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _elementwise_fn(
    run: Run, case: ElementwiseCase, tokens: int, tables: dict[int, torch.Tensor]
) -> Callable[[], object]:
    """The kernel of `case` over `tokens` tokens. `tables` keeps one embedding table per
    case across its token grid: filling a vocabulary-sized table costs more than
    gathering from it."""
    w = case.width
    if case.kernel == "rmsnorm":
        x, weight = _randn((tokens, w), run), _randn((w,), run)
        return lambda: rms_norm(x, weight)
    if case.kernel == "layernorm":
        x, weight, bias = _randn((tokens, w), run), _randn((w,), run), _randn((w,), run)
        return lambda: F.layer_norm(x, (w,), weight, bias)
    if case.kernel.endswith("_and_mul"):
        act, half = ACTIVATIONS[case.kernel.removesuffix("_and_mul")], w // 2
        x = _randn((tokens, 2 * half), run)
        return lambda: act(x[:, :half]) * x[:, half:]
    if case.kernel in ACTIVATIONS:
        plain, x = ACTIVATIONS[case.kernel], _randn((tokens, w), run)
        return lambda: plain(x)
    if case.kernel == "rotary":
        d = case.head_dim
        x = _randn((tokens, w // d, d), run)
        cos, sin = _randn((tokens, 1, d), run), _randn((tokens, 1, d), run)
        return lambda: rotary(x, cos, sin)
    if case.kernel == "add":
        a, b = _randn((tokens, w // 2), run), _randn((tokens, w // 2), run)
        return lambda: a + b
    if case.kernel == "embedding":
        if id(case) not in tables:
            tables.clear()
            tables[id(case)] = _randn((case.vocab, w), run)
        table = tables[id(case)]
        ids = torch.randint(0, case.vocab, (tokens,), device=run.device)
        return lambda: F.embedding(ids, table)
    raise ValueError(f"unknown element-wise kernel {case.kernel!r}")


def measure_elementwise(run: Run, skipped: list[str]) -> list[ElementwisePoint]:
    points = []
    tables: dict[int, torch.Tensor] = {}
    for case in elementwise_cases(run):
        for tokens in run.grid.elementwise_tokens:
            what = f"{case.kernel} {tokens}x{case.width}"
            build = partial(_elementwise_fn, run, case, tokens, tables)
            stats = _try_point(run, skipped, what, build)
            if stats is not None:
                points.append(
                    ElementwisePoint(
                        op=case.op,
                        tokens=tokens,
                        width=case.width,
                        **_timing(stats),
                    )
                )
    return points


# ------------------------------------------------------------------ launch and copies


def measure_launch(run: Run) -> float:
    """Seconds per tiny kernel issued back to back: the eager dispatch + launch cost."""
    a = torch.zeros(1, device=run.device)
    g = run.grid
    median, _, _ = measure(
        lambda: a.add_(1.0), run.device, warmup=10 * g.warmup, repeats=g.repeats, calls=200
    )
    return median


def _copy_fn(dst: torch.Tensor, src: torch.Tensor) -> Callable[[], object]:
    return lambda: dst.copy_(src, non_blocking=True)


def measure_copies(run: Run, skipped: list[str]) -> list[CopyPoint]:
    """Pinned host <-> device copies; on CPU one memcpy between two tensors, as h2d."""
    sizes = run.grid.copy_bytes
    biggest = max(sizes)
    g = run.grid
    points = []
    try:
        if run.is_cuda:
            host = torch.empty(biggest, dtype=torch.uint8, pin_memory=True)
            dev = torch.empty(biggest, dtype=torch.uint8, device=run.device)
        else:
            host = torch.empty(biggest, dtype=torch.uint8)
            dev = torch.empty(biggest, dtype=torch.uint8)
    except (torch.cuda.OutOfMemoryError, RuntimeError):
        skipped.append(f"copies of {biggest} bytes")
        return []
    host.fill_(1)
    dev.fill_(2)
    for size in sizes:
        h, d = host[:size], dev[:size]
        ways: list[tuple[Literal["h2d", "d2h"], Callable[[], object]]] = [("h2d", _copy_fn(d, h))]
        if run.is_cuda:
            ways.append(("d2h", _copy_fn(h, d)))
        for direction, fn in ways:
            stats = measure(
                fn,
                run.device,
                warmup=g.warmup,
                repeats=g.repeats,
                sample_s=g.sample_s,
                max_calls=g.max_calls,
            )
            points.append(CopyPoint(direction=direction, bytes=size, **_timing(stats)))
    return points


# ----------------------------------------------------------------------- collectives


@dataclass(frozen=True)
class CollectiveJob:
    """What each spawned rank measures (picklable: it crosses into the children)."""

    backend: str  # nccl; gloo on CPU for tests
    world: int
    counts: tuple[int, ...]  # group sizes n: ranks 0..n-1 take part
    sizes: tuple[int, ...]  # bytes
    dtype_name: str
    warmup: int
    repeats: int
    port: int
    out: str
    fabric: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def detect_fabric(count: int) -> str:
    """The intra-node fabric of GPUs 0..count-1 from `nvidia-smi topo -m`, as a
    sim.spec.hardware fabric kind; "" when it cannot be told. All pairs on NVLink is read
    as an NVSwitch from 8 GPUs up and as a mesh below (HGX boards of 4 are meshes)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "topo", "-m"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    rows = [line.split() for line in out.splitlines() if re.match(r"GPU\d+\s", line)]
    links = [
        row[1 + j]
        for i, row in enumerate(rows[:count])
        for j in range(count)
        if j != i and len(row) > count
    ]
    if not links:
        return ""
    nvlink = [link.startswith("NV") for link in links]
    if all(nvlink):
        return "nvswitch" if count >= 8 else "nvlink-mesh"
    return "nvlink-pairs" if any(nvlink) else "pcie"


def _collective_fn(
    op: str, n: int, size: int, group: Any, device: torch.device, dtype: torch.dtype, rank: int
) -> tuple[Callable[[], object], int]:
    """One call of `op` over `size` bytes (rounded to whole elements per rank), and the
    bytes it moves: the all-reduced tensor, the gathered output, the scattered input,
    one rank's all-to-all buffer, the message sent."""
    import torch.distributed as dist

    esize = torch.empty((), dtype=dtype).element_size()
    elems = max(n, size // esize // n * n)

    def buf(count: int) -> torch.Tensor:
        return torch.randn(count, device=device).to(dtype)

    if op == "all_reduce":
        t = buf(elems)
        return (lambda: dist.all_reduce(t, group=group)), elems * esize
    if op == "all_gather":
        inp, out = buf(elems // n), buf(elems)
        return (lambda: dist.all_gather_into_tensor(out, inp, group=group)), elems * esize
    if op == "reduce_scatter":
        inp, out = buf(elems), buf(elems // n)
        return (lambda: dist.reduce_scatter_tensor(out, inp, group=group)), elems * esize
    if op == "all_to_all":
        inp, out = buf(elems), buf(elems)
        return (lambda: dist.all_to_all_single(out, inp, group=group)), elems * esize
    if op == "send_recv":
        t = buf(elems)
        if rank == 0:
            return (lambda: dist.send(t, dst=1)), elems * esize
        return (lambda: dist.recv(t, src=0)), elems * esize
    raise ValueError(f"unknown collective {op!r}")


def _time_collective(
    fn: Callable[[], object], size: int, group: Any, device: torch.device, job: CollectiveJob
) -> Stats:
    """Samples aligned by a group-wide all-reduce; each sample the slowest rank's time."""
    import torch.distributed as dist

    flag = torch.zeros(1, device=device)
    calls = max(1, min(20, (4 * MiB) // size))
    for _ in range(job.warmup):
        fn()
    samples = []
    for _ in range(job.repeats):
        dist.all_reduce(flag, group=group)
        _sync(device)
        samples.append(_elapsed_s(fn, device, calls) / calls)
    worst = torch.tensor(samples, dtype=torch.float64, device=device)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX, group=group)
    return _stats(worst.cpu().numpy())


def _collective_worker(rank: int, job: CollectiveJob) -> None:
    """One rank of the collective benchmark; rank 0 writes the points as JSON."""
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(job.port)
    if job.backend == "nccl":
        torch.cuda.set_device(rank)
        device, dtype = torch.device("cuda", rank), DTYPES[job.dtype_name]
    else:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
        device, dtype = torch.device("cpu"), torch.float32
    dist.init_process_group(
        job.backend, rank=rank, world_size=job.world, timeout=dt.timedelta(minutes=10)
    )
    rows: list[dict[str, Any]] = []
    try:
        for n in job.counts:
            group = dist.new_group(list(range(n)))
            ops = (*COLLECTIVE_OPS, "send_recv") if n == 2 else COLLECTIVE_OPS
            for op in ops:
                if rank >= n:
                    continue
                for size in job.sizes:
                    try:
                        fn, moved = _collective_fn(op, n, size, group, device, dtype, rank)
                        fn()
                    except RuntimeError:  # an op this backend lacks (gloo): on every rank
                        break
                    stats = _time_collective(fn, moved, group, device, job)
                    rows.append(
                        {"op": op, "n_devices": n, "bytes": moved, "fabric": job.fabric}
                        | _timing(stats)
                    )
            dist.barrier()
    finally:
        dist.destroy_process_group()
    if rank == 0:
        Path(job.out).write_text(json.dumps(rows))


def measure_collectives(
    *,
    world: int,
    sizes: Iterable[int],
    counts: Iterable[int] | None = None,
    backend: str = "nccl",
    dtype_name: str = "bf16",
    warmup: int = 5,
    repeats: int = 20,
    fabric: str | None = None,
) -> list[CollectivePoint]:
    """Collectives among ranks 0..n-1 of `world` processes on this host, for each n in
    `counts` (default 2..world): NCCL on GPUs 0..world-1, or gloo on the CPU."""
    import torch.multiprocessing as mp

    fd, out = tempfile.mkstemp(suffix=".json", prefix="llmsim-collectives-")
    os.close(fd)
    job = CollectiveJob(
        backend=backend,
        world=world,
        counts=tuple(counts) if counts is not None else tuple(range(2, world + 1)),
        sizes=tuple(sizes),
        dtype_name=dtype_name,
        warmup=warmup,
        repeats=repeats,
        port=_free_port(),
        out=out,
        fabric=detect_fabric(world) if fabric is None else fabric,
    )
    try:
        mp.spawn(_collective_worker, args=(job,), nprocs=world, join=True)
        rows = json.loads(Path(out).read_text() or "[]")
    finally:
        Path(out).unlink(missing_ok=True)
    return [CollectivePoint.model_validate(row) for row in rows]


# ------------------------------------------------------------------ the whole profile


def environment(run: Run) -> Environment:
    """The device's identity and the software that measured it."""
    if run.is_cuda:
        name = torch.cuda.get_device_name(run.device)
        driver = _nvidia_smi_driver(run.device.index or 0)
    else:
        name = _cpu_model()
        driver = f"{platform.system()} {platform.release()}"
    return Environment(
        device_name=name,
        driver=driver,
        cuda=torch.version.cuda or "",
        torch=str(torch.__version__),
        python=platform.python_version(),
        host=socket.gethostname(),
        date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )


def _nvidia_smi_driver(index: int) -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", f"-i={index}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes(run: Run) -> float:
    if run.is_cuda:
        return float(torch.cuda.get_device_properties(run.device).total_memory)
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 16e9


def measured_device_spec(
    name: str, kind: str, measurements: Measurements, dtype_name: str, memory_bytes: float
) -> DeviceSpec:
    """A device whose peaks are the best this run saw: the highest GEMM FLOP/s and the
    highest streamed bandwidth (GEMM weights and element-wise ops). For a device the
    catalog lacks (every CPU), the fit measures efficiencies against these."""
    esize = dtype_bytes(dtype_name)
    flops = max((2.0 * p.m * p.n * p.k / p.median_s for p in measurements.gemm), default=1e9)
    bandwidth = max(
        [gemm_bytes(p.m, p.n, p.k, esize, esize) / p.median_s for p in measurements.gemm]
        + [elementwise_bytes(p, esize) / p.median_s for p in measurements.elementwise],
        default=1e9,
    )
    return DeviceSpec.model_validate(
        {
            "name": name,
            "kind": kind,
            "description": "peaks derived from its own calibration measurements",
            "peak_flops": {dtype_name: flops},
            "memory_bytes": memory_bytes,
            "memory_bandwidth": bandwidth,
            "launch_overhead": measurements.launch_s or 0.0,
            "efficiency": {"compute": 1.0, "memory": 1.0},
            "sources": {
                "peak_flops": "the highest GEMM FLOP/s measured by llmsim calibrate",
                "memory_bandwidth": "the highest streamed bytes/s measured by llmsim calibrate",
            },
        }
    )


def profile_device(run: Run, measurements: Measurements) -> tuple[DeviceSpec, bool]:
    """The device the profile calibrates, and whether it comes from the catalog: the one
    named by --catalog-device; on CUDA the catalog device whose name or alias is the
    GPU's name; otherwise one made from the measurements, named `cpu-calibrated` or
    after the GPU."""
    from sim.spec.catalog import load_device

    if run.catalog_device is not None:
        return run.catalog_device, True
    if run.is_cuda:
        gpu = torch.cuda.get_device_name(run.device)
        try:
            return load_device(gpu), True
        except LlmsimError:
            name = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-") or "gpu"
            kind = "gpu"
    else:
        name, kind = "cpu-calibrated", "cpu"
    spec = measured_device_spec(name, kind, measurements, run.dtype_name, _memory_bytes(run))
    return spec, False


def fit_profile(
    measurements: Measurements, spec: DeviceSpec, dtype: str = "bf16"
) -> tuple[Fit, dict[str, dict[str, float]], str | None]:
    """The fitted curves and their errors, or an empty fit and the reason."""
    try:
        fit, quality = fit_measurements(measurements, spec, dtype)
    except Exception as exc:  # measurements took minutes: keep them even if the fit fails
        return Fit(), {}, f"the fit failed ({type(exc).__name__}: {exc}); no fit written"
    return fit, quality, None


@dataclass(frozen=True)
class Result:
    profile: Profile
    warnings: tuple[str, ...]
    wall_s: float


def _family(name: str, say: Callable[[str], None], work: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    say(f"{name}: measuring")
    out = work()
    count = len(out) if isinstance(out, list) else 1
    say(f"{name}: {count} point(s) in {time.perf_counter() - t0:.1f} s")
    return out


def calibrate(run: Run, progress: Callable[[str], None] | None = None) -> Result:
    """Measure every op family of `run`, fit curves, and return the profile."""
    threads = torch.get_num_threads()
    if run.options.threads:
        torch.set_num_threads(run.options.threads)
    try:
        return _calibrate(run, progress or (lambda _line: None))
    finally:
        torch.set_num_threads(threads)


def _calibrate(run: Run, say: Callable[[str], None]) -> Result:
    t0 = time.perf_counter()
    if run.is_cuda:
        torch.cuda.set_device(run.device)
    torch.manual_seed(0)
    skipped: list[str] = []
    warnings: list[str] = []
    with torch.inference_mode():
        gemm = _family("gemm", say, lambda: measure_gemms(run, skipped))
        attention = _family("attention", say, lambda: measure_attention(run, skipped))
        elementwise = _family("elementwise", say, lambda: measure_elementwise(run, skipped))
        launch_s = _family("launch", say, lambda: measure_launch(run))
        copies = _family("copy", say, lambda: measure_copies(run, skipped))
    collectives: list[CollectivePoint] = []
    if run.options.collectives:
        g = run.grid
        world = torch.cuda.device_count()
        counts = range(2, world + 1) if not run.options.quick else sorted({2, world})
        try:
            collectives = _family(
                "collectives",
                say,
                lambda: measure_collectives(
                    world=world,
                    sizes=g.collective_bytes,
                    counts=counts,
                    dtype_name=run.dtype_name,
                    warmup=g.warmup,
                    repeats=g.repeats,
                ),
            )
        except Exception as exc:  # NCCL set-up is the most fragile part: keep the rest
            warnings.append(f"collectives failed ({type(exc).__name__}: {exc}); none recorded")
    if skipped:
        warnings.append(
            f"{len(skipped)} point(s) did not fit in memory and were skipped (first: {skipped[0]})"
        )
    measurements = Measurements(
        gemm=tuple(gemm),
        attention=tuple(attention),
        elementwise=tuple(elementwise),
        copies=tuple(copies),
        collectives=tuple(collectives),
        launch_s=launch_s,
    )
    spec, in_catalog = profile_device(run, measurements)
    say("fit: fitting curves")
    fit, quality, note = fit_profile(measurements, spec, run.dtype_name)
    if note:
        warnings.append(note)
    env = environment(run)
    profile = Profile(
        name=run.options.name or _default_name(run, spec, in_catalog),
        device=spec.name,
        description=_description(run, env),
        source=f"measured by `{run.options.command or 'llmsim calibrate'}` on {env.host}, "
        f"{env.date}",
        dtype=run.dtype_name,
        device_spec=None if in_catalog else spec,
        environment=env,
        measurements=measurements,
        fit=fit,
        quality=quality,
    )
    return Result(profile, tuple(warnings), time.perf_counter() - t0)


def _default_name(run: Run, spec: DeviceSpec, in_catalog: bool) -> str:
    """`cpu-calibrated-fp32`; a catalog device's gets `-measured`, to tell it from the
    profiles derived from public data that ship under the device's own name."""
    return f"{spec.name}-{run.dtype_name}{'-measured' if in_catalog else ''}"


def _description(run: Run, env: Environment) -> str:
    models = ", ".join(f"{m.name} (tp {','.join(map(str, run.tps[m.name]))})" for m in run.models)
    threads = "" if run.is_cuda else f", {torch.get_num_threads()} torch threads"
    return (
        f"{env.device_name}, {run.dtype_name}, eager PyTorch {env.torch} (no CUDA graphs)"
        f"{threads}. Shapes from {models}. Attention: {attention_backend_name(run)}. "
        "GEMM weights and decode KV caches read from memory (copies cycled past the "
        f"{'L2' if run.is_cuda else 'L3'} cache). "
        f"{'' if run.is_cuda else 'Copies: memcpy between host tensors, recorded as h2d. '}"
        f"{'Quick grid. ' if run.options.quick else ''}"
        "Median and p10/p90 over repeats of back-to-back calls after warm-up."
    )


def check_writable(path: Path) -> None:
    """Fail now, not after minutes of measuring, if the profile cannot be written."""
    if path.is_dir():
        raise LlmsimError("is a directory; give a file path for the profile", file=str(path))
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a"):
            pass
    except OSError as exc:
        raise LlmsimError(
            f"cannot write the profile: {exc.strerror or exc}", file=str(path)
        ) from None
    if not existed:
        path.unlink()


def write_profile(profile: Profile, path: Path) -> None:
    data = profile.model_dump(mode="json", exclude_none=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    except OSError as exc:
        raise LlmsimError(
            f"cannot write the profile: {exc.strerror or exc}", file=str(path)
        ) from None
