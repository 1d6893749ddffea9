"""The serving runtime as data: the software that drives the devices.

A GPU's roofline prices its kernels; the runtime decides how many kernels run, how much
host time each iteration costs, and what crosses the links. A runtime (a file of
`runtimes/`, or inline under a scenario's `runtime:`) sets:

- `host`: CPU time per iteration of the serving loop (scheduling, input preparation,
  sampling, detokenisation): `fixed` + `per_sequence` × sequences in the step +
  `per_token` × tokens in the step. With `overlap` (asynchronous scheduling: the host
  prepares step i+1 while the devices run step i) an iteration takes the longer of
  host and device time, else their sum.
- `kernel_launch`: what launching one kernel costs when it is launched from Python one
  at a time (eager mode): a kernel shorter than this is launch-bound.
- `graphs`: CUDA graphs. Decode steps of up to `max_batch` sequences replay a captured
  graph (`mixed: true` replays prefill and mixed steps too, piecewise, with attention
  outside the graph): no per-kernel launch, one `launch` per step, the batch padded up
  to the next captured size (`sizes`, default vLLM's 1, 2, 4, 8, 16, 24, ... up to
  `max_batch`; `padding: false` when the engine builds a program for every shape, as
  TensorRT engines and compiled single-batch loops do). `launch` defaults to one kernel
  launch of the device: a graph is launched with one call.
- `fused`: element-wise ops fused into their neighbours (a norm into the residual add,
  rotary into attention, the activation into the up projection): they cost no HBM pass
  and no launch of their own.
- `io_dtype`: the dtype of activations between GEMMs, all-reduces and element-wise ops
  (TensorRT-LLM runs FP8 GEMMs but keeps the residual stream and its all-reduces in
  BF16); default: the scenario's activation dtype.
- `all_reduce`: NCCL (ring / tree, or the device's calibrated fits), or `custom`: a
  one-shot or two-shot all-reduce kernel inside one NVLink domain for messages up to
  `custom_max_bytes` (vLLM, SGLang, TensorRT-LLM), with its own `custom_latency` and
  the bandwidth one device achieves in it (`custom_bandwidth`: such kernels run on a
  few SMs and move far less than the link could).
- `admission`: `optimistic` (admit while blocks are free, preempt when decode runs out:
  vLLM, SGLang) or `reserve` (admit only what can finish: a request's whole KV, prompt
  and output, is reserved up front, and nothing is ever evicted: TensorRT-LLM's
  GUARANTEED_NO_EVICT).
- `overlap_weight_gather`: a weight-gathered layout's all-gathers run under the previous
  layer's compute (XLA), so a layer takes the longer of the two.
- `kv_cache`: `paged` (a KV cache, as every serving engine keeps), or `none`: every
  step recomputes the whole sequence and the LM head runs on every position (a plain
  Python loop calling the model, as in the seed's GPT-2 example).

Every number carries a `source` entry; a runtime's own file says where each came from.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from sim.spec.base import Bytes, BytesPerS, Seconds, Spec
from sim.units import DTYPE_BYTES

FUSABLE = ("norm", "norm_2", "residual_add", "residual_add_2", "rotary", "mlp_act", "shared_act")


class HostSpec(Spec):
    fixed_s: Seconds = Field(default=0.0, alias="fixed", ge=0)
    per_sequence_s: Seconds = Field(default=0.0, alias="per_sequence", ge=0)
    per_token_s: Seconds = Field(default=0.0, alias="per_token", ge=0)
    overlap: bool = False

    def seconds(self, sequences: int, tokens: int) -> float:
        """Host time of one iteration of `sequences` sequences and `tokens` tokens."""
        return self.fixed_s + self.per_sequence_s * sequences + self.per_token_s * tokens

    def per_rank(self, ranks: int) -> HostSpec:
        """The host time of a step shared by `ranks` attention data-parallel ranks: each
        rank's scheduler (SGLang and vLLM run one per DP rank, in parallel) handles its
        share of the sequences and tokens; the fixed part is every rank's at once."""
        if ranks <= 1:
            return self
        return self.model_copy(
            update={
                "per_sequence_s": self.per_sequence_s / ranks,
                "per_token_s": self.per_token_s / ranks,
            }
        )


def vllm_capture_sizes(max_batch: int) -> tuple[int, ...]:
    """vLLM's captured decode batch sizes: 1, 2, 4, then every multiple of 8."""
    sizes = [s for s in (1, 2, 4) if s <= max_batch]
    sizes += list(range(8, max_batch + 1, 8))
    if max_batch not in sizes and max_batch > 0:
        sizes.append(max_batch)
    return tuple(sizes)


class GraphsSpec(Spec):
    enabled: bool = False
    max_batch: int = Field(default=0, ge=0, description="largest decode batch captured")
    sizes: tuple[int, ...] | None = Field(
        default=None, description="captured batch sizes (default: 1, 2, 4, 8, 16, ...)"
    )
    mixed: bool = Field(
        default=False, description="prefill and mixed steps also replay (piecewise) graphs"
    )
    padding: bool = Field(default=True, description="pad to the next captured size")
    launch_s: Seconds | None = Field(default=None, alias="launch", ge=0)

    @field_validator("sizes")
    @classmethod
    def _sorted(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None and (sorted(set(value)) != list(value) or min(value) < 1):
            raise ValueError("captured sizes are distinct positive integers, ascending")
        return value

    def captured(self) -> tuple[int, ...]:
        if not self.enabled:
            return ()
        if not self.padding:  # every shape has its own program: only the bound matters
            return (self.max_batch,)
        return self.sizes if self.sizes is not None else vllm_capture_sizes(self.max_batch)


class RuntimeSpec(Spec):
    name: str = "bare"
    aliases: tuple[str, ...] = ()
    description: str = ""
    engine: str = Field(default="", description="the engine and version it stands for")
    host: HostSpec = Field(default_factory=HostSpec)
    kernel_launch_s: Seconds | None = Field(
        default=None,
        alias="kernel_launch",
        ge=0,
        description="eager launch cost per kernel (default: the device's launch_overhead)",
    )
    graphs: GraphsSpec = Field(default_factory=GraphsSpec)
    fused: tuple[str, ...] = ()
    io_dtype: str | None = None
    all_reduce: Literal["nccl", "custom"] = "nccl"
    custom_max_bytes: Bytes = Field(default=0.0, ge=0)
    custom_latency_s: Seconds = Field(default=0.0, alias="custom_latency", ge=0)
    custom_bandwidth: BytesPerS | None = Field(
        default=None,
        gt=0,
        description="what one device moves per second in the custom kernel (default: "
        "its link's rate)",
    )
    admission: Literal["optimistic", "reserve"] = "optimistic"
    overlap_weight_gather: bool = False
    kv_cache: Literal["paged", "none"] = "paged"
    sources: dict[str, str] = Field(default_factory=dict)
    fitted: dict[str, str] = Field(
        default_factory=dict,
        description="parameters fitted on the dev measurements: path -> the procedure",
    )

    @field_validator("fused")
    @classmethod
    def _fusable(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(FUSABLE))
        if unknown:
            raise ValueError(f"cannot fuse {unknown}; fusable ops: {', '.join(FUSABLE)}")
        return value

    @field_validator("io_dtype")
    @classmethod
    def _dtype(cls, value: str | None) -> str | None:
        if value is not None and value not in DTYPE_BYTES:
            raise ValueError(f"unknown dtype {value!r}; valid: {', '.join(DTYPE_BYTES)}")
        return value
