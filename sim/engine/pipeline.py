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
- `zigzag-block` (FlexGen): one group; a step runs as one block, stage by stage, layer
  by layer, each layer's weights loaded once for the whole block; loads of offloaded
  weights overlap the compute of the layer before (without offloading it is a single
  micro-batch per step).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sim.arith.ops import Work


@dataclass(frozen=True)
class MicroBatch:
    work: Work
    logits: int


def split_work(work: Work, logits: int, parts: int) -> list[MicroBatch]:
    """Cut a step's work into `parts` micro-batches of (nearly) equal size: integer
    counts differ by at most one, sums of pairs and KV tokens are shared out in the
    same proportions as the tokens. Empty parts are dropped."""
    parts = max(1, min(parts, max(work.tokens, 1)))
    if parts == 1:
        return [MicroBatch(work, logits)]

    def cut(total: int) -> list[int]:
        base, extra = divmod(total, parts)
        return [base + (1 if i < extra else 0) for i in range(parts)]

    pre, seqs, lg = cut(work.prefill_tokens), cut(work.decode_seqs), cut(logits)
    out = []
    for i in range(parts):
        p_share = pre[i] / work.prefill_tokens if work.prefill_tokens else 0.0
        d_share = seqs[i] / work.decode_seqs if work.decode_seqs else 0.0
        mb = Work(
            tokens=pre[i] + seqs[i],
            prefill_tokens=pre[i],
            prefill_pairs=work.prefill_pairs * p_share,
            prefill_kv_tokens=round(work.prefill_kv_tokens * p_share),
            decode_seqs=seqs[i],
            decode_kv_tokens=round(work.decode_kv_tokens * d_share),
        )
        if mb.tokens:
            out.append(MicroBatch(mb, lg[i]))
    return out


class PipelineSchedule:
    name: ClassVar[str]

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


SCHEDULES: dict[str, type[PipelineSchedule]] = {}


def register(cls: type[PipelineSchedule]) -> type[PipelineSchedule]:
    SCHEDULES[cls.name] = cls
    return cls


@register
class FillDrain(PipelineSchedule):
    name = "fill-drain"

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


@register
class ZigzagBlock(PipelineSchedule):
    name = "zigzag-block"
