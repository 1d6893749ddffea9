"""Offloading (FlexGen, Sheng et al. 2023): weights, KV cache and activations placed in
fractions on GPU memory, host DRAM and disk, moved over PCIe and NVMe as they are used.

The block (zigzag) schedule: a block of `gpu_batches` GPU batches of
`gpu_batch_size` sequences runs layer by layer; a layer's weights are loaded once per
block (the part not resident on the GPU), each GPU batch's KV cache and activations
are loaded before and stored after its compute, and all of it overlaps the compute of
the batch before. Per layer and step, the time is that of the slowest of its streams:

    T_layer = max(ctog, gtoc, dtoc, ctod, comp)        (FlexGen's cost model, §4.2)

with ctog/gtoc the bytes crossing PCIe host→device / device→host over its bandwidth,
dtoc/ctod those crossing the disk (read / write), and comp the GPU compute plus, when
attention over host-resident KV runs on the CPU (`cpu_attention`), the CPU's.
Generation takes T = T_pre·l + T_gen·(n−1)·l.

Priced as FlexGen runs, not at the roofline (its code: FMInference/FlexiGen
flexgen/pytorch_backend.py and flexgen/compression.py):
- PCIe carries pinned copies at their achieved rate (`PINNED_COPY_FRACTION` of the
  link's nominal rate, or the GPU's calibration profile's measured copies).
- The host CPU attends the way FlexGen's `mha_gen` does: it upcasts the cached K and V
  to fp32 (`k.float(), v.float()`) and runs fp32 `bmm`s, so each cached value is read,
  written in fp32 and read again (`host_attention_bytes_per_value`), at the CPU's
  achieved bandwidth (`host_stream_bytes_per_s`: its profile's measured copies, or its
  datasheet bandwidth × its `efficiency.memory`).
- Compressed (int4/int8, group-wise) weights and KV are not dequantised inside the
  matmul: FlexGen decompresses each tensor with a chain of element-wise PyTorch ops
  before every use (the weights of a layer once per GPU batch, the KV cache before
  attention) and compresses new KV the same way, each op a pass over memory at the
  device's achieved stream bandwidth (`decompress_bytes_per_value`,
  `compress_bytes_per_value`); the matmuls then run on the decompressed fp16 tensors.

`layer_terms` gives each of those streams as a linear function of the nine placement
fractions, for a fixed GPU batch size and number of GPU batches; `tier_bytes` gives
each tier's memory likewise. The simulator evaluates them at one placement (and runs
the streams as transfers that hold the links); the policy search (sim.studies.offload_search)
solves the linear program over them.

`StepPricer` prices one step of a block for any placement with these terms: what the
engine charges and what the policy search optimises, one model so that they agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sim.arith.memory import (
    activation_workspace_bytes,
    embedding_weight_elems,
    kv_bytes_per_token,
    layer_weight_elems,
)
from sim.arith.ops import Op, Work, kv_width, layer_plan, split_work
from sim.arith.precision import DEQUANT_FLOPS_PER_VALUE, QUANTISED, Precision
from sim.cost.calibrated import CalibratedKernel
from sim.cost.roofline import OpKernel, RooflineKernel
from sim.cost.stage import BARE, StageCost
from sim.spec.hardware import DeviceSpec
from sim.spec.model import ModelSpec
from sim.spec.offload import TENSORS, TIERS, OffloadSpec
from sim.spec.runtime import RuntimeSpec
from sim.units import dtype_bytes

VARIABLES = tuple(f"{t}.{tier}" for t in TENSORS for tier in TIERS)
STREAMS = ("ctog", "gtoc", "dtoc", "ctod", "comp_gpu", "comp_cpu")


@dataclass
class Linear:
    """const + Σ coef[v] · v over the placement variables."""

    const: float = 0.0
    coef: dict[str, float] = field(default_factory=dict)

    def add(self, amount: float, *variables: str) -> None:
        """amount · (v1 + v2 + ...), or a constant with no variables."""
        if not variables:
            self.const += amount
        for v in variables:
            self.coef[v] = self.coef.get(v, 0.0) + amount

    def at(self, values: dict[str, float]) -> float:
        return self.const + sum(c * values[v] for v, c in self.coef.items())


# ------------------------------------------------------------------ achieved rates

# NVIDIA's bandwidthTest (CUDA samples, pinned memory, --mode=shmoo) on a Tesla T4 in a
# Google Colab VM (a GCP host; PCIe Gen3 x16, 16 GB/s per direction nominal): host→device
# levels off at 12.3 GB/s and device→host at 13.2 GB/s for transfers of 32-68 MB (quick
# mode, 32 MB: 12.4 and 13.1). Source: a public GitHub README of a CUDA course assignment
# ("Assignment I: GPU programming enviroment", read_file id 32437540185), the same GCP T4
# as FlexGen's testbed. Kept as a share of the nominal rate, which carries to other PCIe
# links (the packet framing costs the same share at every generation); the figure is in
# the validation data, sim/fidelity/flexgen.py.
PINNED_COPY_BYTES_PER_S = {"h2d": 12.3e9, "d2h": 13.2e9}
PINNED_COPY_NOMINAL_BYTES_PER_S = 16e9
PINNED_COPY_FRACTION = {
    way: rate / PINNED_COPY_NOMINAL_BYTES_PER_S for way, rate in PINNED_COPY_BYTES_PER_S.items()
}


def pinned_copy_bytes_per_s(nominal: float, measured: float | None, way: str) -> float:
    """A PCIe link's achieved rate for pinned copies one `way` ("h2d" or "d2h"): a
    calibration profile's measured copies where there are some (never above the link),
    else the bandwidthTest share of the nominal rate."""
    if measured is not None and measured > 0:
        return min(measured, nominal)
    return nominal * PINNED_COPY_FRACTION[way]


def host_stream_bytes_per_s(cpu: DeviceSpec, memcpy_bytes_per_s: float | None = None) -> float:
    """Bytes of memory traffic a second the host CPU streams: from its calibration
    profile's copies (`llmsim calibrate --device cpu` times a memcpy, which reads and
    writes every byte: twice the copy rate), else its datasheet bandwidth × its
    `efficiency.memory`. Never above the datasheet bandwidth."""
    peak = cpu.memory_bandwidth_bytes_per_s
    if memcpy_bytes_per_s is not None and memcpy_bytes_per_s > 0:
        return min(peak, 2.0 * memcpy_bytes_per_s)
    return peak * cpu.efficiency.memory


# ------------------------------------------------------------------ FlexGen's kernels

# Bytes of memory traffic per value of FlexGen's element-wise passes, counted op by op from
# its code (FMInference/FlexiGen flexgen/compression.py, TorchCompressedDevice; `p` the
# packed bytes of a value, `o` the output / `i` the input bytes, `s` the group's fp16 scale
# and zero per value):
#   decompress (4-bit): `packed >> 4` and `packed & 0xF` (read p, write p, each), the two
#     strided stores into the output (read p, write o/2, each), `div_(scale)` and
#     `add_(mn)` (read o, write o, each, and the scales): 6p + 5o + s.
#     8-bit (not in FlexGen; the same without unpacking): a cast (read p, write o), then
#     div_ and add_: p + 5o + s.
#   compress (4-bit, from fp16 on the GPU): min and max over each group (read i, each),
#     `data - mn`, `mul_`, `clamp_`, `round_` (read i, write i, each), `.to(uint8)` (read
#     i, write 1), the pack `(left << 4) | right` (read 1, write 1/2, then read 1, write 1/2)
#     and the scales: 11i + 4 + s; 8-bit without the pack: 11i + 1 + s.
# Element-wise ops per value, for the compute side (never the bound on a GPU): decompress
# shift, mask, divide, add (DEQUANT_FLOPS_PER_VALUE = 4); compress min, max, subtract,
# multiply, two clamps, round, shift, or.
COMPRESS_FLOPS_PER_VALUE = 9.0
DECOMPRESS_PASSES = 6  # kernels per tensor: shift, mask, two stores, divide, add
COMPRESS_PASSES = 10


def _scales(group_size: int) -> float:
    return 4.0 / group_size  # an fp16 scale and zero per group


def decompress_bytes_per_value(stored: str, group_size: int, out_bytes: float) -> float:
    """Memory traffic per value of decompressing a `stored` (int4/int8) tensor into one of
    `out_bytes` per value, FlexGen's way; 0 for a tensor that is not compressed."""
    if stored not in QUANTISED:
        return 0.0
    p, s = dtype_bytes(stored), _scales(group_size)
    if stored == "int4":
        return 6 * p + 5 * out_bytes + s
    return p + 5 * out_bytes + s


def compress_bytes_per_value(stored: str, group_size: int, in_bytes: float) -> float:
    """Memory traffic per value of compressing a tensor of `in_bytes` per value into
    `stored` (int4/int8), FlexGen's way; 0 when nothing is compressed."""
    if stored not in QUANTISED:
        return 0.0
    pack = 4.0 if stored == "int4" else 1.0
    return 11 * in_bytes + pack + _scales(group_size)


def host_attention_bytes_per_value(precision: Precision) -> float:
    """Memory traffic per cached K or V value when FlexGen's host CPU attends over it
    (`mha_gen` on the CPU: `k.float(), v.float()` then fp32 `bmm`s): a compressed cache
    is decompressed into an fp32 workspace, any other is upcast to fp32 (read, write 4
    bytes; nothing for an fp32 cache), and the `bmm` reads the fp32 value. Never less than
    the cache's own bytes, so never below the roofline."""
    fp32 = 4.0
    if precision.kv in QUANTISED:
        prepare = decompress_bytes_per_value(precision.kv, precision.group_size, fp32)
    elif dtype_bytes(precision.kv) >= fp32:
        prepare = 0.0
    else:
        prepare = precision.kv_bytes + fp32
    return max(prepare + fp32, precision.kv_bytes)


def compute_precision(precision: Precision) -> Precision:
    """The dtypes FlexGen's GPU matmuls and attention run in: compressed weights and KV
    are decompressed to the activation dtype first."""
    a = precision.activations
    weights = a if precision.weights in QUANTISED else precision.weights
    kv = a if precision.kv in QUANTISED else precision.kv
    if (weights, kv) == (precision.weights, precision.kv):
        return precision
    return Precision(weights, a, kv, precision.group_size, precision.io)


def _with_precision(kernel: OpKernel, precision: Precision) -> OpKernel:
    """The same kind of kernel (roofline or calibrated) for other dtypes."""
    if precision == kernel.precision:
        return kernel
    if isinstance(kernel, CalibratedKernel):
        return CalibratedKernel(kernel.device, precision, kernel.profile)
    if isinstance(kernel, RooflineKernel):
        return RooflineKernel(kernel.device, precision)
    return kernel


def stream_bytes_per_s(kernel: OpKernel) -> float:
    """The GPU's achieved bandwidth for element-wise passes: its calibration profile's
    fitted element-wise add at its best (large tensors), else its datasheet bandwidth ×
    its `efficiency.memory`. Never above the datasheet bandwidth."""
    device = kernel.device
    peak = device.memory_bandwidth_bytes_per_s
    if isinstance(kernel, CalibratedKernel) and kernel.fit.add is not None:
        return peak * min(1.0, max(kernel.fit.add.efficiency.y))
    return peak * device.efficiency.memory


@dataclass(frozen=True)
class Machine:
    """What the offload model needs of the hardware. PCIe rates are achieved pinned-copy
    rates (`pcie_bytes_per_s` is the link's nominal rate, for the record); `cpu_stream_
    bytes_per_s` is the host CPU's achieved memory bandwidth."""

    gpu: DeviceSpec
    cpu: DeviceSpec
    h2d_bytes_per_s: float
    d2h_bytes_per_s: float
    disk_read_bytes_per_s: float
    disk_write_bytes_per_s: float
    cpu_bytes: float  # host DRAM
    disk_bytes: float
    pcie_bytes_per_s: float = 0.0
    cpu_stream_bytes_per_s: float = 0.0  # 0: the CPU's datasheet bandwidth × efficiency


def _seconds(nbytes: float, rate: float) -> float:
    if nbytes <= 0:
        return 0.0
    return nbytes / rate if rate > 0 else float("inf")


def layer_terms(
    model: ModelSpec,
    machine: Machine,
    precision: Precision,
    spec: OffloadSpec,
    phase: str,
    prompt: int,
    context: int,
    gpu_time: float,
    gpu_attention_time: float,
    cpu_attention_time: float,
    sequences: int | None = None,
) -> dict[str, Linear]:
    """Seconds of each stream for one layer of one block in one step, as linear
    functions of the placement. `phase` is "prefill" (`prompt` tokens each) or "decode"
    (one token each against `context` cached); `gpu_time` is the GPU compute of the layer
    for the whole block, `gpu_attention_time` the attention part of it (what CPU
    delegation can take away), `cpu_attention_time` the CPU's time for the attention
    over all of the block's KV; `sequences` the block's sequences (default: a full one)."""
    b = spec.block if sequences is None else sequences
    kv_layer = kv_bytes_per_token(model, precision) / model.n_layers  # per token
    w_layer = layer_weight_elems(model, 1) * precision.w_bytes
    act = model.d_model * precision.a_bytes  # one token's hidden state
    t = {name: Linear() for name in STREAMS}
    # Weights: the non-resident part crosses PCIe once per block; the disk part first
    # comes up from disk.
    t["ctog"].add(_seconds(w_layer, machine.h2d_bytes_per_s), "weights.cpu", "weights.disk")
    t["dtoc"].add(_seconds(w_layer, machine.disk_read_bytes_per_s), "weights.disk")
    if phase == "prefill":
        new_kv = b * prompt * kv_layer
        hidden = b * prompt * act
        t["gtoc"].add(_seconds(new_kv, machine.d2h_bytes_per_s), "kv.cpu", "kv.disk")
        t["ctod"].add(_seconds(new_kv, machine.disk_write_bytes_per_s), "kv.disk")
        t["comp_gpu"].add(gpu_time)
    else:
        cached = b * context * kv_layer
        new_kv = b * kv_layer
        hidden = b * act
        if spec.cpu_attention:
            # Host-resident KV stays put: the CPU attends over it; queries and outputs
            # of those sequences cross PCIe instead (b·d each way).
            qo = b * act
            t["gtoc"].add(_seconds(qo, machine.d2h_bytes_per_s), "kv.cpu", "kv.disk")
            t["ctog"].add(_seconds(qo, machine.h2d_bytes_per_s), "kv.cpu", "kv.disk")
            t["comp_cpu"].add(cpu_attention_time, "kv.cpu", "kv.disk")
            t["dtoc"].add(_seconds(cached, machine.disk_read_bytes_per_s), "kv.disk")
            t["comp_gpu"].add(gpu_time - gpu_attention_time)
            t["comp_gpu"].add(gpu_attention_time, "kv.gpu")
        else:
            t["ctog"].add(_seconds(cached, machine.h2d_bytes_per_s), "kv.cpu", "kv.disk")
            t["dtoc"].add(_seconds(cached, machine.disk_read_bytes_per_s), "kv.disk")
            t["comp_gpu"].add(gpu_time)
        t["gtoc"].add(_seconds(new_kv, machine.d2h_bytes_per_s), "kv.cpu", "kv.disk")
        t["ctod"].add(_seconds(new_kv, machine.disk_write_bytes_per_s), "kv.disk")
    # Activations between layers: stored and reloaded where they are not kept on GPU.
    t["gtoc"].add(_seconds(hidden, machine.d2h_bytes_per_s), "activations.cpu", "activations.disk")
    t["ctog"].add(_seconds(hidden, machine.h2d_bytes_per_s), "activations.cpu", "activations.disk")
    t["ctod"].add(_seconds(hidden, machine.disk_write_bytes_per_s), "activations.disk")
    t["dtoc"].add(_seconds(hidden, machine.disk_read_bytes_per_s), "activations.disk")
    return t


def tier_bytes(
    model: ModelSpec, precision: Precision, spec: OffloadSpec, prompt: int, output: int
) -> dict[str, Linear]:
    """Peak bytes each tier holds, as linear functions of the placement: the weights,
    the block's KV at its longest (prompt + output tokens), and the activations of a
    prefill; the GPU also holds two layers' worth of the weights it streams (the layer
    in use and the one loading), the embedding and LM head, and the activation
    workspace of one GPU batch."""
    w_layer = layer_weight_elems(model, 1) * precision.w_bytes
    weights = model.n_layers * w_layer
    kv = spec.block * (prompt + output) * kv_bytes_per_token(model, precision)
    act = spec.block * prompt * model.d_model * precision.a_bytes
    tiers = {tier: Linear() for tier in TIERS}
    for tier in TIERS:
        tiers[tier].add(weights, f"weights.{tier}")
        tiers[tier].add(kv, f"kv.{tier}")
        tiers[tier].add(act, f"activations.{tier}")
    tiers["gpu"].add(2 * w_layer, "weights.cpu", "weights.disk")
    tiers["gpu"].add(embedding_weight_elems(model, 1) * precision.w_bytes)
    tiers["gpu"].add(activation_workspace_bytes(model, spec.gpu_batch_size * prompt, 1, precision))
    tiers["gpu"].add(decompress_workspace_bytes(model, precision))
    return tiers


def decompress_workspace_bytes(model: ModelSpec, precision: Precision) -> float:
    """GPU bytes of the decompressed weights a compressed layer's call holds at once:
    FlexGen's `mha` decompresses the attention matrices together, its `mlp` the MLP's
    (FMInference/FlexiGen flexgen/pytorch_backend.py); the larger group, in the
    activation dtype. 0 for weights that are not compressed."""
    if precision.weights not in QUANTISED:
        return 0.0
    groups = {"attention": 0.0, "mlp": 0.0}
    for op in layer_plan(model, 1, precision).ops:
        if op.kind == "gemm":
            group = "attention" if op.name in ("qkv_proj", "o_proj") else "mlp"
            groups[group] += float(op.n) * op.k * op.count
    return max(groups.values()) * precision.a_bytes


@dataclass(frozen=True)
class StepModel:
    """One step of the block, `repeat` times: per-layer streams (linear in the
    placement), the first layer's weight load, and the step's fixed seconds (embedding,
    LM head)."""

    terms: dict[str, Linear]
    first: Linear
    fixed_s: float
    repeat: int = 1

    def seconds(self, values: dict[str, float], n_layers: int) -> float:
        slowest = max(term.at(values) for term in self.terms.values())
        return self.repeat * (n_layers * slowest + self.first.at(values) + self.fixed_s)

    def bound(self, values: dict[str, float]) -> str:
        """The stream that sets the step's time."""
        return max(self.terms, key=lambda name: self.terms[name].at(values))


def host_attention_seconds(
    machine: Machine, op: Op, work: Work, precision: Precision, batches: int = 1
) -> float:
    """The host CPU's time for decode attention over `work`'s cached KV, as FlexGen's
    `mha_gen` runs it on the CPU (fp32 queries and outputs, the cache upcast or
    decompressed to fp32, fp32 `bmm`s): the larger of its memory traffic at the CPU's
    achieved bandwidth and its FLOPs at the CPU's fp32 rate × `efficiency.compute`, plus
    one launch per GPU batch. Never below the op's roofline on the CPU."""
    if not work.decode_seqs:
        return 0.0
    cpu = machine.cpu
    per_token = float(kv_width(op)) * op.share  # K and V values (MLA: the latent)
    cached = work.decode_kv_tokens * per_token
    fp32 = 4.0
    q_o = work.decode_seqs * op.share * 2 * op.heads * op.head_dim * fp32
    new_kv = work.decode_seqs * per_token * precision.kv_bytes
    moved = cached * host_attention_bytes_per_value(precision) + q_o + new_kv
    rate = machine.cpu_stream_bytes_per_s or host_stream_bytes_per_s(cpu)
    flops = 4.0 * work.decode_kv_tokens * op.heads * op.head_dim * op.share
    if precision.kv in QUANTISED:
        flops += cached * DEQUANT_FLOPS_PER_VALUE
    compute = flops / (cpu.flops("fp32") * cpu.efficiency.compute)
    return max(moved / rate, compute) + batches * cpu.launch_overhead_s


class StepPricer:
    """Prices a step of a block for any placement: what the simulator charges and what
    the policy search (sim.studies.offload_search) optimises — one model, so they agree.

    The GPU's matmuls and attention run in `compute_precision` (compressed tensors are
    decompressed first); each GPU batch decompresses its layer's weights (and the
    embedding and LM head around the step), decompresses the KV cache it attends over on
    the GPU, and compresses the KV it writes; attention delegated to the host CPU is
    `host_attention_seconds`."""

    def __init__(
        self,
        model: ModelSpec,
        precision: Precision,
        machine: Machine,
        kernel: OpKernel,
        runtime: RuntimeSpec = BARE,
    ):
        self.model, self.precision, self.machine = model, precision, machine
        self.compute = compute_precision(precision)
        gpu_kernel = _with_precision(kernel, self.compute)
        plan = layer_plan(model, 1, self.compute)
        self._layer = StageCost(plan, 1, gpu_kernel, None, first=False, last=False, runtime=runtime)
        self._ends = StageCost(plan, 0, gpu_kernel, None, first=True, last=True, runtime=runtime)
        self._attn = next(o for o in plan.ops if o.kind == "attn_decode")
        gpu = kernel.device
        self._stream = stream_bytes_per_s(kernel)
        self._scalar_flops = gpu.flops("fp32") * gpu.efficiency.compute
        self._launch = gpu.launch_overhead_s
        p, out = precision, self.compute.a_bytes
        tensors = sum(1 for o in plan.ops if o.kind == "gemm")
        w_pass = decompress_bytes_per_value(p.weights, p.group_size, out)
        self._w_decompress_s = self._pass_s(
            layer_weight_elems(model, 1),
            w_pass,
            DEQUANT_FLOPS_PER_VALUE,
            tensors * DECOMPRESS_PASSES,
        )
        # The embedding going in and the LM head coming out, each GPU batch (a tied
        # matrix is decompressed at both ends).
        ends = embedding_weight_elems(model, 1)
        if model.tied_embeddings:
            ends += model.vocab_size * model.d_model
        self._ends_decompress_s = self._pass_s(
            ends, w_pass, DEQUANT_FLOPS_PER_VALUE, 3 * DECOMPRESS_PASSES
        )
        self._kv_per_token = 2.0 * self._attn.kv_heads * self._attn.head_dim * self._attn.share
        self._kv_decompress = decompress_bytes_per_value(p.kv, p.group_size, out)
        self._kv_compress = compress_bytes_per_value(p.kv, p.group_size, out)

    def _pass_s(
        self, values: float, bytes_per_value: float, flops_per_value: float, kernels: int
    ) -> float:
        """Seconds of FlexGen's element-wise (de)compression passes over `values` values
        on the GPU, at its achieved stream bandwidth, and the `kernels` they launch; 0
        for nothing compressed."""
        if values <= 0 or bytes_per_value <= 0:
            return 0.0
        memory = values * bytes_per_value / self._stream
        compute = values * flops_per_value / self._scalar_flops
        return max(memory, compute) + kernels * self._launch

    def _kv_decompress_s(self, tokens: int, batches: int) -> float:
        values = tokens * self._kv_per_token
        kernels = 2 * batches * DECOMPRESS_PASSES  # K and V of each GPU batch
        return self._pass_s(values, self._kv_decompress, DEQUANT_FLOPS_PER_VALUE, kernels)

    def _kv_compress_s(self, tokens: int, batches: int) -> float:
        values = tokens * self._kv_per_token
        kernels = 2 * batches * COMPRESS_PASSES
        return self._pass_s(values, self._kv_compress, COMPRESS_FLOPS_PER_VALUE, kernels)

    def dequant_s(self, work: Work, logits: int, gpu_batches: int) -> float:
        """The GPU's (de)compression seconds in one layer of a step (weights, and the KV
        when attention runs on the GPU), for the record and the tests."""
        n = len(split_work(work, logits, gpu_batches))
        kv = (
            self._kv_compress_s(work.prefill_tokens, n)
            if work.prefill_tokens
            else self._kv_compress_s(work.decode_seqs, n)
            + self._kv_decompress_s(work.decode_kv_tokens, n)
        )
        return n * self._w_decompress_s + kv

    def step(self, spec: OffloadSpec, work: Work, logits: int, repeat: int = 1) -> StepModel:
        batches = split_work(work, logits, spec.gpu_batches)
        n = len(batches)
        gpu = sum(self._layer.time(b.work, 0) for b in batches) + n * self._w_decompress_s
        fixed = self._ends.time(work, logits) + n * self._ends_decompress_s
        if work.prefill_tokens:
            sequences = max(1, logits)
            phase, prompt, context = "prefill", round(work.prefill_tokens / sequences), 0
            gpu += self._kv_compress_s(work.prefill_tokens, n)
            gpu_attn = cpu_attn = 0.0
        else:
            sequences = max(1, work.decode_seqs)
            phase, prompt = "decode", 0
            context = round(work.decode_kv_tokens / sequences)
            kv_gpu = self._kv_decompress_s(work.decode_kv_tokens, n)
            gpu_attn = sum(self._layer.attention_s(b.work) for b in batches) + kv_gpu
            gpu += kv_gpu + self._kv_compress_s(work.decode_seqs, n)
            cpu_attn = host_attention_seconds(self.machine, self._attn, work, self.precision, n)
        terms = layer_terms(
            self.model,
            self.machine,
            self.precision,
            spec,
            phase,
            prompt,
            context,
            gpu,
            gpu_attn,
            cpu_attn,
            sequences,
        )
        # The first layer's weights must arrive before anything can overlap them.
        first = Linear()
        first.add(terms["ctog"].coef.get("weights.cpu", 0.0), "weights.cpu", "weights.disk")
        first.add(terms["dtoc"].coef.get("weights.disk", 0.0), "weights.disk")
        return StepModel(terms, first, fixed, repeat)
