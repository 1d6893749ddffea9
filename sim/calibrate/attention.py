"""Attention microbenchmarks: causal prefill and decode, for the heads one device holds.

Prefill: `batch` sequences of `q_len` tokens each, causal. Decode: one query per
sequence against `kv_len` keys. Both for every (heads, kv_heads, head_dim) one device
holds in the chosen models at the chosen TP degrees, over the grid's batch x length
cases (capped in total tokens).

Kernels: flash_attn's `flash_attn_func` / `flash_attn_with_kvcache` when that package
imports (CUDA, fp16/bf16); otherwise torch's `scaled_dot_product_attention` with
whichever backend torch picks. Grouped heads: prefill uses `enable_gqa` (or expands K/V
once, outside the timing, on a torch without it); decode folds the query heads of a
group into the query axis, so each K/V head is read once, as FlashDecoding does.

Assumptions: decode KV caches are read from memory (calls cycle through copies that
outgrow the last-level cache, see `sim.calibrate.timing.cold`); prefill's Q, K and V,
produced just before, stay cached. No paged KV cache: one contiguous cache per batch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache, partial
from typing import Any

import torch
import torch.nn.functional as F

from sim.arith.ops import layer_plan
from sim.calibrate.grids import Run
from sim.calibrate.timing import cold, cycle, randn, timing, try_point
from sim.spec.profile import AttentionPoint

# SDPA learnt `enable_gqa` in torch 2.5 (it is a builtin: no signature to inspect).
SDPA_GQA = tuple(int(p) for p in re.findall(r"\d+", torch.__version__)[:2]) >= (2, 5)


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
        from flash_attn import flash_attn_func, flash_attn_with_kvcache  # optional extra
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
        q, k, v = randn((b, s, h, d), run), randn((b, s, hk, d), run), randn((b, s, hk, d), run)
        func = flash[0]
        return lambda: func(q, k, v, causal=True)
    q = randn((b, h, s, d), run)
    k, v = randn((b, hk, s, d), run), randn((b, hk, s, d), run)
    if h == hk:
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if SDPA_GQA:
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    k, v = k.repeat_interleave(h // hk, dim=1), v.repeat_interleave(h // hk, dim=1)
    return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)


def _decode_fn(run: Run, b: int, kv: int, h: int, hk: int, d: int) -> Callable[[], object]:
    """One query per sequence against a KV cache read from memory (see `cold`)."""
    flash = flash_backend(run)
    if flash is not None:
        q = randn((b, 1, h, d), run)
        caches = cold(run, (randn((b, kv, hk, d), run), randn((b, kv, hk, d), run)))
        lens = torch.full((b,), kv, dtype=torch.int32, device=run.device)
        func, nxt = flash[1], cycle(caches)

        def flash_step() -> object:
            k_cache, v_cache = nxt()
            return func(q, k_cache, v_cache, cache_seqlens=lens)

        return flash_step
    # The h/hk query heads that share a K/V head become that head's query rows: exact
    # for one query per sequence (no causal mask), and each K/V head is read once.
    q = randn((b, hk, h // hk, d), run)
    kvs = cycle(cold(run, (randn((b, hk, kv, d), run), randn((b, hk, kv, d), run))))

    def sdpa_step() -> object:
        k, v = kvs()
        return F.scaled_dot_product_attention(q, k, v)

    return sdpa_step


def attention_cases(run: Run) -> list[tuple[str, int, int]]:
    """The grid's (phase, batch, length) attention cases within its token caps."""
    g = run.grid
    return [
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


def measure_attention(run: Run, skipped: list[str]) -> list[AttentionPoint]:
    cases = attention_cases(run)
    points = []
    for h, hk, d in attention_configs(run):
        for phase, b, length in cases:
            build = partial(
                _prefill_fn if phase == "prefill" else _decode_fn, run, b, length, h, hk, d
            )
            stats = try_point(run, skipped, f"{phase} b={b} len={length} h={h}", build)
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
                    **timing(stats),
                )
            )
    return points
