"""Running a step of an offloaded replica: FlexGen's block schedule on one GPU.

A step (the prefill or one decode step of the whole block) runs layer by layer; within
a layer the GPU batches run one after another while the next layer's weights, the next
batch's KV cache and activations, and the previous batch's outputs move over PCIe and
the disk. Each of those streams is a transfer on its own link (PCIe host→device,
device→host, disk read, disk write: the node's links), so streams on one link add up
and streams on different links overlap, as does the compute (GPU, and the host CPU for
delegated attention). A layer takes as long as its slowest stream; the first layer's
weights are loaded before the step can start. Each link is busy for what it carries,
which the run's link records report; the GPU's device record counts the whole step.

With everything on the GPU and one GPU batch, a step costs exactly what the ordinary
single-stage replica charges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sim.arith.ops import Precision, Work, layer_plan
from sim.cost.roofline import OpKernel, RooflineKernel
from sim.cost.stage import StageCost
from sim.engine.pipeline import split_work
from sim.spec.model import ModelSpec
from sim.spec.offload import Linear, Machine, OffloadSpec, layer_terms, tier_bytes

# The link each stream crosses (directed edges of the node graph).
STREAM_LINKS = {
    "ctog": ("host0", "dev0"),
    "gtoc": ("dev0", "host0"),
    "dtoc": ("disk0", "host0"),
    "ctod": ("host0", "disk0"),
}


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

    def __init__(self, model: ModelSpec, precision: Precision, machine: Machine, kernel: OpKernel):
        self.model, self.precision, self.machine = model, precision, machine
        plan = layer_plan(model, 1, precision)
        self._layer = StageCost(plan, 1, kernel, None, first=False, last=False)
        self._ends = StageCost(plan, 0, kernel, None, first=True, last=True)
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


class OffloadExecutor:
    def __init__(
        self,
        model: ModelSpec,
        precision: Precision,
        spec: OffloadSpec,
        machine: Machine,
        stage: StageCost,
        links: Any,
    ):
        self.model = model
        self.spec = spec
        self.values = spec.values()
        self.busy = links.busy
        graph = links.cluster.graph
        for edge in STREAM_LINKS.values():  # name them for the link records
            if graph.has_edge(*edge):
                links.name(edge, links.cluster.link(*edge))
        self.pricer = StepPricer(model, precision, machine, stage.kernel)

    def step_seconds(self, work: Work, logits: int) -> tuple[float, dict[str, float]]:
        """Seconds of one step of the block, and each stream's seconds per layer."""
        step = self.pricer.step(self.spec, work, logits)
        per_layer = {name: term.at(self.values) for name, term in step.terms.items()}
        return step.seconds(self.values, self.model.n_layers), per_layer

    def step(self, work: Work, logits: int) -> float:
        """Seconds of one step of the block, each link charged for its stream."""
        seconds, per_layer = self.step_seconds(work, logits)
        layers = self.model.n_layers
        for stream, edge in STREAM_LINKS.items():
            if per_layer[stream] > 0:
                self.busy[edge] = self.busy.get(edge, 0.0) + per_layer[stream] * layers
        return seconds


def check_capacity(
    model: ModelSpec,
    precision: Precision,
    spec: OffloadSpec,
    machine: Machine,
    prompt: int,
    output: int,
    gpu_bytes: float,
) -> dict[str, float]:
    """Each tier's peak bytes under the placement, or an error naming the tier short."""
    need = {
        tier: lin.at(spec.values())
        for tier, lin in tier_bytes(model, precision, spec, prompt, output).items()
    }
    have = {"gpu": gpu_bytes, "cpu": machine.cpu_bytes, "disk": machine.disk_bytes}
    for tier in ("gpu", "cpu", "disk"):
        if need[tier] > have[tier] + 1:
            from sim.errors import LlmsimError

            raise LlmsimError(
                f"the {tier} tier is short: the placement needs {need[tier] / 1e9:.1f} GB "
                f"(weights, KV of {spec.block} sequences of {prompt}+{output} tokens, "
                f"activations) but has {have[tier] / 1e9:.1f} GB",
                key="offload",
            )
    return need
