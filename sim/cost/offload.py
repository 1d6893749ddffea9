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
from sim.arith.ops import Work, layer_plan, split_work
from sim.arith.precision import Precision
from sim.cost.roofline import OpKernel, RooflineKernel
from sim.cost.stage import BARE, StageCost
from sim.spec.hardware import DeviceSpec
from sim.spec.model import ModelSpec
from sim.spec.offload import TENSORS, TIERS, OffloadSpec
from sim.spec.runtime import RuntimeSpec

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


@dataclass(frozen=True)
class Machine:
    """What the offload model needs of the hardware."""

    gpu: DeviceSpec
    cpu: DeviceSpec
    h2d_bytes_per_s: float
    d2h_bytes_per_s: float
    disk_read_bytes_per_s: float
    disk_write_bytes_per_s: float
    cpu_bytes: float  # host DRAM
    disk_bytes: float


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
    return tiers


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


class StepPricer:
    """Prices a step of a block for any placement: what the simulator charges and what
    the policy search (sim.studies.offload_search) optimises — one model, so they agree."""

    def __init__(
        self,
        model: ModelSpec,
        precision: Precision,
        machine: Machine,
        kernel: OpKernel,
        runtime: RuntimeSpec = BARE,
    ):
        self.model, self.precision, self.machine = model, precision, machine
        plan = layer_plan(model, 1, precision)
        self._layer = StageCost(plan, 1, kernel, None, first=False, last=False, runtime=runtime)
        self._ends = StageCost(plan, 0, kernel, None, first=True, last=True, runtime=runtime)
        self._cpu = RooflineKernel(
            machine.cpu, Precision("fp32", "fp32", precision.kv, precision.group_size)
        )
        self._attn = next(o for o in plan.ops if o.kind == "attn_decode")

    def step(self, spec: OffloadSpec, work: Work, logits: int, repeat: int = 1) -> StepModel:
        batches = split_work(work, logits, spec.gpu_batches)
        gpu = sum(self._layer.time(b.work, 0) for b in batches)
        if work.prefill_tokens:
            sequences = max(1, logits)
            phase, prompt, context = "prefill", round(work.prefill_tokens / sequences), 0
            gpu_attn = cpu_attn = 0.0
        else:
            sequences = max(1, work.decode_seqs)
            phase, prompt = "decode", 0
            context = round(work.decode_kv_tokens / sequences)
            gpu_attn = sum(self._layer.attention_s(b.work) for b in batches)
            cpu_attn = self._cpu.op_time(self._attn, work)
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
        return StepModel(terms, first, self._ends.time(work, logits), repeat)
