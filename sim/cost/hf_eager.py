"""The hf-eager runtime's prices: each op of a layer as Hugging Face transformers' eager
modules run it, from a calibration profile that timed those forms (`llmsim calibrate
--hf`).

A serving engine runs one fused kernel per op of the layer plan; transformers runs
PyTorch modules, and what they call is what a step costs (on a CPU, where every call is
synchronous, exactly so):

- GEMMs: GPT-2's Conv1D is addmm(bias, x, W[k,n]), which on CPUs takes another path
  than nn.Linear's x @ W[n,k].T (in bf16 about ten times slower); Llama's attention
  projects Q, K and V with three Linear calls, not the plan's one fused matrix.
- attention: `sdpa_attention_forward`, which hands grouped K/V heads to SDPA with
  `enable_gqa` (on CPUs 2-11x the folded form serving kernels use), then makes the
  output contiguous; measured per model shape (heads, kv_heads, head_dim).
- the KV cache: a DynamicCache appends each step's keys and values with torch.cat,
  reading and rewriting the layer's whole cache every step (a runtime without a KV
  cache has no append).
- element-wise ops: LlamaRMSNorm in Python (six kernels in fp32, eight in bf16),
  rotary as `apply_rotary_pos_emb` (ten), GPT-2's `gelu_new` (eight: pow, mul, add,
  mul, tanh, add, mul, mul); each form fitted as one curve over the bytes the op moves.

- the Python around the kernels: each layer of transformers' modules costs host time
  beyond its kernels (module calls, the cache's bookkeeping, argument handling): the
  per-layer time of a small model of the family (`runtime.hf` in the profile, measured
  where its kernels do next to nothing) less what these prices give that small layer.
  It is charged with the layer's first norm, the first module a layer runs.

Every figure comes from the profile's `form: hf` / `form: conv1d` points, `fit.hf` and
`runtime.hf`; where the profile lacks one, the calibrated kernel's price (one fused
kernel) stands. Measured times include each call's dispatch, so no share of them is a
separate launch (`launch_part` is 0). Nothing is priced below the physical roofline. On
a CPU every call is synchronous and the prices add up; on a GPU the host's Python
overlaps the kernels, and the sum is an upper bound.

Assumption: which modules a model runs follows from its shape (`hf_family`): learned
positions, a plain GELU MLP and LayerNorm are GPT-2's modules; rotary positions, a gated
MLP and RMSNorm are Llama's; any other model keeps the fused GEMM forms and a plain
activation.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from sim.arith.ops import Op, Work, kv_read_bytes_per_token, layer_plan, op_active, op_bytes
from sim.arith.precision import Precision
from sim.cost.calibrated import STREAM_FAMILY, AttentionCurves, CalibratedKernel, pick_attention
from sim.cost.curves import ScalarCurve, stream_time
from sim.cost.roofline import OpKernel
from sim.spec.hardware import DeviceSpec
from sim.spec.model import ModelSpec
from sim.spec.profile import StreamFit
from sim.spec.runtime import RuntimeSpec

HfFamily = Literal["gpt2", "llama", "other"]

# A ModelSpec activation -> its base function (swiglu and geglu are the gated forms of
# SiLU and GELU).
ACTIVATION_BASE = {
    "silu": "silu",
    "swiglu": "silu",
    "gelu": "gelu",
    "geglu": "gelu",
    "relu": "relu",
}

# Elements written per element read by each hf-form kernel (an op's width is what it
# reads per token): the gated activation reads gate and up and writes one of them.
HF_WRITE_PER_READ = {
    "rmsnorm": 1.0,
    "layernorm": 1.0,
    "gelu_new": 1.0,
    "gelu": 1.0,
    "relu": 1.0,
    "silu": 1.0,
    "silu_and_mul": 0.5,
    "gelu_and_mul": 0.5,
    "relu_and_mul": 0.5,
    "rotary": 1.0,
    "add": 0.5,
    "kv_cat": 1.0,
}
CONV1D_OPS = ("qkv_proj", "o_proj", "mlp_up", "mlp_down")  # GPT-2's c_attn, c_proj, c_fc, ...


def hf_family(model: ModelSpec) -> HfFamily:
    """Whose modules transformers runs for a model of this shape (see the docstring)."""
    if (
        model.position == "learned"
        and model.mlp == "plain"
        and model.activation == "gelu"
        and model.norm == "layernorm"
        and not model.parallel_block
    ):
        return "gpt2"
    if model.position == "rotary" and model.mlp == "gated" and model.norm == "rmsnorm":
        return "llama"
    return "other"


def hf_kernels(model: ModelSpec) -> dict[str, str]:
    """The hf-form kernel of each element-wise family of the model's layers."""
    act = ACTIVATION_BASE[model.activation]
    if hf_family(model) == "gpt2":
        act = "gelu_new"
    elif model.mlp == "gated":
        act = f"{act}_and_mul"
    return {"norm": model.norm, "act": act, "rotary": "rotary", "add": "add"}


def is_hf_eager(runtime: RuntimeSpec) -> bool:
    """Whether a runtime is Hugging Face transformers calling the model eagerly."""
    return runtime.name.startswith("hf-eager") or "transformers" in runtime.engine.lower()


def runtime_kernel(kernel: OpKernel, model: ModelSpec, runtime: RuntimeSpec) -> OpKernel:
    """The kernel a stage of `model` prices its ops with under `runtime`: HfEagerKernel
    over a calibrated kernel for the hf-eager runtimes, the kernel itself otherwise."""
    if is_hf_eager(runtime) and isinstance(kernel, CalibratedKernel):
        return HfEagerKernel(kernel, model, cache=runtime.kv_cache != "none")
    return kernel


class HfEagerKernel:
    """A calibrated kernel's prices, with the ops transformers runs differently priced
    from the profile's hf-form measurements."""

    def __init__(
        self, base: CalibratedKernel, model: ModelSpec, *, cache: bool = True, host: bool = True
    ):
        self.base = base
        self.device: DeviceSpec = base.device
        self.precision: Precision = base.precision
        self.model = model
        self.cache = cache  # a DynamicCache: each step appends K and V with torch.cat
        self.family = hf_family(model)
        fit = base.profile.fit
        bw = base.bytes_per_s
        self._streams = {
            family: _Stream(fit.hf[kernel], bw)
            for family, kernel in hf_kernels(model).items()
            if kernel in fit.hf
        }
        self._cat = _Stream(fit.hf["kv_cat"], bw) if "kv_cat" in fit.hf else None
        self._conv1d: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        if self.family == "gpt2":
            for p in sorted(base.profile.measurements.gemm, key=lambda p: p.m):
                if p.form == "conv1d":
                    ms, ts = self._conv1d.get((p.n, p.k), (np.array([]), np.array([])))
                    self._conv1d[(p.n, p.k)] = (
                        np.append(ms, math.log2(p.m)),
                        np.append(ts, math.log(p.median_s)),
                    )
        self._attention: dict[tuple[int, int, int], AttentionCurves | None] = {}
        self.layer_host_s = self._layer_host_s() if host else 0.0

    def _layer_host_s(self) -> float:
        """What a layer of the family's small model measured beyond these prices."""
        rt = self.base.profile.runtime
        probe = rt.hf.get(self.family) if rt is not None else None
        if probe is None:
            return 0.0
        small = HfEagerKernel(self.base, probe.model, cache=True, host=False)
        work = Work.decode(probe.batch, probe.context)
        plan = layer_plan(probe.model, 1, self.precision)
        priced = sum(small.op_time(op, work) for op in plan.ops)
        return max(probe.layer_s - priced, 0.0)

    # ------------------------------------------------------------------ the kernel
    def source(self, op: Op) -> str:
        if self._hf_priced(op):
            return "calibrated (hf-eager)"
        return self.base.source(op)

    def op_time(self, op: Op, work: Work) -> float:
        if op.kind == "all_reduce" or not op_active(op, work):
            return 0.0
        t = max(self._time(op, work), self.base._ideal.op_time(op, work))
        return t + self.layer_host_s if op.name == "norm" else t

    def launch_part(self, op: Op, work: Work) -> float:
        return 0.0  # measured with their dispatch: nothing to take out

    def decode_attention_times(self, op: Op, seqs: int, kv_tokens: np.ndarray) -> np.ndarray:
        curves = self._attention_curves(op)
        if curves is None or seqs == 0:
            out = self.base.decode_attention_times(op, seqs, kv_tokens)
        else:
            out = curves.decode_times(op, kv_tokens, self.precision, self.base.bytes_per_s)
            out = np.maximum(out, self.base._ideal.decode_attention_times(op, seqs, kv_tokens))
        if self.cache and self._cat is not None and seqs:
            after = np.asarray(kv_tokens, dtype=float) + seqs
            out = out + self._cat.times(self._cat_bytes(op, after))
        result: np.ndarray = out
        return result

    # ------------------------------------------------------------------ pricing
    def _hf_priced(self, op: Op) -> bool:
        if op.kind == "gemm":
            return (self.family == "gpt2" and op.name in CONV1D_OPS and bool(self._conv1d)) or (
                self._split_qkv(op) is not None
            )
        if op.kind in ("attn_prefill", "attn_decode"):
            return self._attention_curves(op) is not None or (self.cache and self._cat is not None)
        family = STREAM_FAMILY.get(op.name)
        return (family is not None and family in self._streams) or (
            op.name == "norm" and self.layer_host_s > 0
        )

    def _time(self, op: Op, work: Work) -> float:
        if op.kind == "gemm":
            return self._gemm(op, work)
        if op.kind in ("attn_prefill", "attn_decode"):
            return self._attention_time(op, work)
        family = STREAM_FAMILY.get(op.name)  # the embedding has no hf form: the base prices it
        stream = self._streams.get(family) if family else None
        if stream is not None:
            return stream.time(op_bytes(op, work, self.precision))
        return self.base.op_time(op, work)

    def _split_qkv(self, op: Op) -> tuple[int, int] | None:
        """Llama's Q and K/V widths when `op` is the fused QKV projection it splits."""
        m = self.model
        if self.family != "llama" or op.name != "qkv_proj" or op.n != m.q_dim + 2 * m.kv_dim:
            return None
        return m.q_dim, m.kv_dim

    def _gemm(self, op: Op, work: Work) -> float:
        split = self._split_qkv(op)
        if split is not None:
            q, kv = split
            parts = (Op("q_proj", "gemm", n=q, k=op.k), Op("kv_proj", "gemm", n=kv, k=op.k))
            return self.base.op_time(parts[0], work) + 2 * self.base.op_time(parts[1], work)
        linear = self.base.op_time(op, work)
        measured = self._conv1d.get((op.n, op.k)) if op.name in CONV1D_OPS else None
        if measured is None or op.top_k or op.count != 1:
            return linear
        ms, ts = measured
        lm = math.log2(work.tokens)
        inside = min(max(lm, float(ms[0])), float(ms[-1]))
        t = math.exp(float(np.interp(inside, ms, ts)))
        if inside == lm:
            return t
        # Beyond the measured token counts: the nearest measured ratio to nn.Linear.
        edge = self.base.op_time(op, Work(tokens=round(2**inside)))
        return linear * t / edge

    def _attention_curves(self, op: Op) -> AttentionCurves | None:
        key = (op.heads, op.kv_heads, op.head_dim)
        if key not in self._attention:
            fit = pick_attention(self.base.fit.attention_shapes, *key, form="hf")
            self._attention[key] = AttentionCurves(fit) if fit is not None else None
        return self._attention[key]

    def _attention_time(self, op: Op, work: Work) -> float:
        curves = self._attention_curves(op)
        if curves is None:
            t = self.base.op_time(op, work)
        else:
            b = self.base
            t = curves.time(op, work, self.precision, b.flops_per_s, b.bytes_per_s)
        if self.cache and self._cat is not None:
            if op.kind == "attn_decode":
                after = float(work.decode_kv_tokens + work.decode_seqs)
            else:
                after = float(work.prefill_kv_tokens)
            t += self._cat.time(2.0 * after * kv_read_bytes_per_token(op, self.precision))
        return t

    def _cat_bytes(self, op: Op, after: np.ndarray) -> np.ndarray:
        """Bytes a DynamicCache append moves: K and V of every cached token, read and
        written once (the new token's read as well)."""
        out: np.ndarray = 2.0 * after * kv_read_bytes_per_token(op, self.precision)
        return out


class _Stream:
    """t = launch + bytes / (bandwidth·efficiency(bytes)): one hf-form op."""

    def __init__(self, fit: StreamFit, bandwidth_bytes_per_s: float):
        self.fit = fit
        self.bandwidth = bandwidth_bytes_per_s
        self.curve = ScalarCurve(fit.efficiency)

    def time(self, moved: float) -> float:
        eff = self.curve(math.log2(max(moved, 1.0)))
        return self.fit.launch_s + moved / (self.bandwidth * eff)

    def times(self, moved: np.ndarray) -> np.ndarray:
        out: np.ndarray = stream_time(self.fit, moved, self.bandwidth)
        return out
