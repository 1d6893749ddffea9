"""Element-wise microbenchmarks at the widths of the models' layer plans.

The ops, each at its width (elements read per token) and the grid's token counts: the
model's norm (RMSNorm or LayerNorm), its MLP activation (SiLU-and-mul for a gated MLP,
the plain activation otherwise), rotary embedding over the device's Q and K heads, the
residual add and the embedding gather. `rms_norm`, `rotary` and the activation tables
are shared with the reference decoder (`sim.calibrate.reference`).

Assumptions: eager PyTorch, so composite ops (rotary, SiLU-and-mul) run as several
kernels, as in Hugging Face transformers; serving engines with fused kernels are faster
there. Operands are activations, produced just before they are used: they stay cached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F

from sim.arith.ops import layer_plan
from sim.calibrate.grids import Run
from sim.calibrate.timing import randn, timing, try_point
from sim.cost.hf_eager import ACTIVATION_BASE
from sim.spec.model import ModelSpec
from sim.spec.profile import ElementwisePoint


@dataclass(frozen=True)
class ElementwiseCase:
    """One element-wise kernel at one width (elements read per token)."""

    op: Literal["norm", "act", "rotary", "add", "embedding"]
    width: int
    kernel: str  # rmsnorm layernorm silu_and_mul gelu_and_mul relu_and_mul gelu relu silu
    head_dim: int = 0  # rotary
    vocab: int = 0  # embedding


# Each base function of a ModelSpec activation (ACTIVATION_BASE) in torch.
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
        x, weight = randn((tokens, w), run), randn((w,), run)
        return lambda: rms_norm(x, weight)
    if case.kernel == "layernorm":
        x, weight, bias = randn((tokens, w), run), randn((w,), run), randn((w,), run)
        return lambda: F.layer_norm(x, (w,), weight, bias)
    if case.kernel.endswith("_and_mul"):
        act, half = ACTIVATIONS[case.kernel.removesuffix("_and_mul")], w // 2
        x = randn((tokens, 2 * half), run)
        return lambda: act(x[:, :half]) * x[:, half:]
    if case.kernel in ACTIVATIONS:
        plain, x = ACTIVATIONS[case.kernel], randn((tokens, w), run)
        return lambda: plain(x)
    if case.kernel == "rotary":
        d = case.head_dim
        x = randn((tokens, w // d, d), run)
        cos, sin = randn((tokens, 1, d), run), randn((tokens, 1, d), run)
        return lambda: rotary(x, cos, sin)
    if case.kernel == "add":
        a, b = randn((tokens, w // 2), run), randn((tokens, w // 2), run)
        return lambda: a + b
    if case.kernel == "embedding":
        if id(case) not in tables:
            tables.clear()
            tables[id(case)] = randn((case.vocab, w), run)
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
            stats = try_point(run, skipped, what, build)
            if stats is not None:
                points.append(
                    ElementwisePoint(
                        op=case.op,
                        tokens=tokens,
                        width=case.width,
                        **timing(stats),
                    )
                )
    return points
