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

from sim.arith.ops import Work
from sim.plan.deploy import Edge, OffloadPlan


class OffloadExecutor:
    def __init__(self, plan: OffloadPlan, n_layers: int):
        self.plan = plan
        self.values = plan.spec.values()
        self.n_layers = n_layers

    def step_seconds(self, work: Work, logits: int) -> tuple[float, dict[str, float]]:
        """Seconds of one step of the block, and each stream's seconds per layer."""
        step = self.plan.pricer.step(self.plan.spec, work, logits)
        per_layer = {name: term.at(self.values) for name, term in step.terms.items()}
        return step.seconds(self.values, self.n_layers), per_layer

    def step(self, work: Work, logits: int) -> tuple[float, dict[Edge, float]]:
        """Seconds of one step of the block, and the seconds each link carries its
        stream for (over all layers)."""
        seconds, per_layer = self.step_seconds(work, logits)
        streams = {
            edge: per_layer[stream] * self.n_layers
            for stream, edge in self.plan.streams.items()
            if per_layer[stream] > 0
        }
        return seconds, streams
