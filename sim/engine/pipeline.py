"""Micro-batch pipeline schedules (a registry): how a step's work crosses the stages.

A replica's stages are SimPy resources taken in order; a micro-batch holds stage s for
its compute, then sends its activations to stage s+1 over the links between them.
Schedules differ in how many independent request groups (virtual engines) a replica
runs, and in how one step of a group is cut into micro-batches:

- `fill-drain`: one group; each step is cut into m micro-batches that fill the pipeline
  and drain it before the next step starts — the bubble is (p−1)/(m+p−1).
- `continuous`: m groups (vLLM's virtual engines), each step one micro-batch; a stage
  takes whichever micro-batch is ready, so with m ≥ p the pipeline stays full.
- `hybrid` (DeepSpeed-Inference): `decode_microbatches` groups whose decode steps
  re-enter the first stage as soon as they leave the last; a step that prefills is cut
  into `prefill_microbatches` micro-batches, so long prompts pipeline finely too.

FlexGen's zigzag block schedule is not one of these: it belongs to offloading (a
scenario's `offload:`), where the offload executor (sim.engine.offload) runs each step of
a block layer by layer with the weight, KV and activation streams overlapping compute.
"""

from __future__ import annotations

from typing import ClassVar

from sim.arith.ops import MicroBatch, Work, split_work
from sim.registry import SCHEDULES


class PipelineSchedule:
    name: ClassVar[str]
    # Whether a decode step is cut into several micro-batches (then a one-stage replica
    # cannot run a stretch of decode steps as one leap: see sim.engine.leap).
    splits_decode: ClassVar[bool] = False

    def __init__(
        self,
        pp: int,
        microbatches: int | None,
        prefill_microbatches: int | None,
        decode_microbatches: int | None,
    ):
        self.pp = pp
        self.microbatches = microbatches or pp
        self.prefill_microbatches = prefill_microbatches or max(2 * pp, self.microbatches)
        self.decode_microbatches = decode_microbatches or pp

    def engines(self) -> int:
        """Independent request groups a replica runs."""
        return 1

    def split(self, work: Work, logits: int) -> list[MicroBatch]:
        """The micro-batches of one step of one group."""
        return [MicroBatch(work, logits)]


def register(cls: type[PipelineSchedule]) -> type[PipelineSchedule]:
    SCHEDULES.register(cls.name)(cls)
    return cls


@register
class FillDrain(PipelineSchedule):
    name = "fill-drain"
    splits_decode = True

    def split(self, work: Work, logits: int) -> list[MicroBatch]:
        return split_work(work, logits, self.microbatches)


@register
class Continuous(PipelineSchedule):
    name = "continuous"

    def engines(self) -> int:
        return self.microbatches


@register
class Hybrid(PipelineSchedule):
    name = "hybrid"

    def engines(self) -> int:
        return self.decode_microbatches

    def split(self, work: Work, logits: int) -> list[MicroBatch]:
        if work.prefill_tokens:
            return split_work(work, logits, self.prefill_microbatches)
        return [MicroBatch(work, logits)]
