"""A real small decoder in PyTorch, shaped by a ModelSpec, to time against the simulator.

It exists so that a test can run the same model on the same machine twice, once
simulated from a calibration profile and once for real, and compare the latencies.
So it runs the ops of `sim.arith.ops.layer_plan` (at tp = 1) and nothing else, with their
shapes: per layer a norm, one fused QKV matmul, rotary on Q and K, attention, the
output projection, a residual add, the second norm, the MLP (gate and up, activation
and multiply, down; or up, activation, down) and the second residual add; around the
layers the embedding gather, the final norm and the LM head on the last token of each
sequence (the rows the simulator's LM head prices). Its parameter count is
`sim.arith.ops.total_params` of the spec.

Assumptions: random weights (seeded), no tokenizer and no sampling; eager PyTorch, no
CUDA graphs. Attention is torch's scaled_dot_product_attention over a preallocated
KV cache: causal prefill from an empty cache (grouped K/V heads through `enable_gqa`),
and decode with the query heads of a group folded into the query axis, as the
calibration harness times it (sim.calibrate.attention). A sliding window is not
applied. MoE layers, ALiBi or relative positions and encoder-only models are not
supported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sim.calibrate.attention import SDPA_GQA
from sim.calibrate.elementwise import ACTIVATION_BASE, ACTIVATIONS, rms_norm, rotary
from sim.calibrate.grids import DTYPES, parse_device
from sim.calibrate.timing import measure
from sim.errors import LlmsimError
from sim.spec.model import ModelSpec

KVCache = list[tuple[torch.Tensor, torch.Tensor]]


def check_supported(model: ModelSpec) -> None:
    """Raise LlmsimError for an architecture this decoder does not build."""
    if model.moe is not None:
        raise LlmsimError(f"{model.name}: the reference decoder has no MoE layers")
    if model.encoder_only:
        raise LlmsimError(f"{model.name}: the reference decoder is decoder-only")
    if model.position not in ("rotary", "learned", "none"):
        raise LlmsimError(
            f"{model.name}: position {model.position!r} is not supported by the reference "
            "decoder (rotary, learned or none)"
        )


class RMSNorm(nn.Module):
    def __init__(self, width: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def _norm(model: ModelSpec) -> nn.Module:
    return RMSNorm(model.d_model) if model.norm == "rmsnorm" else nn.LayerNorm(model.d_model)


class DecoderLayer(nn.Module):
    """One layer; module names are the layer plan's op names."""

    def __init__(self, model: ModelSpec):
        super().__init__()
        d, q, kv, ff = model.d_model, model.q_dim, model.kv_dim, model.d_ff
        self.heads, self.kv_heads, self.head_dim = model.n_heads, model.kv_heads, model.head_dim
        self.rotary = model.position == "rotary"
        self.parallel = model.parallel_block
        self.gated = model.mlp == "gated"
        self.act = ACTIVATIONS[ACTIVATION_BASE[model.activation]]
        self.norm = _norm(model)
        self.norm_2 = None if self.parallel else _norm(model)
        self.qkv_proj = nn.Linear(d, q + 2 * kv, bias=model.has_qkv_bias)
        self.o_proj = nn.Linear(q, d, bias=model.bias)
        self.mlp_gate = nn.Linear(d, ff, bias=model.bias) if self.gated else None
        self.mlp_up = nn.Linear(d, ff, bias=model.bias)
        self.mlp_down = nn.Linear(ff, d, bias=model.bias)

    def mlp(self, h: torch.Tensor) -> torch.Tensor:
        if self.mlp_gate is not None:
            return self.mlp_down(self.act(self.mlp_gate(h)) * self.mlp_up(h))
        return self.mlp_down(self.act(self.mlp_up(h)))

    def attention(
        self,
        h: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor],
        start: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> torch.Tensor:
        b, s, _ = h.shape
        hq, hk, dh = self.heads, self.kv_heads, self.head_dim
        q, k, v = self.qkv_proj(h).split([hq * dh, hk * dh, hk * dh], dim=-1)
        q = q.view(b, s, hq, dh).transpose(1, 2)
        k = k.view(b, s, hk, dh).transpose(1, 2)
        v = v.view(b, s, hk, dh).transpose(1, 2)
        if self.rotary:
            q, k = rotary(q, cos, sin), rotary(k, cos, sin)
        k_cache, v_cache = cache
        k_cache[:, :, start : start + s] = k
        v_cache[:, :, start : start + s] = v
        keys, values = k_cache[:, :, : start + s], v_cache[:, :, : start + s]
        if s == 1:
            # One query per sequence: the query heads sharing a K/V head are its rows.
            grouped = q.reshape(b, hk, hq // hk, dh)
            out = F.scaled_dot_product_attention(grouped, keys, values).reshape(b, hq, 1, dh)
        elif start != 0:
            raise ValueError("prefill runs from an empty cache (start 0)")
        elif hq == hk:
            out = F.scaled_dot_product_attention(q, keys, values, is_causal=True)
        elif SDPA_GQA:
            out = F.scaled_dot_product_attention(q, keys, values, is_causal=True, enable_gqa=True)
        else:
            rep = hq // hk
            keys, values = keys.repeat_interleave(rep, 1), values.repeat_interleave(rep, 1)
            out = F.scaled_dot_product_attention(q, keys, values, is_causal=True)
        return self.o_proj(out.transpose(1, 2).reshape(b, s, hq * dh))

    def forward(
        self,
        x: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor],
        start: int,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ) -> torch.Tensor:
        h = self.norm(x)
        if self.norm_2 is None:  # parallel block: attention and MLP read the same input
            return x + (self.attention(h, cache, start, cos, sin) + self.mlp(h))
        x = x + self.attention(h, cache, start, cos, sin)
        return x + self.mlp(self.norm_2(x))


class ReferenceDecoder(nn.Module):
    """Embedding, `n_layers` decoder layers, final norm and LM head of a ModelSpec."""

    def __init__(self, model: ModelSpec):
        super().__init__()
        check_supported(model)
        self.spec = model
        d = model.d_model
        self.embed = nn.Embedding(model.vocab_size, d)
        self.positions = nn.Embedding(model.max_seq_len, d) if model.position == "learned" else None
        self.layers = nn.ModuleList(DecoderLayer(model) for _ in range(model.n_layers))
        self.norm = _norm(model)
        self.lm_head = None if model.tied_embeddings else nn.Linear(d, model.vocab_size, False)

    def new_cache(self, batch: int, max_len: int) -> KVCache:
        """Per layer, K and V of shape (batch, kv_heads, max_len, head_dim), random."""
        p = next(self.parameters())
        m = self.spec
        shape = (batch, m.kv_heads, max_len, m.head_dim)
        return [
            (
                torch.randn(shape, device=p.device, dtype=p.dtype),
                torch.randn(shape, device=p.device, dtype=p.dtype),
            )
            for _ in range(m.n_layers)
        ]

    def _rotary_tables(self, start: int, length: int, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        dh = self.spec.head_dim
        if self.spec.position != "rotary":
            empty = x.new_empty(0)
            return empty, empty
        inv_freq = 1.0 / 10000.0 ** (
            torch.arange(0, dh, 2, device=x.device, dtype=torch.float32) / dh
        )
        pos = torch.arange(start, start + length, device=x.device, dtype=torch.float32)
        freqs = torch.outer(pos, inv_freq)
        angles = torch.cat((freqs, freqs), dim=-1)
        return angles.cos().to(x.dtype), angles.sin().to(x.dtype)

    def forward(self, ids: torch.Tensor, cache: KVCache, start: int = 0) -> torch.Tensor:
        """Logits of the last position of each sequence for tokens `ids` (batch, s)
        placed at positions start..start+s-1; their K/V enter `cache`."""
        x = self.embed(ids)
        if self.positions is not None:
            x = x + self.positions(torch.arange(start, start + ids.shape[1], device=ids.device))
        cos, sin = self._rotary_tables(start, ids.shape[1], x)
        for layer, layer_cache in zip(self.layers, cache, strict=True):
            x = layer(x, layer_cache, start, cos, sin)
        last = self.norm(x[:, -1])
        if self.lm_head is None:
            return last @ self.embed.weight.t()
        logits: torch.Tensor = self.lm_head(last)
        return logits


def build_decoder(
    model: ModelSpec, dtype: str = "fp32", device: str = "cpu", seed: int = 0
) -> ReferenceDecoder:
    """A decoder with seeded random weights, in `dtype` on `device` (cpu, cuda, cuda:N)."""
    if dtype not in DTYPES:
        raise LlmsimError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    kind, index = parse_device(device)
    if kind == "cuda" and not torch.cuda.is_available():
        raise LlmsimError("CUDA is not available; use device cpu")
    check_supported(model)
    torch.manual_seed(seed)
    target = torch.device(kind, index) if index is not None else torch.device(kind)
    with torch.device(target):
        decoder = ReferenceDecoder(model)
    return decoder.to(dtype=DTYPES[dtype]).eval()


def _positive(**values: int) -> None:
    for key, value in values.items():
        if value < 1:
            raise LlmsimError(f"{key} must be at least 1, got {value}")


def _time_forward(
    model: ModelSpec,
    batch: int,
    tokens: int,
    start: int,
    dtype: str,
    device: str,
    warmup: int,
    repeats: int,
) -> float:
    """Median seconds of one forward pass of `batch` sequences of `tokens` new tokens at
    positions start..start+tokens-1, over a cache of start+tokens positions."""
    decoder = build_decoder(model, dtype, device)
    dev = next(decoder.parameters()).device
    with torch.inference_mode():
        cache = decoder.new_cache(batch, start + tokens)
        ids = torch.randint(0, model.vocab_size, (batch, tokens), device=dev)
        median, _, _ = measure(
            lambda: decoder(ids, cache, start), dev, warmup=warmup, repeats=repeats, calls=1
        )
    return median


def measure_prefill(
    model: ModelSpec,
    batch: int,
    prompt: int,
    dtype: str = "fp32",
    device: str = "cpu",
    *,
    warmup: int = 2,
    repeats: int = 5,
) -> float:
    """Median seconds of one prefill: `batch` prompts of `prompt` tokens from an empty
    cache, through every layer, to the logits of each sequence's last token."""
    _positive(batch=batch, prompt=prompt)
    if model.position == "learned" and prompt > model.max_seq_len:
        raise LlmsimError(f"prompt {prompt} exceeds max_seq_len={model.max_seq_len}")
    return _time_forward(model, batch, prompt, 0, dtype, device, warmup, repeats)


def measure_decode_step(
    model: ModelSpec,
    batch: int,
    context: int,
    dtype: str = "fp32",
    device: str = "cpu",
    *,
    warmup: int = 2,
    repeats: int = 5,
) -> float:
    """Median seconds of one decode step: `batch` sequences each generating one token
    after `context` cached ones (random cache contents; every repeat writes the same
    slot, so every repeat does the same work)."""
    _positive(batch=batch, context=context)
    if model.position == "learned" and context + 1 > model.max_seq_len:
        raise LlmsimError(f"context {context} + 1 exceeds max_seq_len={model.max_seq_len}")
    return _time_forward(model, batch, 1, context, dtype, device, warmup, repeats)
