"""Microbenchmarks of ops as Hugging Face transformers' eager modules call them
(`llmsim calibrate --hf`; the `hf-eager` runtimes price with them, sim.cost.hf_eager).

Every form is called through the installed transformers' own code where it has a
function or module for it, so that what is timed is what that version runs:

- attention: `integrations.sdpa_attention.sdpa_attention_forward` with the query, keys
  and values laid out as the model hands them over (Q a transposed view of its
  projection; with a cache K/V the contiguous result of the cache's append, without it
  transposed views), no mask (transformers drops it when no sequence is padded), then
  the output transposed back and made contiguous (inside the function). Grouped K/V
  heads go the way that function sends them on this device: on torch >= 2.5 with a CPU
  or CUDA device, SDPA's `enable_gqa`. Prefill (causal) and decode, per
  (heads, kv_heads, head_dim) of the chosen models, over the attention grid.
- the KV cache: a DynamicCache layer appends with `torch.cat([cache, new], dim=-2)`
  for K and for V (cache_utils.DynamicLayer.update): recorded as op `kv_cat`, tokens the
  KV tokens after the append, width 2 * kv_heads * head_dim.
- norms: `LlamaRMSNorm` (six kernels in fp32: pow, mean, add, rsqrt, mul, mul; two
  dtype casts more in bf16), `nn.LayerNorm` (one).
- activations: GPT-2's `gelu_new` (`activations.NewGELUActivation`: eight kernels),
  else `ACT2FN[act](gate) * up` on two separate projections (gated) or `ACT2FN[act]`.
- rotary: `models.llama.modeling_llama.apply_rotary_pos_emb` on Q and K (five kernels
  each: two muls, a negation, a cat in `rotate_half`, an add).
- GEMMs: GPT-2's `pytorch_utils.Conv1D` (addmm(bias, x, W[k,n])) at its four shapes,
  recorded as `form: conv1d`; Llama's separate Q, K and V projections as nn.Linear
  shapes of their own.

And the host time of transformers itself: one decode step (batch 1, after
HOST_CONTEXT cached tokens, a DynamicCache) of a small model of each family the chosen
models belong to (`HOST_PROBES`: d_model 64, vocabulary 256), with 1 and with 3 layers:
the difference is what each layer costs, the rest what the step costs outside its
layers. At that size the kernels do next to nothing: the figures are the Python of
transformers' modules and the dispatch of their kernels (sim.cost.hf_eager takes out
what its op prices already hold).

Which modules a model runs is `sim.cost.hf_eager.hf_family`. Only TP 1: transformers
runs a model on one device. Assumptions as in the other families: weights and decode KV
caches read from memory (calls cycle through copies past the last-level cache),
activations cached.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
from collections.abc import Callable, Iterator
from functools import partial
from types import ModuleType, SimpleNamespace
from typing import Any

import torch

from sim.arith.ops import layer_plan
from sim.calibrate.attention import attention_cases
from sim.calibrate.grids import Run
from sim.calibrate.runtime import PROBE
from sim.calibrate.timing import cold, cycle, measure, randn, timing, try_point
from sim.cost.hf_eager import CONV1D_OPS, hf_family, hf_kernels
from sim.errors import LlmsimError
from sim.spec.model import ModelSpec
from sim.spec.profile import AttentionPoint, ElementwisePoint, GemmPoint, HostProbe

HF_HINT = "transformers is not installed (pip install 'llmsim[calibrate]'): --hf needs it"


def require_transformers() -> ModuleType:
    """The `transformers` module, or an LlmsimError saying how to install it."""
    try:
        return importlib.import_module("transformers")
    except ImportError:
        raise LlmsimError(HF_HINT, key="--hf") from None


def _hf(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(f"transformers.{module}"), name)


# --------------------------------------------------------------------------- GEMMs


def hf_gemm_shapes(model: ModelSpec) -> list[tuple[str, int, int]]:
    """(form, n, k) of the GEMMs transformers runs where the layer plan's differ:
    GPT-2's Conv1D shapes, Llama's separate Q and K/V projections."""
    family = hf_family(model)
    if family == "gpt2":
        return [("conv1d", op.n, op.k) for op in layer_plan(model, 1).ops if op.name in CONV1D_OPS]
    if family == "llama":
        return [("linear", model.q_dim, model.d_model), ("linear", model.kv_dim, model.d_model)]
    return []


def _conv1d_fn(run: Run, m: int, sets: list[tuple[torch.Tensor, ...]]) -> Callable[[], object]:
    x = randn((m, sets[0][0].shape[0]), run)
    nxt = cycle(sets)

    def conv1d() -> object:  # Conv1D.forward: addmm(bias, x.view(-1, nx), weight)
        weight, bias = nxt()
        return torch.addmm(bias, x.view(-1, x.size(-1)), weight)

    return conv1d


def _linear_fn(run: Run, m: int, sets: list[tuple[torch.Tensor, ...]]) -> Callable[[], object]:
    x = randn((m, sets[0][0].shape[1]), run)
    nxt = cycle(sets)
    return lambda: torch.nn.functional.linear(x, nxt()[0])


def measure_hf_gemms(run: Run, skipped: list[str]) -> list[GemmPoint]:
    shapes = sorted({s for model in run.models for s in hf_gemm_shapes(model)})
    points = []
    for form, n, k in shapes:
        if form == "conv1d":
            sets = cold(run, (randn((k, n), run), randn((n,), run)))
            make = _conv1d_fn
        else:
            sets = cold(run, (randn((n, k), run),))
            make = _linear_fn
        for m in run.grid.gemm_m:
            stats = try_point(run, skipped, f"{form} {m}x{n}x{k}", partial(make, run, m, sets))
            if stats is not None:
                points.append(
                    GemmPoint(
                        m=m, n=n, k=k, form="conv1d" if form == "conv1d" else None, **timing(stats)
                    )
                )
        del sets
    return points


# ----------------------------------------------------------------------- attention


def _heads(run: Run, b: int, s: int, h: int, d: int) -> torch.Tensor:
    """A (b, h, s, d) transposed view of a (b, s, h * d) projection, as the model's."""
    return randn((b, s, h * d), run).view(b, s, h, d).transpose(1, 2)


def _sdpa_module(h: int, hk: int) -> SimpleNamespace:
    """What sdpa_attention_forward reads of the attention module."""
    return SimpleNamespace(num_key_value_groups=h // hk, is_causal=True, training=False)


def _hf_prefill_fn(run: Run, b: int, s: int, h: int, hk: int, d: int) -> Callable[[], object]:
    forward = _hf("integrations.sdpa_attention.sdpa_attention_forward")
    module = _sdpa_module(h, hk)
    q, k, v = _heads(run, b, s, h, d), _heads(run, b, s, hk, d), _heads(run, b, s, hk, d)
    scale = d**-0.5
    return lambda: forward(module, q, k, v, None, scaling=scale)


def _hf_decode_fn(run: Run, b: int, kv: int, h: int, hk: int, d: int) -> Callable[[], object]:
    """One query per sequence against K/V of kv + 1 tokens, the cache's appended copy."""
    forward = _hf("integrations.sdpa_attention.sdpa_attention_forward")
    module = _sdpa_module(h, hk)
    q = _heads(run, b, 1, h, d)
    kvs = cycle(cold(run, (randn((b, hk, kv + 1, d), run), randn((b, hk, kv + 1, d), run))))
    scale = d**-0.5

    def step() -> object:
        k, v = kvs()
        return forward(module, q, k, v, None, scaling=scale)

    return step


def hf_attention_configs(run: Run) -> list[tuple[int, int, int]]:
    out = set()
    for model in run.models:
        if model.encoder_only:
            continue
        op = next(o for o in layer_plan(model, 1).ops if o.kind == "attn_prefill")
        out.add((op.heads, op.kv_heads, op.head_dim))
    return sorted(out)


def measure_hf_attention(run: Run, skipped: list[str]) -> list[AttentionPoint]:
    points = []
    for h, hk, d in hf_attention_configs(run):
        for phase, b, length in attention_cases(run):
            make = _hf_prefill_fn if phase == "prefill" else _hf_decode_fn
            build = partial(make, run, b, length, h, hk, d)
            stats = try_point(run, skipped, f"hf {phase} b={b} len={length} h={h}", build)
            if stats is None:
                continue
            points.append(
                AttentionPoint(
                    phase="prefill" if phase == "prefill" else "decode",
                    batch=b,
                    q_len=length if phase == "prefill" else 1,
                    kv_len=length if phase == "prefill" else length + 1,
                    heads=h,
                    kv_heads=hk,
                    head_dim=d,
                    form="hf",
                    **timing(stats),
                )
            )
    return points


# --------------------------------------------------------------------- element-wise


def _kv_cat_fn(run: Run, b: int, kv: int, hk: int, d: int) -> Callable[[], object]:
    """DynamicLayer.update: torch.cat([cache, new], dim=-2), for K and for V. Each
    append's result becomes that layer's cache (less its first token, so the length
    holds) and the old cache is freed, as in a decode step: freeing each result at once
    instead would hand the allocator's top chunk back to the system every call, and pay
    its page faults again on the next (tens of times the copy, for caches of tens of
    MB)."""
    sets = cold(run, (randn((b, hk, kv, d), run), randn((b, hk, kv, d), run)))
    new_k, new_v = randn((b, hk, 1, d), run), randn((b, hk, 1, d), run)
    turn = [0]

    def append() -> object:
        i = turn[0]
        k, v = sets[i]
        k, v = torch.cat([k, new_k], dim=-2), torch.cat([v, new_v], dim=-2)
        sets[i] = (k[:, :, 1:], v[:, :, 1:])
        turn[0] = (i + 1) % len(sets)
        return k, v

    return append


def _norm_fn(run: Run, kernel: str, tokens: int, width: int) -> Callable[[], object]:
    if kernel == "rmsnorm":
        norm = _hf("models.llama.modeling_llama.LlamaRMSNorm")(width)
    else:
        norm = torch.nn.LayerNorm(width)
    norm = norm.to(device=run.device, dtype=run.dtype)
    x = randn((1, tokens, width), run)
    return lambda: norm(x)


def _act_fn(run: Run, kernel: str, tokens: int, width: int) -> Callable[[], object]:
    act2fn = _hf("activations.ACT2FN")
    if kernel.endswith("_and_mul"):
        act, half = act2fn[kernel.removesuffix("_and_mul")], width // 2
        gate, up = randn((1, tokens, half), run), randn((1, tokens, half), run)
        return lambda: act(gate) * up
    plain, x = act2fn[kernel], randn((1, tokens, width), run)
    return lambda: plain(x)


def _rotary_fn(run: Run, tokens: int, h: int, hk: int, d: int) -> Callable[[], object]:
    apply = _hf("models.llama.modeling_llama.apply_rotary_pos_emb")
    q, k = _heads(run, 1, tokens, h, d), _heads(run, 1, tokens, hk, d)
    cos, sin = randn((1, tokens, d), run), randn((1, tokens, d), run)
    return lambda: apply(q, k, cos, sin)


def measure_hf_elementwise(run: Run, skipped: list[str]) -> list[ElementwisePoint]:
    cases: dict[tuple[str, str, int], Callable[[int], Callable[[], object]]] = {}
    for model in run.models:
        if model.encoder_only:
            continue
        kernels = hf_kernels(model)
        d = model.d_model
        cases[("norm", kernels["norm"], d)] = partial(_norm_fn, run, kernels["norm"], width=d)
        act_width = 2 * model.d_ff if model.mlp == "gated" else model.d_ff
        cases[("act", kernels["act"], act_width)] = partial(
            _act_fn, run, kernels["act"], width=act_width
        )
        if model.position == "rotary":
            h, hk, dh = model.n_heads, model.kv_heads, model.head_dim
            cases[("rotary", "rotary", (h + hk) * dh)] = partial(_rotary_fn, run, h=h, hk=hk, d=dh)
    points = []
    for (op, kernel, width), make in sorted(cases.items(), key=lambda c: c[0]):
        for tokens in run.grid.elementwise_tokens:
            stats = try_point(run, skipped, f"hf {kernel} {tokens}x{width}", partial(make, tokens))
            if stats is not None:
                points.append(
                    ElementwisePoint(
                        op=op,
                        tokens=tokens,
                        width=width,
                        form="hf",
                        kernel=kernel,
                        **timing(stats),
                    )
                )
    g = run.grid
    for hk, d in sorted({(hk, d) for _, hk, d in hf_attention_configs(run)}):
        for b in g.decode_batch:
            for kv in g.decode_kv:
                if b * kv > g.decode_max_kv_tokens:
                    continue
                build = partial(_kv_cat_fn, run, b, kv, hk, d)
                stats = try_point(run, skipped, f"kv_cat b={b} kv={kv} hk={hk}", build)
                if stats is not None:
                    points.append(
                        ElementwisePoint(
                            op="kv_cat",
                            tokens=b * (kv + 1),
                            width=2 * hk * d,
                            form="hf",
                            kernel="kv_cat",
                            **timing(stats),
                        )
                    )
    return points


def measure_hf(
    run: Run, skipped: list[str]
) -> tuple[list[GemmPoint], list[AttentionPoint], list[ElementwisePoint]]:
    """Every hf form of the chosen models."""
    require_transformers()
    return (
        measure_hf_gemms(run, skipped),
        measure_hf_attention(run, skipped),
        measure_hf_elementwise(run, skipped),
    )


# ---------------------------------------------------------------------- host time

HOST_CONTEXT = 16
HOST_CALLS = 20  # steps per sample
HOST_PROBES = {
    "gpt2": ModelSpec(
        name="hf-probe-gpt2",
        n_layers=1,
        d_model=64,
        n_heads=4,
        d_ff=256,
        bias=True,
        vocab_size=256,
        max_seq_len=4096,
        position="learned",
        tied_embeddings=True,
    ),
    # the runtime probe's decoder (sim.calibrate.runtime), one layer, as transformers builds it
    "llama": PROBE.model_copy(
        update={"name": "hf-probe-llama", "n_layers": 1, "max_seq_len": 4096}
    ),
}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers' notices on building a model are not the command's progress."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        yield


def _hf_model(run: Run, family: str, layers: int) -> Any:
    t = require_transformers()
    m = HOST_PROBES[family]
    if family == "gpt2":
        config = t.GPT2Config(
            n_layer=layers,
            n_embd=m.d_model,
            n_head=m.n_heads,
            n_inner=m.d_ff,
            vocab_size=m.vocab_size,
            n_positions=m.max_seq_len,
            bos_token_id=0,
            eos_token_id=0,
        )
    else:
        config = t.LlamaConfig(
            num_hidden_layers=layers,
            hidden_size=m.d_model,
            num_attention_heads=m.n_heads,
            num_key_value_heads=m.kv_heads,
            intermediate_size=m.d_ff,
            vocab_size=m.vocab_size,
            max_position_embeddings=m.max_seq_len,
        )
    torch.manual_seed(0)
    with _quiet():
        model = t.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    return model.to(device=run.device, dtype=run.dtype).eval()


def _hf_step(run: Run, family: str, layers: int) -> Callable[[], object]:
    """One decode step of batch 1 against a DynamicCache (which grows by a token each
    step: at this size that costs nothing)."""
    model = _hf_model(run, family, layers)
    ids = torch.zeros((1, HOST_CONTEXT), dtype=torch.long, device=run.device)
    with _quiet():
        out = model(ids, use_cache=True, logits_to_keep=1)
    cache = getattr(out, "cache", None) or out.past_key_values
    step = ids[:, :1]
    # transformers 5 renamed the argument (the old name still works, with a notice)
    kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    return lambda: model(step, use_cache=True, logits_to_keep=1, **{kw: cache})


def _host_time(run: Run, fn: Callable[[], object]) -> float:
    """p10 of batches of steps (see sim.calibrate.runtime._time)."""
    with _quiet():
        _, p10, _ = measure(
            fn, run.device, warmup=3, repeats=max(run.grid.repeats, 10), calls=HOST_CALLS
        )
    return p10


def measure_hf_host(run: Run) -> dict[str, HostProbe]:
    """Per family of the chosen models: transformers' decode step outside its layers
    and each layer's share, at a size where the kernels do next to nothing."""
    t = require_transformers()
    families = sorted({hf_family(m) for m in run.models} & set(HOST_PROBES))
    out: dict[str, HostProbe] = {}
    for family in families:
        one = _host_time(run, _hf_step(run, family, 1))
        three = _host_time(run, _hf_step(run, family, 3))
        layer = max((three - one) / 2, 1e-9)
        out[family] = HostProbe(
            model=HOST_PROBES[family],
            framework=f"transformers {t.__version__}",
            context=HOST_CONTEXT,
            step_s=max(one - layer, 0.0),
            layer_s=layer,
        )
    return out
