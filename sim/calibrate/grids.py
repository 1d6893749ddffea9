"""What one `llmsim calibrate` run measures: its options, checked, and its grid of sizes.

`Options` holds what the command line was given, as strings; `resolve` checks them
against the catalog (models, TP degrees, catalog device) and this machine (CUDA, the
number of GPUs) and returns a `Run`, before anything is measured. A `Grid` is the sizes
one run measures and how it samples them, for CUDA or CPU, full or --quick.

Assumptions: the shapes worth measuring are those of the chosen models' layer plans at
the chosen TP degrees (by default six 7B-70B models at TP 1, 2, 4, 8 on CUDA, gpt3-125m
at TP 1 on a CPU), in bf16 on CUDA and fp32 on a CPU unless told. Sizes are powers of
two (with the midpoints 3·2^i on the full CUDA grid), attention cases capped in total
tokens (prefill) and KV tokens (decode); a point that does not fit in device memory is
skipped, not fatal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from sim.arith.ops import check_tp, valid_tp
from sim.errors import LlmsimError
from sim.spec.catalog import load_device, load_model
from sim.spec.hardware import DeviceSpec
from sim.spec.model import ModelSpec

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
    point_budget_s: float = 2.0  # a point of calls longer than this gets fewer samples


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
    hf: bool = False  # also time ops as transformers' eager modules call them
    compile: bool = True  # time a torch.compile'd decoder's step (not with --quick)
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
