"""Serving under load (group P1_serving_load, and the two Mixtral runs of P4_moe):
latency percentiles and throughput of real engines serving open-loop or closed-loop
load, each entry rebuilt as one scenario per published setup.

- `infsim_vllm_*` (inference-sim/training, vLLM v0.15.1 on H100 SXM): inference-perf at
  a constant rate; `sarathi` (vLLM V1 chunked prefill) with the entry's
  max_num_batched_tokens, max_num_seqs and max_model_len; prompts uniform over the
  measured range, outputs the requested length (ignore_eos); runtime `vllm-v1`. Rows:
  TTFT and E2E mean/p50/p90/p99, the derived TPOT mean (the same formula on simulated
  means) and the median per-request TPOT. Throughput is left out: below saturation it
  is the offered rate. inference-perf's own TPOT is left out (the entry's notes: tokens
  arrive in bursts per stream chunk, so it understates the step time).
- `datacrunch_sglang_*` (SGLang, Dec 2024) and `sglang030_*` (SGLang v0.3.0; and vLLM
  v0.6.0 in the offline entry): sglang.bench_serving, Poisson arrivals (or all at once)
  at the published prompt counts. Rows: the published medians (TTFT, ITL, TPOT, E2E),
  mean E2E and throughput.
- `vllm0191_llama31_8b_h100_conc8_*` (vLLM 0.19.1): a closed loop of 8 clients. The
  workload has no closed-loop arrival process, so it is modelled as every request
  queued at t = 0 with max_num_seqs = 8: the engine holds at most 8 and admits the next
  when one finishes, as the 8 clients would send it; TTFT counts from admission.

SGLang runs with policy `vllm`, not `sarathi`: its scheduler runs a prefill batch
whenever requests wait and decode batches otherwise, without mixing the two unless
--enable-mixed-chunk is given (server_args.py: enable_mixed_chunk = False); its chunked
prefill (8192 tokens) is the step's token cap and never splits these prompts (<= 1024).
A median ITL is the token-weighted median of decode step times (every decoding
sequence gets one token per step); a median TPOT is the median of per-request
(finish − first token) / (output tokens − 1).

Open-loop runs (constant or Poisson arrivals) of more than SERVING_MAX_REQUESTS requests
are cut to it (the note says so): they reach their steady state within a few hundred
requests (the 70B codegen run's E2E mean moves 1.3% from 1,200 to 2,400 requests), and
the runtime fit re-runs these rows many times. Bursts keep their published count: the
throughput of a burst depends on its size (the offline ShareGPT run gives 20.7 req/s
with 1,200 of its 5,000 requests, 25.1 with all).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.fidelity.rows import (
    NOT_REPRODUCIBLE,
    OK,
    EntryError,
    Options,
    Row,
    cluster_of,
    device_name,
    dtype_in,
    need,
    number,
)
from sim.plan import load_scenario
from sim.results.run import Results, simulate
from sim.spec import catalog

SERVING_MAX_REQUESTS = 1200

# Models the catalog knows under another name. Llama-3.3-70B-Instruct's config.json has
# Llama-3.1-70B's shape (LlamaForCausalLM, 80 layers, hidden 8192, 64 heads / 8 KV
# heads, intermediate 28672, vocab 128256); -Instruct checkpoints share the base model's.
SAME_ARCHITECTURE = {"llama-3.3-70b": "llama-3.1-70b"}

# sglang.bench_serving's ShareGPT sample (seeded shuffle, prompt and output >= 4 tokens,
# prompt <= 1024, prompt + output <= 2048) as tokenised by Llama-3: mean input and
# output tokens of its first 1200 and 2400 prompts, from the totals the benchmark
# printed (measurements datacrunch_sglang_llama33_70b_h200_tp4_sharegpt_rps4_rps8,
# derived_mean_input_len / derived_mean_output_len). SGLang's v0.3.0 benchmark drew the
# same sample sizes with the same tool and tokenizer family.
BENCH_SERVING_SHAREGPT = {1200: (224.2, 189.1), 2400: (225.3, 192.4)}
# ShareGPT lengths as the catalog recipe has them (workloads/sharegpt.yaml): lognormal
# with sigma 1.0 (an assumption: only means are published) on [4, 1024] and [4, 2048].
SHAREGPT_SIGMA = 1.0
SHAREGPT_PROMPT = (4, 1024)
SHAREGPT_OUTPUT = (4, 2048)

# vLLM V1 on H100 (`vllm serve`, GPUs of >= 70 GiB other than A100): max_num_batched_tokens
# 8192 (vllm/engine/arg_utils.py, get_batch_defaults, OPENAI_API_SERVER).
VLLM_V1_SERVE_BUDGET_H100 = 8192
# vLLM 0.6 (V0) defaults: max_num_seqs 256 (EngineArgs); max_num_batched_tokens
# max(max_model_len, 2048) without chunked prefill (SchedulerConfig), the policy default.
VLLM_V0_MAX_NUM_SEQS = 256
# SGLang (v0.3 - v0.4, python/sglang/srt/server_args.py): chunked_prefill_size 8192 on
# GPUs of 25 GB and more; mem_fraction_static 0.88 at TP1, 0.87 at TP2, 0.85 at TP4, 0.81
# at TP8; max_running_requests min(max_total_num_tokens // 2, req_to_token pool), the
# pool max(int(max_total_num_tokens / context_len * 512), 2048) requests: 2048 at
# Llama-3's 131072 context for these KV sizes (model_runner.init_memory_pool); the token
# pool is paged by single tokens (page_size 1).
SGLANG_CHUNKED_PREFILL = 8192
SGLANG_MAX_RUNNING = 2048
SGLANG_PAGE_SIZE = 1
SGLANG_MEM_FRACTION = ((8, 0.81), (4, 0.85), (2, 0.87), (1, 0.88))


@dataclass(frozen=True)
class Deployed:
    """What an entry names: device, model, tensor parallelism, dtype."""

    device: str
    model: str
    tp: int
    dtype: str

    @staticmethod
    def of(entry: dict[str, Any]) -> Deployed:
        device = device_name(str(need(entry, "hardware")))
        return Deployed(device, _model(entry), _tp(entry), dtype_in(str(need(entry, "precision"))))

    def scenario(self, name: str, kv: str | None = None) -> dict[str, Any]:
        """The scenario keys every setup of the entry shares."""
        return {
            "name": name,
            "cluster": cluster_of(self.device),
            "model": self.model,
            "precision": {"weights": self.dtype, "activations": self.dtype, "kv": kv or self.dtype},
            "parallel": {"tp": self.tp},
        }

    def __str__(self) -> str:
        return f"{self.model} tp{self.tp} on {self.device}, {self.dtype}"


@dataclass(frozen=True)
class BenchRun:
    """One sglang.bench_serving run of an entry: Poisson arrivals, its lengths."""

    variant: str  # "" when the entry has one run
    value: dict[str, Any]  # its published figures
    rate: float
    published: int  # prompts sent
    prompt: dict[str, Any]
    output: dict[str, Any]
    lengths: str  # how the lengths were chosen


@dataclass(frozen=True)
class Setup:
    """What every row of one simulated setup shares."""

    rid: str
    runtime: str
    note: str
    requests: int


Figure = tuple[str, float, float | None, str]  # metric, measured, simulated, unit


def infsim(entry: dict[str, Any], opts: Options) -> list[Row]:
    d = Deployed.of(entry)
    value = need(entry, "value")
    rate = number(need(entry, "value.requested_rate"), "value.requested_rate")
    published = int(number(need(entry, "value.n_success"), "value.n_success"))
    requests = _cap(published, opts)
    lo = int(number(need(entry, "value.prompt_len.min"), "value.prompt_len.min"))
    hi = int(number(need(entry, "value.prompt_len.max"), "value.prompt_len.max"))
    output = int(number(need(entry, "workload.output_len"), "workload.output_len"))
    seqs = int(number(need(entry, "batching.max_num_seqs"), "batching.max_num_seqs"))
    budget = int(number(need(entry, "batching.max_num_batched_tokens"), "max_num_batched_tokens"))
    scheduler: dict[str, Any] = {"policy": "sarathi", "max_num_seqs": seqs, "chunk_size": budget}
    if entry["batching"].get("max_model_len"):
        scheduler["max_model_len"] = int(number(entry["batching"]["max_model_len"]))
    scenario = {
        **d.scenario(entry["id"]),
        "scheduler": scheduler,
        "runtime": opts.runtime("vllm-v1"),
        "workload": {
            "requests": requests,
            "arrival": {"process": "constant", "rate": rate},
            "prompt": {"dist": "uniform", "min": lo, "max": hi},
            "output": {"dist": "fixed", "value": output},
        },
    }
    setup = Setup(
        entry["id"],
        "vllm-v1",
        f"{d}; vLLM v0.15.1 (the team's ground truth) -> vllm-v1; sarathi (budget {budget}, "
        f"<= {seqs} seqs); constant {rate:g} req/s, {_count(requests, published)}; prompts "
        f"uniform {lo}-{hi} (measured range), {output} output tokens (ignore_eos); prefix "
        "caching not modelled",
        requests,
    )

    def figures(results: Results) -> list[Figure]:
        s = results.summary
        out_mean = number(need(entry, "value.output_len.mean"), "value.output_len.mean")
        derived = None
        if s.e2e_s.mean is not None and s.ttft_s.mean is not None:
            derived = (s.e2e_s.mean - s.ttft_s.mean) / (out_mean - 1) * 1e3
        rows = [
            (f"{name} {stat}", number(value[key][stat]), _ms(getattr(getattr(s, attr), stat)), "ms")
            for name, key, attr in (("TTFT", "ttft_ms", "ttft_s"), ("E2E", "e2e_ms", "e2e_s"))
            for stat in ("mean", "p50", "p90", "p99")
        ]
        return [
            *rows,
            (
                "TPOT mean, derived: (E2E mean - TTFT mean) / (measured output_len mean - 1)",
                number(need(entry, "value.derived_tpot_ms_mean")),
                derived,
                "ms",
            ),
            (
                "TPOT p50 of per-request TPOT",
                number(need(entry, "value.derived_tpot_ms_p50_of_medians")),
                _ms(s.tpot_s.p50),
                "ms",
            ),
        ]

    return _rows(setup, scenario, figures)


DATACRUNCH_FIGURES = (
    ("median TTFT", "median_ttft_ms", "ttft"),
    ("median ITL", "median_itl_ms", "itl"),
    ("mean E2E", "mean_e2e_ms", "e2e_mean"),
    ("median E2E", "median_e2e_ms", "e2e"),
    ("output throughput", "output_throughput_tok_s", "output_tok_s"),
)
SGLANG030_FIGURES = (
    ("median E2E", "median_e2e", "e2e"),
    ("median TTFT", "median_ttft", "ttft"),
    ("median TPOT", "median_tpot", "tpot"),
    ("median ITL", "median_itl", "itl"),
)


def datacrunch(entry: dict[str, Any], opts: Options) -> list[Row]:
    dataset = str(need(entry, "workload.dataset"))
    rows: list[Row] = []
    for variant, value in _variants(need(entry, "value")):
        if dataset.lower().startswith("random"):
            prompt, output, lengths = _random_lengths(dataset)
        else:
            mean_in = number(need(value, "derived_mean_input_len"), "derived_mean_input_len")
            mean_out = number(need(value, "derived_mean_output_len"), "derived_mean_output_len")
            prompt, output = sharegpt_prompt(mean_in), sharegpt_output(mean_out)
            lengths = f"ShareGPT lognormal fits to the run's means {mean_in} in / {mean_out} out"
        run = BenchRun(
            variant,
            value,
            number(need(value, "request_rate"), "request_rate"),
            int(number(need(value, "completed"), "completed")),
            prompt,
            output,
            lengths,
        )
        rows += _sglang_online(entry, opts, run, "SGLang Dec 2024 (v0.4)", DATACRUNCH_FIGURES)
    return rows


def sglang030(entry: dict[str, Any], opts: Options) -> list[Row]:
    dataset = str(need(entry, "workload.dataset"))
    pattern = r"(\d+)(?: prompts)? at (\d+) req/s"
    counts = {float(r): int(n) for n, r in re.findall(pattern, dataset)}
    rows: list[Row] = []
    for variant, value in _variants(need(entry, "value")):
        rate = number(variant.removeprefix("rps"), "rate") if variant else 0.0
        if rate not in counts or counts[rate] not in BENCH_SERVING_SHAREGPT:
            raise EntryError(f"no prompt count for {variant} in workload.dataset")
        published = counts[rate]
        mean_in, mean_out = BENCH_SERVING_SHAREGPT[published]
        run = BenchRun(
            variant,
            value,
            rate,
            published,
            sharegpt_prompt(mean_in),
            sharegpt_output(mean_out),
            f"ShareGPT lognormal fits to bench_serving's {published}-prompt sample means "
            f"{mean_in} in / {mean_out} out",
        )
        engine = "SGLang v0.3.0 (before the v0.4 overlap scheduler)"
        rows += _sglang_online(entry, opts, run, engine, SGLANG030_FIGURES)
    return rows


def sglang030_offline(entry: dict[str, Any], opts: Options) -> list[Row]:
    d = Deployed.of(entry)
    found = re.search(r"(\d+) prompts", str(need(entry, "workload.dataset")))
    if not found:
        raise EntryError("no prompt count in workload.dataset")
    published = int(found.group(1))
    requests = _cap(published, opts, open_loop=False)
    mean_in = BENCH_SERVING_SHAREGPT[max(BENCH_SERVING_SHAREGPT)][0]
    rows: list[Row] = []
    for variant, value in _variants(need(entry, "value")):
        rps = number(need(value, "request_throughput_req_s"), "request_throughput_req_s")
        tok_s = number(need(value, "output_token_throughput_tok_s"), "output_token_throughput")
        mean_out = tok_s / rps  # the sample's mean output, from the published throughputs
        if variant.lower().startswith("sglang"):
            runtime = "sglang"
            scheduler = _sglang_scheduler(d.tp, "")
            how = (
                f"SGLang v0.3.0 -> sglang (before the v0.4 overlap scheduler); {_sglang(scheduler)}"
            )
        elif variant.lower().startswith("vllm"):
            runtime = "vllm-v0"
            given = re.search(r"max_model_len[ =](\d+)", str(entry.get("batching", "")))
            scheduler = {"policy": "vllm", "max_num_seqs": VLLM_V0_MAX_NUM_SEQS}
            if given:
                scheduler["max_model_len"] = int(given.group(1))
            how = (
                f"vLLM v0.6.0 -> vllm-v0, policy vllm (no chunked prefill), <= "
                f"{VLLM_V0_MAX_NUM_SEQS} seqs, max_model_len {scheduler.get('max_model_len')}; "
                "its --num-scheduler-steps 10 (host work amortised over 10 steps) is not modelled"
            )
        else:
            raise EntryError(f"unknown framework {variant!r} in value")
        scenario = {
            **d.scenario(f"{entry['id']}/{variant}"),
            "scheduler": scheduler,
            "runtime": opts.runtime(runtime),
            "workload": {
                "requests": requests,
                "arrival": {"process": "burst"},
                "prompt": sharegpt_prompt(mean_in),
                "output": sharegpt_output(mean_out),
            },
        }
        setup = Setup(
            f"{entry['id']}/{variant}",
            runtime,
            f"{d}; {how}; {_count(requests, published)} at t=0; ShareGPT lognormal fits to "
            f"means {mean_in} in (bench_serving's 2400-prompt sample) / {mean_out:.1f} out "
            "(output tok/s / req/s)",
            requests,
        )

        def figures(results: Results, rps: float = rps, tok_s: float = tok_s) -> list[Figure]:
            s = results.summary
            return [
                ("request throughput", rps, s.throughput_rps, "req/s"),
                ("output throughput", tok_s, s.output_tokens_per_s, "tok/s"),
            ]

        rows += _rows(setup, scenario, figures)
    return rows


def vllm_concurrency(entry: dict[str, Any], opts: Options) -> list[Row]:
    d = Deployed.of(entry)
    published = int(number(need(entry, "workload.requests"), "workload.requests"))
    clients = int(number(need(entry, "workload.concurrency"), "workload.concurrency"))
    prompt = _around(str(need(entry, "workload.input_tokens")), "workload.input_tokens")
    output = _around(str(need(entry, "workload.output_tokens")), "workload.output_tokens")
    requests = _cap(published, opts, open_loop=False)
    rows: list[Row] = []
    for variant, value in _variants(need(entry, "value")):
        kv = dtype_in(variant.split("_")[0])
        budget = VLLM_V1_SERVE_BUDGET_H100
        scenario = {
            **d.scenario(f"{entry['id']}/{variant}", kv=kv),
            "scheduler": {"policy": "sarathi", "max_num_seqs": clients, "chunk_size": budget},
            "runtime": opts.runtime("vllm-v1"),
            "workload": {
                "requests": requests,
                "arrival": {"process": "burst"},
                "prompt": {"dist": "uniform", "min": prompt[0], "max": prompt[1]},
                "output": {"dist": "uniform", "min": output[0], "max": output[1]},
            },
        }
        setup = Setup(
            f"{entry['id']}/{variant}",
            "vllm-v1",
            f"{d} weights, {kv} KV (H100 form factor not stated: SXM assumed); vLLM 0.19.1 "
            f"-> vllm-v1, sarathi (budget {budget}, vllm serve's H100 default); closed loop "
            f"of {clients} clients modelled as {_count(requests, published)} queued at t=0 "
            f"with max_num_seqs {clients} (no closed-loop arrivals in the workload spec); "
            f"TTFT from admission; prompts uniform {prompt[0]}-{prompt[1]}, outputs "
            f"{output[0]}-{output[1]}",
            requests,
        )

        def figures(results: Results, value: dict[str, Any] = value) -> list[Figure]:
            s = results.summary
            done = results.requests[results.requests["status"] == "finished"]
            ttft = (done["first_token_s"] - done["scheduled_s"]).to_numpy(dtype=float)
            median_ttft = float(np.median(ttft)) * 1e3 if ttft.size else None
            return [
                (
                    "median TTFT (from admission)",
                    number(need(value, "median_ttft_ms")),
                    median_ttft,
                    "ms",
                ),
                (
                    "median ITL",
                    number(need(value, "median_itl_ms")),
                    _ms(itl_median_s(results)),
                    "ms",
                ),
                ("total duration", number(need(value, "total_duration_s")), s.span_s, "s"),
                (
                    "output throughput",
                    number(need(value, "output_tok_s")),
                    s.output_tokens_per_s,
                    "tok/s",
                ),
            ]

        rows += _rows(setup, scenario, figures)
    return rows


# ------------------------------------------------------------------------- shared parts


def _sglang_online(
    entry: dict[str, Any],
    opts: Options,
    run: BenchRun,
    engine: str,
    published: tuple[tuple[str, str, str], ...],
) -> list[Row]:
    """One sglang.bench_serving run: Poisson arrivals, SGLang's scheduler; `published`
    names each figure (metric, key in the run's value, what the simulation gives)."""
    d = Deployed.of(entry)
    requests = _cap(run.published, opts)
    rid = f"{entry['id']}/{run.variant}" if run.variant else entry["id"]
    scheduler = _sglang_scheduler(d.tp, str(need(entry, "batching.server_flags")))
    scenario = {
        **d.scenario(rid),
        "scheduler": scheduler,
        "runtime": opts.runtime("sglang"),
        "workload": {
            "requests": requests,
            "arrival": {"process": "poisson", "rate": run.rate},
            "prompt": run.prompt,
            "output": run.output,
        },
    }
    setup = Setup(
        rid,
        "sglang",
        f"{d}; {engine} -> sglang; {_sglang(scheduler)}; Poisson {run.rate:g} req/s, "
        f"{_count(requests, run.published)}; {run.lengths}; torch.compile not modelled",
        requests,
    )

    def figures(results: Results) -> list[Figure]:
        s = results.summary
        simulated = {
            "ttft": _ms(s.ttft_s.p50),
            "itl": _ms(itl_median_s(results)),
            "tpot": _ms(s.tpot_s.p50),
            "e2e": _ms(s.e2e_s.p50),
            "e2e_mean": _ms(s.e2e_s.mean),
            "output_tok_s": s.output_tokens_per_s,
        }
        return [
            (metric, number(need(run.value, key), key), simulated[what], _unit(what))
            for metric, key, what in published
        ]

    return _rows(setup, scenario, figures)


def _unit(what: str) -> str:
    return "tok/s" if what == "output_tok_s" else "ms"


def _sglang_scheduler(tp: int, flags: str) -> dict[str, Any]:
    given = re.search(r"--mem-frac(?:tion-static)?[ =](\d*\.\d+)", flags)
    fraction = (
        float(given.group(1)) if given else next(f for n, f in SGLANG_MEM_FRACTION if tp >= n)
    )
    return {
        "policy": "vllm",
        "max_num_seqs": SGLANG_MAX_RUNNING,
        "max_num_batched_tokens": SGLANG_CHUNKED_PREFILL,
        "block_size": SGLANG_PAGE_SIZE,
        "gpu_memory_utilization": fraction,
    }


def _sglang(scheduler: dict[str, Any]) -> str:
    return (
        f"policy vllm (prefill batches first, not mixed with decodes), chunked prefill "
        f"{scheduler['max_num_batched_tokens']}, <= {scheduler['max_num_seqs']} running, "
        f"mem_fraction_static {scheduler['gpu_memory_utilization']}, page size 1"
    )


def _rows(
    setup: Setup, scenario: dict[str, Any], figures: Callable[[Results], list[Figure]]
) -> list[Row]:
    """Simulate one setup and compare its figures; if requests were left unfinished,
    every figure is a not-reproducible row saying why."""
    results = simulate(load_scenario(scenario), records=True)
    s = results.summary
    done = s.finished >= setup.requests
    note = setup.note
    if not done:
        why = ", ".join(f"{k} {v}" for k, v in s.reject_reasons.items()) or "unfinished"
        note = f"{s.finished}/{setup.requests} finished ({why}); {note}"
    status = OK if done else NOT_REPRODUCIBLE
    return [
        Row(
            setup.rid,
            metric,
            measured,
            sim if done else None,
            unit,
            note,
            status,
            runtime=setup.runtime,
        )
        for metric, measured, sim, unit in figures(results)
    ]


def itl_median_s(results: Results) -> float | None:
    """The median inter-token latency: decode step times weighted by the tokens they
    give (one per decoding sequence; a leap of n identical steps counts n times)."""
    it = results.iterations
    it = it[it["decode_seqs"] > 0]
    if it.empty:
        return None
    step = ((it["end_s"] - it["start_s"]) / it["iterations"]).to_numpy(dtype=float)
    weight = (it["decode_seqs"] * it["iterations"]).to_numpy(dtype=float)
    order = np.argsort(step, kind="stable")
    cumulative = np.cumsum(weight[order])
    return float(step[order][np.searchsorted(cumulative, cumulative[-1] / 2)])


def lognormal_median_for_mean(mean: float, sigma: float, lo: int, hi: int) -> float:
    """The median of exp(N(mu, sigma²)) whose law truncated to [lo, hi] (as the workload
    draws it: [lo - 0.5, hi + 0.5]) has mean `mean` (bench/derive_traces.py fits the
    catalog's recipes the same way)."""
    from scipy import optimize, special  # only the ShareGPT fits need them

    a_lo, a_hi = math.log(lo - 0.5), math.log(hi + 0.5)

    def gap(mu: float) -> float:
        a, b = (a_lo - mu) / sigma, (a_hi - mu) / sigma
        mass = special.ndtr(b) - special.ndtr(a)
        tail = special.ndtr(b - sigma) - special.ndtr(a - sigma)
        return float(math.exp(mu + sigma**2 / 2) * tail / mass - mean)

    return math.exp(optimize.brentq(gap, math.log(lo) - 5, math.log(hi) + 5))


def sharegpt_prompt(mean: float) -> dict[str, Any]:
    lo, hi = SHAREGPT_PROMPT
    median = lognormal_median_for_mean(mean, SHAREGPT_SIGMA, lo, hi)
    return {"dist": "lognormal", "median": median, "sigma": SHAREGPT_SIGMA, "min": lo, "max": hi}


def sharegpt_output(mean: float) -> dict[str, Any]:
    lo, hi = SHAREGPT_OUTPUT
    median = lognormal_median_for_mean(mean, SHAREGPT_SIGMA, lo, hi)
    return {"dist": "lognormal", "median": median, "sigma": SHAREGPT_SIGMA, "min": lo, "max": hi}


def _random_lengths(dataset: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """sglang.bench_serving's random dataset: lengths drawn uniformly from
    max(int(n × range_ratio), 1) to n (bench_serving.py, sample_random_requests)."""
    found_in = re.search(r"--random-input (\d+)", dataset)
    found_out = re.search(r"--random-output (\d+)", dataset)
    ratio = re.search(r"range[_ ]ratio (\d*\.?\d+)", dataset)
    if not (found_in and found_out and ratio):
        raise EntryError("workload.dataset lacks --random-input/--random-output/range ratio")
    n_in, n_out, r = int(found_in.group(1)), int(found_out.group(1)), float(ratio.group(1))
    lo_in, lo_out = max(int(n_in * r), 1), max(int(n_out * r), 1)
    return (
        {"dist": "uniform", "min": lo_in, "max": n_in},
        {"dist": "uniform", "min": lo_out, "max": n_out},
        f"random lengths uniform {lo_in}-{n_in} in / {lo_out}-{n_out} out",
    )


def _around(text: str, what: str) -> tuple[int, int]:
    """`~20k (+-15%)` as the bounds of vllm bench serve's random lengths, uniform over
    n × (1 ± range_ratio) (benchmarks/datasets.py, RandomDataset)."""
    found = re.search(r"~?\s*(\d+(?:\.\d+)?)\s*([kK]?)\s*\(\s*\+-\s*(\d+(?:\.\d+)?)%", text)
    if not found:
        raise EntryError(f"{what}: cannot read {text!r} as '~N (+-P%)'")
    n = float(found.group(1)) * (1000 if found.group(2) else 1)
    r = float(found.group(3)) / 100
    return round(n * (1 - r)), round(n * (1 + r))


def _variants(value: Any) -> list[tuple[str, dict[str, Any]]]:
    """The published setups of an entry: each sub-mapping of its value (`rps4`,
    `BF16_KV`, ...), or the value itself when it holds figures (a `repeat_*` run beside
    them is not another setup)."""
    if not isinstance(value, dict):
        raise EntryError("value is not a mapping")
    nested = [(str(k), v) for k, v in value.items() if isinstance(v, dict)]
    if nested and len(nested) == len(value) and not any(k.startswith("repeat") for k, _ in nested):
        return nested
    return [("", value)]


def _model(entry: dict[str, Any]) -> str:
    raw = re.sub(r"\s*\(.*\)\s*$", "", str(need(entry, "model"))).strip().lower()
    raw = re.sub(r"-instruct$", "", raw)
    return catalog.load_model(SAME_ARCHITECTURE.get(raw, raw)).name


def _tp(entry: dict[str, Any]) -> int:
    found = re.search(r"TP(\d+)", str(entry.get("parallelism", "")))
    return int(found.group(1)) if found else 1


def _cap(published: int, opts: Options, open_loop: bool = True) -> int:
    """The requests to simulate: the published count, cut to SERVING_MAX_REQUESTS for
    open-loop runs (a burst's throughput depends on its size: it keeps its count) and
    to `opts.max_requests` when given."""
    cap = SERVING_MAX_REQUESTS if open_loop else published
    return min(published, cap, opts.max_requests or published)


def _count(requests: int, published: int) -> str:
    if requests < published:
        return f"{requests} requests (of {published} published: cut to keep the suite fast)"
    return f"{requests} requests"


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3
