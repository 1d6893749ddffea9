"""The fidelity suite: simulated figures against published measurements.

`validate()` reads a measurements file (by default `shared/data/measurements-dev.yaml`
beside the checkout: entries with an id, model, hardware, precision, workload, metric,
value and source), rebuilds every setup it knows how to reproduce as a scenario, runs it
through the same `simulate()` users call, and returns one `Row` per compared figure:
measured, simulated, unit, error and a note on how it was modelled. Nothing is tuned per
entry; a figure the simulator cannot reproduce gets a row that says why, not a number.

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
  space and KV slots from the engine's own memory plan (`plan_replica`) at vLLM's default
  gpu_memory_utilization of 0.9, and the closed-form KV bytes per token.
- DistServe Figure 1 (`distserve_intro_13b_goodput`): OPT-13B fp16 on one A100-80GB,
  vLLM policy, Poisson arrivals, 512 prompt / 64 output tokens, SLOs TTFT 0.4 s and
  TPOT 0.04 s; goodput is the highest rate at which 90% of requests meet both, found by
  bisection. Prefill-only and decode-only figures need disaggregated serving.

The cost kernel is whichever `simulate()` picks (the roofline with per-device
efficiencies, or a device's calibration profile): rerun `llmsim validate` when it changes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.arith.precision import Precision
from sim.errors import LlmsimError
from sim.plan import load_scenario
from sim.spec import catalog
from sim.units import DTYPE_BYTES

OK = "ok"
NOT_REPRODUCIBLE = "not reproducible"
SKIPPED = "skipped"

# The single-node machine each device sits in (a TP group never leaves the node here).
_NODE_OF_DEVICE = {
    "a100-80gb-sxm": "dgx-a100",
    "a100-40gb": "dgx-a100-40gb",
    "h100-sxm": "dgx-h100",
    "h200": "hgx-h200",
}

GPTFAST_OUTPUT_TOKENS = 256  # long enough that the median TPOT is a steady decode step
TRTLLM_MAX_BATCH = 2048  # TensorRT-LLM's default max_batch_size
TRTLLM_MAX_NUM_TOKENS = 8192  # its default max_num_tokens (chunked context budget)
VLLM_MEMORY_UTILIZATION = 0.9  # vLLM's default gpu_memory_utilization (paper era)

# DistServe (Zhong et al., OSDI 2024) Figure 1: "a 13B LLM under a synthetic workload with
# input length = 512 and output length = 64 on one NVIDIA 80GB A100"; the SLOs are the
# figure's horizontal lines, stated by the same authors' blog post on the experiment
# (hao-ai-lab.github.io/blogs/distserve: "P90 TTFT as 0.4 seconds and P90 TPOT as 0.04
# seconds", Poisson arrivals). Goodput: the highest rate with 90% SLO attainment.


@dataclass(frozen=True)
class GoodputSetup:
    """A colocated goodput experiment: one replica, fixed lengths, Poisson arrivals."""

    model: str
    dtype: str
    cluster: str
    prompt: int
    output: int
    ttft_s: float
    tpot_s: float
    attainment: float


DISTSERVE_FIG1 = GoodputSetup("opt-13b", "fp16", "dgx-a100", 512, 64, 0.4, 0.04, 0.9)
GOODPUT_REQUESTS = 1000  # per seed and rate
GOODPUT_SEEDS = 3
GOODPUT_REL_TOL = 0.01

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


# ------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class Row:
    """One compared figure. `simulated` is None when it could not be reproduced; the
    note then says why (status `not reproducible`) or what was wrong with the entry
    (status `skipped`)."""

    id: str
    metric: str
    measured: float | None
    simulated: float | None
    unit: str
    note: str
    status: str = OK

    @property
    def error_pct(self) -> float | None:
        """(simulated − measured) / measured, in percent."""
        if self.simulated is None or self.measured is None or self.measured == 0:
            return None
        return (self.simulated - self.measured) / self.measured * 100.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "error_pct": self.error_pct}


@dataclass(frozen=True)
class Summary:
    n: int  # rows
    n_numeric: int  # rows with a simulated number
    n_not_reproducible: int
    n_skipped: int
    median_abs_error_pct: float | None
    p90_abs_error_pct: float | None


@dataclass(frozen=True)
class Report:
    data: str
    rows: list[Row]
    summary: Summary
    wall_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data,
            "rows": [r.to_dict() for r in self.rows],
            **asdict(self.summary),
            "wall_s": self.wall_s,
        }


def summarize(rows: list[Row]) -> Summary:
    errors = np.array([abs(e) for r in rows if (e := r.error_pct) is not None], dtype=float)
    return Summary(
        n=len(rows),
        n_numeric=int(errors.size),
        n_not_reproducible=sum(r.status == NOT_REPRODUCIBLE for r in rows),
        n_skipped=sum(r.status == SKIPPED for r in rows),
        median_abs_error_pct=float(np.median(errors)) if errors.size else None,
        p90_abs_error_pct=float(np.percentile(errors, 90)) if errors.size else None,
    )


# ------------------------------------------------------------------------------ reading


def default_data_path() -> Path:
    """`shared/data/measurements-dev.yaml` beside the checkout (../shared from the root)."""
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "measurements-dev.yaml"


def load_measurements(path: Path) -> list[Any]:
    if not path.is_file():
        raise LlmsimError(
            "measurements file not found (give another with --data PATH)", file=str(path)
        )
    data = catalog.read_yaml(path)
    entries = data.get("measurements") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise LlmsimError(
            "expected a mapping with a list of entries", file=str(path), key="measurements"
        )
    return entries


class _EntryError(Exception):
    """The entry lacks something its setup needs (the row is skipped, with the reason)."""


def _need(entry: dict[str, Any], path: str) -> Any:
    node: Any = entry
    for key in path.split("."):
        if not isinstance(node, dict) or node.get(key) is None:
            raise _EntryError(f"entry has no {path}")
        node = node[key]
    return node


def _number(value: Any, what: str = "value") -> float:
    """A number, allowing the transcriptions' `15.7K` style."""
    if isinstance(value, bool):
        raise _EntryError(f"{what} is not a number: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().replace(",", "")
    scale = {"K": 1e3, "M": 1e6}.get(text[-1:].upper(), 1.0)
    try:
        return float(text[:-1] if scale != 1.0 else text) * scale
    except ValueError:
        raise _EntryError(f"{what} is not a number: {value!r}") from None


def _dtype(text: str) -> str:
    found = re.search(r"\b(fp32|bf16|fp16|fp8|int8|int4)\b", text.lower())
    if not found or found.group(1) not in DTYPE_BYTES:
        raise _EntryError(f"no dtype in {text!r}")
    return found.group(1)


def _model(entry: dict[str, Any]) -> str:
    raw = re.sub(r"\s*\(.*\)\s*$", "", str(_need(entry, "model"))).strip()
    return catalog.load_model(raw).name


def _device(hardware: str) -> str:
    name = re.split(r"[\s(]", hardware.strip(), maxsplit=1)[0]
    return catalog.load_device(name).name


def _cluster(device: str) -> str:
    if device not in _NODE_OF_DEVICE:
        raise _EntryError(f"no single-node cluster in the suite for device {device}")
    return _NODE_OF_DEVICE[device]


def _fixed(requests: int, prompt: int, output: int) -> dict[str, Any]:
    return {
        "requests": requests,
        "arrival": {"process": "burst"},
        "prompt": {"dist": "fixed", "value": prompt},
        "output": {"dist": "fixed", "value": output},
    }


def _simulate(scenario: dict[str, Any]) -> dict[str, Any]:
    from sim.results.run import simulate

    summary: dict[str, Any] = simulate(load_scenario(scenario), records=False).summary
    return summary


# ----------------------------------------------------------------------------- entries


@dataclass(frozen=True)
class _Options:
    max_requests: int | None = None


Handler = Callable[[dict[str, Any], _Options], list[Row]]


def _gptfast(entry: dict[str, Any], opts: _Options) -> list[Row]:
    hardware = str(_need(entry, "hardware"))
    device, model = _device(hardware), _model(entry)
    weights = _dtype(str(_need(entry, "precision")))
    group = re.search(r"\bG\s*=\s*(\d+)", str(entry.get("precision")))
    batch = int(_number(_need(entry, "workload.batch"), "workload.batch"))
    prompt = int(_number(_need(entry, "workload.prompt_tokens"), "workload.prompt_tokens"))
    summary = _simulate(
        {
            "name": entry["id"],
            "cluster": _cluster(device),
            "model": model,
            "precision": {
                "weights": weights,
                "activations": "bf16",
                "kv": "bf16",
                "group_size": int(group.group(1)) if group else 64,
            },
            "scheduler": {"policy": "static", "batch_size": batch, "max_wait": 0},
            "workload": _fixed(batch, prompt, GPTFAST_OUTPUT_TOKENS),
        }
    )
    tpot = summary["tpot_s"]["p50"]
    cap = re.search(r"\(([^)]*power[^)]*)\)", hardware)
    note = (
        f"{model} on {device}: {weights} weights, bf16 activations/KV; static batch "
        f"{batch}, {prompt}-token prompt, {GPTFAST_OUTPUT_TOKENS} output tokens; "
        "1 / median TPOT"
        + (f"; source {cap.group(1)}: simulated at full power, not corrected" if cap else "")
    )
    return [
        Row(
            entry["id"],
            "batch-1 decode tokens/s",
            _number(_need(entry, "value")),
            1.0 / tpot if tpot else None,
            str(entry.get("unit", "tokens/s")),
            note,
        )
    ]


def _trtllm(entry: dict[str, Any], opts: _Options) -> list[Row]:
    device, model = _device(str(_need(entry, "hardware"))), _model(entry)
    dtype = _dtype(str(_need(entry, "precision")))
    prompt = int(_number(_need(entry, "workload.input_tokens"), "workload.input_tokens"))
    output = int(_number(_need(entry, "workload.output_tokens"), "workload.output_tokens"))
    published = int(_number(_need(entry, "workload.num_requests"), "workload.num_requests"))
    requests = min(published, opts.max_requests) if opts.max_requests else published
    parallel = str(entry.get("parallelism", ""))
    tp = int(m.group(1)) if (m := re.search(r"TP(\d+)", parallel)) else 1
    pp = int(m.group(1)) if (m := re.search(r"PP(\d+)", parallel)) else 1
    summary = _simulate(
        {
            "name": entry["id"],
            "cluster": _cluster(device),
            "model": model,
            "precision": {"weights": dtype, "activations": dtype, "kv": dtype},
            "parallel": {"tp": tp, "pp": pp},
            "scheduler": {
                "policy": "sarathi",
                "max_num_seqs": TRTLLM_MAX_BATCH,
                "chunk_size": TRTLLM_MAX_NUM_TOKENS,
            },
            "workload": _fixed(requests, prompt, output),
        }
    )
    note = (
        f"{model} tp{tp} pp{pp} on {device}: {dtype} weights/activations/KV; sarathi "
        f"(decodes + prefill chunks, budget {TRTLLM_MAX_NUM_TOKENS} tokens, "
        f"<= {TRTLLM_MAX_BATCH} seqs); {requests} requests at t=0"
        + (f" (of {published})" if requests < published else "")
        + f", {prompt} in / {output} out; output tokens / makespan"
    )
    measured = _number(_need(entry, "value"))
    if summary["finished"] < requests:
        reasons = ", ".join(summary.get("reject_reasons", {})) or "unfinished"
        return [
            Row(
                entry["id"],
                "output tok/s",
                measured,
                None,
                "tokens/s",
                f"{summary['finished']}/{requests} finished ({reasons}); {note}",
                NOT_REPRODUCIBLE,
            )
        ]
    return [
        Row(entry["id"], "output tok/s", measured, summary["output_tokens_per_s"], "tokens/s", note)
    ]


def _a100_part(gpus: str, total_gb: float, count: int) -> str:
    """Which A100: named in the GPU string, else by the memory per GPU."""
    if "80GB" in gpus.replace(" ", ""):
        return "a100-80gb-sxm"
    if "40GB" in gpus.replace(" ", ""):
        return "a100-40gb"
    per = round(total_gb / count)
    parts = {40: "a100-40gb", 80: "a100-80gb-sxm"}
    if "A100" not in gpus or per not in parts:
        raise _EntryError(f"cannot tell the GPU from {gpus!r} with {total_gb} GB over {count}")
    return parts[per]


def _vllm_memory(entry: dict[str, Any], opts: _Options) -> list[Row]:
    from sim.arith.params import total_params
    from sim.cost.topology import build_cluster
    from sim.plan.memory import plan_memory as plan_replica

    value = _need(entry, "value")
    counts = entry.get("count") or {}
    if not isinstance(value, dict):
        raise _EntryError("value is not a mapping of model sizes")
    models = [m.strip() for m in str(_need(entry, "model")).split("/")]
    dtype = _dtype(str(entry.get("precision") or "fp16"))
    rows = []
    for size, info in value.items():
        rid = f"{entry['id']}/{size}"
        name = next((m for m in models if m.upper().endswith(str(size).upper())), None)
        if name is None or not isinstance(info, dict):
            raise _EntryError(f"no model for size {size}")
        gpus = str(info.get("gpus", ""))
        count_raw = counts.get(size) if isinstance(counts, dict) else None
        if count_raw is None:
            many = re.match(r"\s*(\d+)\s*x", gpus)
            count_raw = many.group(1) if many else 1
        count = int(_number(count_raw, f"count.{size}"))
        if count < 1:
            raise _EntryError(f"count.{size} must be at least 1, got {count}")
        device = _a100_part(gpus, _number(info.get("total_mem_GB", 0), "total_mem_GB"), count)
        s = load_scenario(
            {
                "name": rid,
                "cluster": _cluster(device),
                "model": catalog.load_model(name).name,
                "precision": {"weights": dtype, "activations": dtype, "kv": dtype},
                "parallel": {"tp": count},
                "scheduler": {"policy": "vllm", "gpu_memory_utilization": VLLM_MEMORY_UTILIZATION},
                "workload": _fixed(1, 1, 1),
            }
        )
        cluster = build_cluster(s.cluster)
        precision = Precision.of(s.precision)
        plan = plan_replica(s, cluster, precision)
        usable = cluster.device.memory_bytes * VLLM_MEMORY_UTILIZATION
        kv_free = count * sum(usable - w - plan.workspace_bytes for w in plan.weight_bytes)
        block_size = s.scheduler.policy_params().block_size
        how = (
            f"{s.model.name} {dtype}, tp{count} on {count}x {device} ({gpus}); vLLM memory plan "
            f"at gpu_memory_utilization {VLLM_MEMORY_UTILIZATION}"
        )
        rows += [
            Row(
                f"{rid}/params",
                "weights",
                _number(info.get("params_GB"), "params_GB"),
                total_params(s.model) * precision.w_bytes / 1e9,
                "GB",
                f"{how}; parameters x {precision.w_bytes:g} bytes, GB = 1e9 B",
            ),
            Row(
                f"{rid}/kv_cache",
                "KV cache space",
                _number(info.get("kv_cache_GB"), "kv_cache_GB"),
                kv_free / 2**30,
                "GiB",
                f"{how}; usable - weights - activation workspace, summed over GPUs; in GiB, "
                "as the paper's slots imply (slots x KV/token = its GB x 2^30)",
            ),
            Row(
                f"{rid}/slots",
                "max KV slots",
                _number(info.get("max_kv_slots"), "max_kv_slots"),
                float(plan.blocks * block_size),
                "tokens",
                f"{how}; KV blocks x block_size {block_size}",
            ),
        ]
    return rows


def _kv_per_token(entry: dict[str, Any], opts: _Options) -> list[Row]:
    from sim.arith.memory import kv_bytes_per_token

    model = catalog.load_model(_model(entry))
    dtype = _dtype(str(entry.get("precision") or _need(entry, "metric")))
    return [
        Row(
            entry["id"],
            "KV bytes per token",
            _number(_need(entry, "value")),
            kv_bytes_per_token(model, dtype) / 1024,
            "KiB/token",
            f"{model.name} {dtype}: 2 x n_layers x n_kv_heads x d_head x bytes; KB = 1024 B "
            "(the source's 2 x 5120 x 40 x 2 = 819200 B)",
        )
    ]


def _distserve_scenario(d: GoodputSetup, variant: str) -> dict[str, Any] | None:
    """The scenario behind one of DistServe Figure 1's curves (None: not one of them)."""
    slo: dict[str, Any] = {"ttft": d.ttft_s, "tpot": d.tpot_s, "percentile": 90}
    output = d.output
    disaggregation = None
    if variant == "prefill_only_per_GPU":  # one GPU that only prefills: TTFT is its SLO
        slo.pop("tpot")
        output = 1
    elif variant == "decode_only_per_GPU":  # one decode GPU fed by prefill GPUs to spare
        slo.pop("ttft")
        disaggregation = {"prefill": {"replicas": 7}, "decode": {"replicas": 1}}
    elif variant in ("2P1D_total", "2P1D_per_GPU"):
        disaggregation = {"prefill": {"replicas": 2}, "decode": {"replicas": 1}}
    elif variant != "colocated_1GPU":
        return None
    return {
        "name": f"distserve-fig1-{variant}",
        "cluster": d.cluster,
        "model": d.model,
        "precision": {"weights": d.dtype, "activations": d.dtype, "kv": d.dtype},
        "scheduler": {"policy": "vllm"},
        "router": {"policy": "least-outstanding"},
        "slo": slo,
        "disaggregation": disaggregation,
        "workload": {
            "requests": GOODPUT_REQUESTS,
            "arrival": {"process": "poisson", "rate": 1.0},
            "prompt": {"dist": "fixed", "value": d.prompt},
            "output": {"dist": "fixed", "value": output},
        },
    }


_DISTSERVE_HOW = {
    "colocated_1GPU": "one GPU serving both phases, TTFT and TPOT SLOs",
    "prefill_only_per_GPU": "one GPU, 1-token outputs (prefill only), TTFT SLO only",
    "decode_only_per_GPU": "disaggregated 7 prefill + 1 decode GPU (prefill to spare), "
    "TPOT SLO only; per decode GPU",
    "2P1D_total": "disaggregated 2 prefill + 1 decode GPU, KV over NVSwitch, both SLOs",
    "2P1D_per_GPU": "the 2P1D goodput over its 3 GPUs",
}


def _distserve(entry: dict[str, Any], opts: _Options) -> list[Row]:
    from sim.studies.capacity import capacity

    value = _need(entry, "value")
    if not isinstance(value, dict):
        raise _EntryError("value is not a mapping")
    unit = str(entry.get("unit", "requests/s"))
    d = DISTSERVE_FIG1
    found: dict[str, float] = {}  # scenario name -> goodput (2P1D serves two rows)
    rows = []
    for key, measured in value.items():
        rid = f"{entry['id']}/{key}"
        spec = _distserve_scenario(d, str(key))
        if spec is None:
            rows.append(
                Row(
                    rid,
                    f"goodput ({key})",
                    _number(measured),
                    None,
                    unit,
                    "not one of DistServe Figure 1's setups the suite models",
                    NOT_REPRODUCIBLE,
                )
            )
            continue
        if spec["name"] not in found:
            result = capacity(
                load_scenario(spec),
                target=d.attainment,
                seeds=GOODPUT_SEEDS,
                tolerance=GOODPUT_REL_TOL,
                loads=(),
            )
            found[spec["name"]] = result.capacity_rps
        goodput = found[spec["name"]] / (3 if key == "2P1D_per_GPU" else 1)
        rows.append(
            Row(
                rid,
                f"goodput ({key}) at {d.attainment:.0%} SLO attainment",
                _number(measured),
                goodput,
                unit,
                f"{d.model} {d.dtype} on {d.cluster}, vllm policy, Poisson, {d.prompt} in / "
                f"{d.output} out; {_DISTSERVE_HOW[str(key)]}; TTFT <= {d.ttft_s} s, TPOT <= "
                f"{d.tpot_s} s (Fig. 1 SLOs, per the authors' blog); `llmsim capacity` "
                f"--target {d.attainment} over {GOODPUT_SEEDS} seeds x {GOODPUT_REQUESTS} "
                f"requests, 10% warm-up and drain trimmed, bisection to {GOODPUT_REL_TOL:.0%}",
            )
        )
    return rows


_HANDLERS: list[tuple[re.Pattern[str], Handler]] = [
    (re.compile(r"^gptfast_"), _gptfast),
    (re.compile(r"^trtllm_"), _trtllm),
    (re.compile(r"^vllm_table1_memory$"), _vllm_memory),
    (re.compile(r"^vllm_opt13b_kv_per_token$"), _kv_per_token),
    (re.compile(r"^distserve_intro_13b_goodput$"), _distserve),
]


def _not_covered(entry: dict[str, Any], opts: _Options) -> list[Row]:
    reason = _NOT_COVERED.get(entry["id"], "no model of this entry in the suite yet")
    return [_unpriced_row(entry, reason, NOT_REPRODUCIBLE)]


def _unpriced_row(entry: dict[str, Any], reason: str, status: str) -> Row:
    """A row for an entry the suite measured but does not price (no simulated value)."""
    measured = entry.get("value")
    number = float(measured) if isinstance(measured, int | float) else None
    unit = str(entry.get("unit", "") or "")
    return Row(entry["id"], str(entry.get("metric", "")), number, None, unit, reason, status)


def _rows_for(entry: Any, index: int, opts: _Options) -> list[Row]:
    if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
        return [Row(f"entry #{index}", "", None, None, "", "skipped: entry has no id", SKIPPED)]
    handler = next((h for pattern, h in _HANDLERS if pattern.search(entry["id"])), _not_covered)
    try:
        return handler(entry, opts)
    except (_EntryError, LlmsimError) as exc:
        reason = exc.line() if isinstance(exc, LlmsimError) else str(exc)
    except (KeyError, TypeError, ValueError) as exc:
        reason = f"malformed entry ({type(exc).__name__}: {exc})"
    return [_unpriced_row(entry, f"skipped: {reason}", SKIPPED)]


def validate(
    data: str | Path | None = None,
    *,
    only: str | None = None,
    max_requests: int | None = None,
) -> Report:
    """Compare the simulator with every entry of `data` (default: `default_data_path()`)
    whose id contains `only` (case-insensitive). `max_requests` caps the requests of the
    throughput benchmarks (for quick checks; the published counts are the default)."""
    wall0 = time.perf_counter()
    path = Path(data) if data is not None else default_data_path()
    entries = load_measurements(path)
    opts = _Options(max_requests=max_requests)
    rows: list[Row] = []
    for i, entry in enumerate(entries):
        if (
            only
            and only.lower()
            not in str(entry.get("id", "") if isinstance(entry, dict) else "").lower()
        ):
            continue
        rows += _rows_for(entry, i, opts)
    return Report(str(path), rows, summarize(rows), time.perf_counter() - wall0)
