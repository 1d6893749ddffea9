"""Reading Vidur's public CUDA profiling data into llmsim `Measurements`.

Vidur (github.com/microsoft/vidur, MIT) profiled each op of one transformer layer with
PyTorch on A100, H100, A40 and A30 GPUs, for several models, token counts (1–4096) and
TP degrees (`compute/<gpu>/<model>/mlp.csv`), attention with FlashInfer on the A30
(`attention.csv`), and NCCL all-reduce and send/recv against message size on DGX and
pairwise-NVLink machines (`network/<fabric>/*.csv`). Times there are milliseconds;
min/max become our p10/p90 (the spread Vidur kept).

Mapping to our ops: attn_pre_proj = qkv_proj (n = (h + 2·kv)·d_head / tp, k = d),
attn_post_proj = o_proj, mlp_up_proj = gate and up fused (n = 2·ff/tp for gated MLPs),
mlp_down_proj; norms, rotary, activation, residual add and embedding are element-wise
with width = elements read per token. The data is read where it lies (../shared/data),
never copied: shipped profiles hold only what is fitted from it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from sim.spec.profile import (
    AttentionPoint,
    CollectivePoint,
    ElementwisePoint,
    GemmPoint,
    Measurements,
)

# Vidur's directory names -> our catalog devices and nodes.
DEVICES = {"a100": "a100-80gb-sxm", "h100": "h100-sxm", "a40": "a40", "a30": "a30"}
FABRICS = {
    "a100_dgx": "dgx-a100",
    "h100_dgx": "dgx-h100",
    "a100_pairwise_nvlink": "a100-pairwise-nvlink-4x",
    "h100_pairwise_nvlink": "h100-pairwise-nvlink",
    "a40_pairwise_nvlink": "a40-pairwise-nvlink-8x",
    "a30_single_gpu": "a30-single",
}
GEMMS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")


def default_root() -> Path:
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "calibration" / "vidur"


def _timing(row: pd.Series, op: str) -> dict[str, float]:
    ms = 1e-3
    return {
        "median_s": float(row[f"time_stats.{op}.median"]) * ms,
        "p10_s": float(row[f"time_stats.{op}.min"]) * ms,
        "p90_s": float(row[f"time_stats.{op}.max"]) * ms,
    }


def _valid(row: pd.Series, op: str) -> bool:
    value = row.get(f"time_stats.{op}.median")
    return value is not None and pd.notna(value) and float(value) > 0


def compute_points(csv: Path) -> tuple[list[GemmPoint], list[ElementwisePoint]]:
    """GEMM and element-wise points of one mlp.csv."""
    df = pd.read_csv(csv)
    gemms: list[GemmPoint] = []
    elems: list[ElementwisePoint] = []
    for _, r in df.iterrows():
        tp = int(r["num_tensor_parallel_workers"])
        m = int(r["num_tokens"])
        d, h, kv = int(r["n_embd"]), int(r["n_head"]), int(r["n_kv_head"])
        ff, gated = int(r["n_expanded_embd"]), bool(r["use_gated_mlp"])
        hd = d // h
        shapes = {
            "attn_pre_proj": ((h + 2 * kv) * hd // tp, d),
            "attn_post_proj": (d, h * hd // tp),
            "mlp_up_proj": ((2 if gated else 1) * ff // tp, d),
            "mlp_down_proj": (d, ff // tp),
        }
        for op, (n, k) in shapes.items():
            if _valid(r, op):
                gemms.append(GemmPoint(m=m, n=n, k=k, **_timing(r, op)))
        widths = {
            "input_layernorm": ("norm", d),
            "post_attention_layernorm": ("norm", d),
            "attn_rope": ("rotary", (h + kv) * hd // tp),
            "mlp_act": ("act", (2 if gated else 1) * ff // tp),
            "add": ("add", 2 * d),
            "emb": ("embedding", d),
        }
        for col, (family, width) in widths.items():
            if _valid(r, col):
                elems.append(ElementwisePoint(op=family, tokens=m, width=width, **_timing(r, col)))
    return gemms, elems


def attention_points(csv: Path) -> list[AttentionPoint]:
    df = pd.read_csv(csv)
    points: list[AttentionPoint] = []
    for _, r in df.iterrows():
        tp = int(r["num_tensor_parallel_workers"])
        heads, kv_heads = int(r["n_q_head"]) // tp, int(r["n_kv_head"]) // tp
        head_dim = int(r["n_embd"]) // int(r["n_q_head"])
        cached = int(r["kv_cache_size"])
        prefill = bool(r["is_prefill"])
        op = "attn_prefill" if prefill else "attn_decode"
        if not _valid(r, op):
            continue
        timing = _timing(r, op)
        if _valid(r, "attn_kv_cache_save"):  # our attention op includes writing K and V
            save = _timing(r, "attn_kv_cache_save")
            timing = {k: timing[k] + save[k] for k in timing}
        q = int(r["prefill_chunk_size"]) if prefill else 1
        points.append(
            AttentionPoint(
                phase="prefill" if prefill else "decode",
                batch=int(r["batch_size"]),
                q_len=q,
                kv_len=cached + q if prefill else cached,
                heads=heads,
                kv_heads=kv_heads,
                head_dim=head_dim,
                **timing,
            )
        )
    return points


def collective_points(folder: Path) -> list[CollectivePoint]:
    fabric = FABRICS.get(folder.name, folder.name)
    points: list[CollectivePoint] = []
    for op in ("all_reduce", "send_recv"):
        csv = folder / f"{op}.csv"
        if not csv.exists():
            continue
        df = pd.read_csv(csv)
        for _, r in df.iterrows():
            n, per_node = int(r["num_workers"]), int(r["devices_per_node"])
            if n < 2 or not _valid(r, op):
                continue
            where = fabric if per_node >= n else f"{fabric}*{n // per_node}"
            points.append(
                CollectivePoint(
                    op=op, n_devices=n, bytes=int(r["size"]), fabric=where, **_timing(r, op)
                )
            )
    return points


def models_of(root: Path, gpu: str) -> list[str]:
    base = root / "profiling" / "compute" / gpu
    return sorted(str(p.parent.relative_to(base)) for p in base.glob("*/*/mlp.csv"))


def measurements(
    root: Path, gpu: str, *, exclude_models: tuple[str, ...] = (), fabrics: tuple[str, ...] = ()
) -> Measurements:
    """All of one GPU's points (optionally without some models), plus the collectives of
    the named fabric folders."""
    base = root / "profiling" / "compute" / gpu
    gemms: list[GemmPoint] = []
    elems: list[ElementwisePoint] = []
    attention: list[AttentionPoint] = []
    for model in models_of(root, gpu):
        if model in exclude_models:
            continue
        g, e = compute_points(base / model / "mlp.csv")
        gemms += g
        elems += e
        att = base / model / "attention.csv"
        if att.exists():
            attention += attention_points(att)
    collectives: list[CollectivePoint] = []
    for fabric in fabrics:
        collectives += collective_points(root / "profiling" / "network" / fabric)
    return Measurements(
        gemm=tuple(gemms),
        elementwise=tuple(elems),
        attention=tuple(attention),
        collectives=tuple(collectives),
    )
