"""The fidelity suite: simulated figures against published measurements.

`validate()` reads a measurements file (by default the one that ships in this package,
`sim/fidelity/measurements.yaml`: entries with an id, model, hardware, precision,
workload, metric, value and source), rebuilds every setup it knows how to reproduce as a
scenario, runs it through the same `simulate()` users call, and returns one `Row` per
compared figure: measured, simulated, unit, error and a note on how it was modelled.
Nothing is tuned per entry; a figure the simulator cannot reproduce gets a row that says
why, not a number.

What is modelled (docs/fidelity.md gives the reasoning):
- gpt-fast batch-1 decode (`gptfast_*`): one request with the source's 5-token prompt and
  256 output tokens, a static batch of 1; tokens/s = 1 / median TPOT. Weights in the
  entry's dtype (bf16/int8/int4), activations and KV in bf16. The source's power cap is
  named in the note, not corrected for.
- TensorRT-LLM maximum throughput (`trtllm_*`): every request at t = 0, fixed lengths,
  one dtype for weights, activations and KV (fp8), Sarathi-style iterations that mix
  decodes with prefill chunks under a token budget of 8192 (TensorRT-LLM's default
  max_num_tokens) and at most 2048 sequences (its default max batch); output tokens over
  the makespan.
- vLLM Table 1 (`vllm_table1_memory`, `vllm_opt13b_kv_per_token`): weight bytes, KV
  space and KV slots from the engine's own memory plan (`plan_memory`) at vLLM's default
  gpu_memory_utilization of 0.9, and the closed-form KV bytes per token.
- DistServe Figure 1 (`distserve_intro_13b_goodput`): OPT-13B fp16 on one A100-80GB,
  vLLM policy, Poisson arrivals, 512 prompt / 64 output tokens, SLOs TTFT 0.4 s and
  TPOT 0.04 s; goodput is the highest rate at which 90% of requests meet both, found by
  bisection. Prefill-only and decode-only figures need disaggregated serving.
- MoE and new hardware (`P4_moe`, `P5_new_hardware`; sim/fidelity/frontier.py): SGLang's
  EP72 DeepSeek-V3 decode nodes as DP attention x EP over 9 DGX H100s, vLLM 0.6.2
  serving Llama-3.1-405B on 8 MI300X; the rest of those groups say why not
  (`frontier.REASONS`). The Qwen3-30B-A3B trace (vLLM DP2 with expert parallelism)
  replays as `dp_attention: 2, ep: 2` (sim/fidelity/replay.py).

The cost kernel is whichever `simulate()` picks (the roofline with per-device
efficiencies, or a device's calibration profile): rerun `llmsim validate` when it changes.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sim.errors import LlmsimError
from sim.fidelity import (
    distserve,
    flexgen,
    frontier,
    gptfast,
    kernels,
    replay,
    serving,
    steps,
    trtllm,
    vllm,
)
from sim.fidelity.rows import (
    NOT_REPRODUCIBLE,
    SKIPPED,
    EntryError,
    Options,
    Report,
    Row,
    summarize,
    unpriced_row,
)
from sim.spec import yamlio

Handler = Callable[[dict[str, Any], Options], list[Row]]

_NOT_COVERED = {
    "vllm_fig13_batched_requests": "not modelled yet: needs the ShareGPT/Alpaca length "
    "distributions and Orca's Max/Pow2/Oracle reservations run at the paper's rates",
    "sarathi_setup": "a description of the Sarathi-Serve setup, not a measurement",
    "sarathi_microbench": "a list of iteration-time facts, not one reproducible setup",
    "splitwise_kv_transfer": "the figure's per-layer transfer times for BLOOM-176B and "
    "Llama-2-70B are read from a secondary source as approximate values; the setup "
    "(batch, prompt lengths) behind them is not stated",
    "splitwise_characterization": "qualitative phase characterisation, not one setup",
    "here_nvidia_h100_sxm_microbench": "the device's efficiency factors were derived from "
    "these figures (hardware/devices/h100-sxm.yaml): comparing them would be circular",
    "here_nvidia_h200_sxm_microbench": "the device's efficiency factors were derived from "
    "these figures (hardware/devices/h200.yaml): comparing them would be circular",
}


_HANDLERS: list[tuple[re.Pattern[str], Handler]] = [
    (re.compile(r"^gptfast_"), gptfast.gptfast),
    (re.compile(r"^trtllm_"), trtllm.trtllm),
    (re.compile(r"^vllm_table1_memory$"), vllm.vllm_memory),
    (re.compile(r"^vllm_opt13b_kv_per_token$"), vllm.kv_per_token),
    (re.compile(r"^distserve_intro_13b_goodput$"), distserve.distserve),
    (re.compile(r"^splitwise_vllm_(llama2_70b|bloom176b)_h100_"), steps.splitwise),
    (re.compile(r"^tensorrtllm_v05_first_token_latency"), steps.trt_first_token),
    (re.compile(r"^tensorrtllm_v061_static_peak_throughput"), steps.trt_static_throughput),
    (re.compile(r"^vllm053_cpu_overhead_breakdown"), steps.vllm053_light_load),
    (re.compile(r"^vllm0191_decode_itl_vs_context"), steps.vllm0191_itl),
    (re.compile(r"^sglang_pr2904_custom_allreduce"), kernels.custom_all_reduce),
    (re.compile(r"^flexgen_"), flexgen.flexgen),
    (re.compile(r"^infsim_vllm_"), serving.infsim),
    (re.compile(r"^datacrunch_sglang_llama"), serving.datacrunch),
    (re.compile(r"^sglang030_vllm060_.*_offline_"), serving.sglang030_offline),
    (re.compile(r"^sglang030_llama"), serving.sglang030),
    (re.compile(r"^vllm0191_llama31_8b_h100_conc8_"), serving.vllm_concurrency),
    (re.compile(r"^lss_vllm019_"), replay.replay),
    (re.compile(r"^trace_llmservingsim-"), replay.trace_replay),
    (re.compile(r"^sglang_deepseekv3_decode_ep\d+_"), frontier.sglang_ep_decode),
    (re.compile(r"^vllm062_llama31_405b_8xmi300x_"), frontier.vllm_mi300x),
    *((re.compile(f"^{re.escape(i)}$"), frontier.not_reproducible) for i in frontier.REASONS),
]


SHIPPED = Path(__file__).resolve().parent / "measurements.yaml"
QUICK_REQUESTS = 2000  # validate(quick=True): the throughput benchmarks' request cap


def default_data_path() -> Path:
    """The measurements that ship with llmsim (derived from the developers' published
    measurements by bench/derive_measurements.py, each entry with its source)."""
    return SHIPPED


def load_measurements(path: Path) -> list[Any]:
    if not path.is_file():
        raise LlmsimError(
            "measurements file not found (give another with --data PATH)", file=str(path)
        )
    data = yamlio.read_yaml(path)
    entries = data.get("measurements") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise LlmsimError(
            "expected a mapping with a list of entries", file=str(path), key="measurements"
        )
    return entries


def _not_covered(entry: dict[str, Any], opts: Options) -> list[Row]:
    reason = _NOT_COVERED.get(entry["id"], "no model of this entry in the suite yet")
    return [unpriced_row(entry, reason, NOT_REPRODUCIBLE)]


def _unique(rows: list[Row]) -> list[Row]:
    """Rows of one entry that share an id (one per figure of a setup) are told apart by
    their metric: `<id>/<metric slug>`."""
    counts = Counter(r.id for r in rows)
    out = []
    for r in rows:
        if counts[r.id] > 1:
            slug = re.sub(r"[^a-z0-9]+", "_", r.metric.lower()).strip("_")
            r = replace(r, id=f"{r.id}/{slug}")
        out.append(r)
    return out


def _rows_for(entry: Any, index: int, opts: Options) -> list[Row]:
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
        return [Row(f"entry #{index}", "", None, None, "", "skipped: entry has no id", SKIPPED)]
    handler = next((h for pattern, h in _HANDLERS if pattern.search(entry["id"])), _not_covered)
    group = str(entry.get("group", "") or "")
    try:
        return _unique([replace(r, group=group) for r in handler(entry, opts)])
    except (EntryError, LlmsimError) as exc:
        reason = exc.line() if isinstance(exc, LlmsimError) else str(exc)
    except (KeyError, TypeError, ValueError) as exc:
        reason = f"malformed entry ({type(exc).__name__}: {exc})"
    return [replace(unpriced_row(entry, f"skipped: {reason}", SKIPPED), group=group)]


def default_entries() -> list[Any]:
    """Every entry `validate()` reads by default: the shipped measurements and the
    figures kept beside them (FlexGen's, the serving traces, the runtime kernels)."""
    entries = load_measurements(default_data_path())
    for extra in (flexgen, replay, kernels):
        entries += extra.missing_entries(entries)
    return entries


def validate(
    data: str | Path | None = None,
    *,
    only: str | None = None,
    max_requests: int | None = None,
    groups: tuple[str, ...] = (),
    ids: frozenset[str] | None = None,
    runtimes: dict[str, dict[str, Any]] | None = None,
    quick: bool = False,
) -> Report:
    """Compare the simulator with every entry of `data` (default: `default_data_path()`)
    whose id contains `only` (case-insensitive). `max_requests` caps the requests of the
    throughput benchmarks (for quick checks; the published counts are the default).
    `groups` keeps only entries of those groups, `ids` only those entries; `runtimes`
    lays settings over catalog runtimes (the runtime fit's candidate values); `quick`
    runs the capacity searches with one seed and a 5% bisection and caps the
    throughput benchmarks at 2,000 requests (unless `max_requests` says otherwise)."""
    wall0 = time.perf_counter()
    path = Path(data) if data is not None else default_data_path()
    entries = load_measurements(path) if data is not None else default_entries()
    if quick and max_requests is None:
        max_requests = QUICK_REQUESTS
    opts = Options(max_requests=max_requests, runtimes=runtimes or {}, quick=quick)
    rows: list[Row] = []
    for i, entry in enumerate(entries):
        if (
            only
            and only.lower()
            not in str(entry.get("id", "") if isinstance(entry, dict) else "").lower()
        ):
            continue
        if groups and not (isinstance(entry, dict) and entry.get("group") in groups):
            continue
        if ids is not None and not (isinstance(entry, dict) and entry.get("id") in ids):
            continue
        rows += _rows_for(entry, i, opts)
    return Report(str(path), rows, summarize(rows), time.perf_counter() - wall0)
