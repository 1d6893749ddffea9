"""The MoE and new-hardware figures (groups P4_moe and P5_new_hardware): expert
parallelism with attention data-parallel (SGLang's large-scale EP decode of DeepSeek-V3),
and the 2024-25 accelerators (MI300X) under the runtimes of the time.

Each setup is the one the source publishes, read the way a user of llmsim would write
it; nothing is tuned per entry:
- `sglang_deepseekv3_decode_ep72_9x8h100`: the decode nodes of SGLang's PD-disaggregated
  deployment, 9 DGX H100 nodes as one replica with `dp_attention: 72, ep: 72` (DeepSeek's
  32 redundant experts: 288 slots, 4 a GPU), two-batch overlap, FP8 weights with block
  scales, runtime `sglang`. The prefill pool is not part of the figure (the blog's
  slow-down API keeps decode saturated), so the decode pool is run alone: a burst of
  256 requests per GPU with the 2,000-token prompts, 8 output tokens each, and the
  figure is the steady decode step: tokens/s per node = 256 × 8 / the median decode step.
  The prefills of the burst run first on the same GPUs and do not enter the figure.
- `vllm062_llama31_405b_8xmi300x_sharegpt`: Llama-3.1-405B bf16 TP8 on one MI300X node,
  vLLM 0.6.2 (runtime `vllm-v0`), bench_serving's ShareGPT (its default 1,000 prompts)
  at Poisson 16 req/s with the default config (chunked prefill, which vLLM 0.6 turns on
  for a context over 32K: `sarathi` with the stated budget of 1024 tokens, 1024 seqs), and
  at 1000 req/s with the optimised one (no chunked prefill: `vllm`, 1024 seqs; its 15
  scheduler steps per host pass are not modelled). Request throughput = finished / span.

What cannot be reproduced says why (`REASONS`): production days without batch sizes,
prefill/decode pools with expert parallelism (the simulator's disaggregated pools refuse
EP and DP attention), models the catalog lacks (Kimi K2, DeepSeek-V2), and MLPerf
results whose setup or dataset lengths the entries do not carry.
"""

from __future__ import annotations

import re
from typing import Any

from sim.fidelity.rows import NOT_REPRODUCIBLE, EntryError, Options, Row, need, number, unpriced_row
from sim.fidelity.serving import (
    BENCH_SERVING_SHAREGPT,
    SGLANG_CHUNKED_PREFILL,
    Figure,
    Setup,
    _count,
    _rows,
    itl_median_s,
    sharegpt_output,
    sharegpt_prompt,
)
from sim.results.run import Results

_DISAGG_EP = (
    "the simulator's disaggregated pools refuse expert parallelism and DP attention "
    "(plan.check: 'expert and attention data parallelism are not modelled with "
    "disaggregated pools')"
)
_OPENORCA = (
    "the MLPerf OpenOrca set's input lengths are not in the shipped data "
    "(workload-stats.yaml mlperf_openorca_llama2_70b: 'input_length_stats: NOT FOUND'); "
    "offline throughput at a ~2,000-sequence batch depends on them"
)

# Entries of these groups that stay without a number, and why.
REASONS = {
    "deepseek_v3r1_online_service_h800_per_node": "a production day-average of DeepSeek's "
    "own PD-disaggregated system (prefill EP32 x 4 nodes, decode EP144 x 18 nodes) with "
    "batch sizes and per-request lengths not stated, on-disk KV-cache hits in the prefill "
    "figure; " + _DISAGG_EP,
    "sglang_kimi_k2_pd_ep_128xh200": "Kimi K2 (384 experts, MLA) is not in the model "
    "catalog, its precision is not stated, and 1P1D with large-scale EP is a "
    "disaggregated setup with EP: " + _DISAGG_EP,
    "datacrunch_sglang_deepseek_v2_dp_attention_8xh200_decode": "DeepSeek-V2 / "
    "DeepSeek-Coder-V2 (160 experts, MLA) is not in the model catalog (only DeepSeek-V3), "
    "and which checkpoint (FP8 or bf16) produced the figure is not recorded",
    "mlperf_v51_amd_8xmi300x_mixtral_8x7b": "the MLPerf Mixtral-8x7B set's lengths "
    "(OpenOrca, GSM8K, MBXP mix) are not in the shipped data, and the entry's "
    "engine configuration for MI300X (replicas per GPU, batch) was not read",
    "mlperf_v51_nvidia_gb200_nvl72_deepseek_r1": "the entry's parallelism, precision and "
    "batching are 'not read' (NVIDIA's TensorRT submission), and MLPerf's DeepSeek-R1 "
    "dataset lengths are not in the shipped data",
    "mlperf_v51_nvidia_gb200_nvl72_llama31_405b": "the entry's parallelism, precision and "
    "batching are 'not read' (NVIDIA's TensorRT submission), and MLPerf's Llama-3.1-405B "
    "dataset lengths are not in the shipped data",
    "mlperf_v51_amd_8xmi325x_llama2_70b": _OPENORCA,
    "mlperf_v51_mi325x_single_gpu_llama2_70b_offline": _OPENORCA,
}

SGLANG_EP_DECODE_OUTPUT = 8  # decode steps per request: enough for a steady median step
DEEPSEEK_REDUNDANT_EXPERTS = 32  # DeepSeek's (and SGLang's decode) EPLB copies
# vLLM 0.6's benchmark_serving.py: --num-prompts defaults to 1000.
VLLM_BENCH_SERVING_PROMPTS = 1000


def not_reproducible(entry: dict[str, Any], opts: Options) -> list[Row]:
    return [unpriced_row(entry, REASONS[entry["id"]], NOT_REPRODUCIBLE)]


def sglang_ep_decode(entry: dict[str, Any], opts: Options) -> list[Row]:
    """SGLang's EP72 decode nodes: per-node output tokens/s at 256 sequences a GPU."""
    gpus = int(number(need(entry, "count"), "count"))
    per_gpu = int(number(need(entry, "batching.batch_per_device"), "batch_per_device"))
    prompt = int(number(need(entry, "workload.input_len"), "input_len"))
    found = re.search(r"EP(\d+)", str(need(entry, "parallelism")))
    if not found or int(found.group(1)) != gpus or gpus % 8:
        raise EntryError("parallelism names no EP over all of the entry's 8-GPU nodes")
    nodes = gpus // 8
    measured = number(need(entry, "value.per_node"), "value.per_node")
    # The figure is the step at the published batch, so `opts.max_requests` does not cut
    # it (18,432 short requests simulate in about two seconds).
    requests = per_gpu * gpus
    scenario = {
        "name": entry["id"],
        "cluster": {
            "name": f"dgx-h100-x{nodes}",
            "node": "dgx-h100",
            "nodes": nodes,
            "network": {"kind": "fat-tree", "latency": "0.5 us"},
        },
        "model": "deepseek-v3",
        "precision": {"weights": "fp8", "activations": "bf16", "kv": "bf16", "fp8_scales": "block"},
        "parallel": {
            "tp": 1,
            "dp_attention": gpus,
            "ep": gpus,
            "experts": {"redundant": DEEPSEEK_REDUNDANT_EXPERTS},
            "two_batch_overlap": bool(entry.get("batching", {}).get("two_batch_overlap")),
        },
        "scheduler": {
            "policy": "vllm",
            "max_num_seqs": requests,
            "max_num_batched_tokens": SGLANG_CHUNKED_PREFILL,
        },
        "runtime": opts.runtime("sglang"),
        "workload": {
            "requests": requests,
            "arrival": {"process": "burst"},
            "prompt": {"dist": "fixed", "value": prompt},
            "output": {"dist": "fixed", "value": SGLANG_EP_DECODE_OUTPUT},
        },
    }
    setup = Setup(
        entry["id"],
        "sglang",
        f"deepseek-v3 fp8 (block scales) on {nodes} x dgx-h100: dp_attention {gpus} x ep "
        f"{gpus}, {DEEPSEEK_REDUNDANT_EXPERTS} redundant experts, two-batch overlap; the "
        f"decode pool alone: {requests} requests ({per_gpu} a GPU) of {prompt} prompt "
        f"tokens at t=0, {SGLANG_EP_DECODE_OUTPUT} output tokens; per node = {per_gpu} x 8 "
        "/ median decode step",
        requests,
    )

    def figures(results: Results) -> list[Figure]:
        step = itl_median_s(results)
        sim = per_gpu * 8 / step if step else None
        return [("output tokens/s per node", measured, sim, "tok/s per node")]

    return _rows(setup, scenario, figures)


def vllm_mi300x(entry: dict[str, Any], opts: Options) -> list[Row]:
    """vLLM 0.6.2 serving Llama-3.1-405B on 8 MI300X: request throughput at two rates."""
    value = need(entry, "value")
    published = VLLM_BENCH_SERVING_PROMPTS
    requests = min(published, opts.max_requests or published)
    mean_in, mean_out = BENCH_SERVING_SHAREGPT[min(BENCH_SERVING_SHAREGPT)]
    base = {
        "cluster": "mi300x-8x",
        "model": "llama-3.1-405b",
        "precision": {"weights": "bf16", "activations": "bf16", "kv": "bf16"},
        "parallel": {"tp": 8},
        "runtime": opts.runtime("vllm-v0"),
    }
    setups = (
        (
            "vLLM_default_qps16_req_s",
            16.0,
            {"policy": "sarathi", "chunk_size": 1024, "max_num_seqs": 1024},
            "default config: chunked prefill (vLLM 0.6 turns it on above a 32K context), "
            "sarathi budget 1024, <= 1024 seqs",
        ),
        (
            "vLLM_optimized_qps1000_req_s",
            1000.0,
            {"policy": "vllm", "max_num_seqs": 1024},
            "optimised config: no chunked prefill (policy vllm), <= 1024 seqs; its "
            "--num-scheduler-steps 15 (host work over 15 steps) is not modelled",
        ),
    )
    rows: list[Row] = []
    for key, rate, scheduler, how in setups:
        measured = number(need(value, key), key)
        scenario = {
            **base,
            "name": f"{entry['id']}/{key}",
            "scheduler": scheduler,
            "workload": {
                "requests": requests,
                "arrival": {"process": "poisson", "rate": rate},
                "prompt": sharegpt_prompt(mean_in),
                "output": sharegpt_output(mean_out),
            },
        }
        setup = Setup(
            f"{entry['id']}/{key}",
            "vllm-v0",
            f"llama-3.1-405b tp8 on mi300x-8x, bf16; vLLM 0.6.2 (ROCm) -> vllm-v0; {how}; "
            f"{_count(requests, published)} (bench_serving's default count; the entry does "
            f"not state it), Poisson {rate:g} req/s; ShareGPT lognormal fits to means "
            f"{mean_in} in / {mean_out} out (bench_serving's 1200-prompt sample)",
            requests,
        )

        def figures(results: Results, measured: float = measured) -> list[Figure]:
            return [("request throughput", measured, results.summary.throughput_rps, "req/s")]

        rows += _rows(setup, scenario, figures)
    return rows
