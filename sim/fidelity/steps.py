"""Per-step timings of real engines (groups P2_step_timing and P3_tp_scaling): static
batches of identical requests, timed phase by phase, under the runtime the source ran.

- Splitwise's vLLM profiles (`splitwise_vllm_*`: Llama-2-70B and BLOOM-176B on a DGX
  H100, TP 2/4/8): a burst of `batch` requests with the row's prompt and 128 output
  tokens (the profile's `token_size` for these sweeps) under the vllm policy; prompt
  time is the batch's last first token, token time the mean time per output token after
  it. vLLM of late 2023 had no CUDA graphs yet: runtime `vllm-v0-eager`.
- TensorRT-LLM v0.5 first-token latency (`tensorrtllm_v05_*`): one request, one output
  token, FP8 weights and KV; TTFT. Runtime `tensorrt-llm`.
- TensorRT-LLM v0.6.1 static peak throughput (`tensorrtllm_v061_*`): a static batch of
  `bs` identical requests, FP8; output tokens over the makespan, per GPU. Runtime
  `tensorrt-llm`.
- vLLM 0.5.3's light-load decode interval (`vllm053_*`): one request of Llama 3 8B on an
  H100; TPOT, and the share of the step the GPU is busy. Runtime `vllm-v0`, whose host
  time was read from this entry: an in-sample check of the device part, said so.
- vLLM 0.19.1's ITL against context (`vllm0191_decode_itl_*`): single requests at
  contexts from 256 to 125k tokens; the slope and intercept of a least-squares line
  through their ITLs, as the source fitted its measurements. Runtime `vllm-v1`.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from sim.fidelity.rows import (
    NOT_REPRODUCIBLE,
    EntryError,
    Options,
    Row,
    fixed_workload,
    need,
    number,
)
from sim.plan import load_scenario
from sim.results.run import simulate
from sim.spec import catalog

SPLITWISE_OUTPUT = 128  # token_size of the batch and prompt sweeps (the entries' keys)


def _run(spec: dict[str, Any]) -> tuple[Any, Any]:
    res = simulate(load_scenario(spec))
    return res.summary, res.requests


def _static(
    name: str,
    cluster: str,
    model: str,
    dtype: str,
    tp: int,
    batch: int,
    prompt: int,
    output: int,
    runtime: str | dict[str, Any],
    policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    policy = dict(policy or {"policy": "vllm"})
    if prompt + output > catalog.load_model(model).max_seq_len:
        # the source ran these lengths: the engine's max_model_len was set to allow them
        policy.setdefault("max_model_len", prompt + output)
    return {
        "name": name,
        "cluster": cluster,
        "model": model,
        "precision": {"weights": dtype, "activations": dtype, "kv": dtype},
        "parallel": {"tp": tp},
        "scheduler": policy,
        "runtime": runtime,
        "workload": fixed_workload(batch, prompt, output),
    }


def _phases(requests: Any) -> tuple[float, float]:
    """(the batch's prompt time: its last first token, the mean time per output token
    after the first)."""
    done = requests[requests["status"] == "finished"]
    prompt_s = float(done["first_token_s"].max() - done["arrival_s"].min())
    steps = (done["output_tokens"] - 1).clip(lower=0)
    spans = done["finish_s"] - done["first_token_s"]
    per_token = float(spans.sum() / steps.sum()) if steps.sum() else float("nan")
    return prompt_s, per_token


# ------------------------------------------------------------------ Splitwise


def _splitwise_model(entry: dict[str, Any]) -> str:
    text = str(need(entry, "model")).lower()
    return "bloom-176b" if "bloom" in text else "llama-2-70b"


def splitwise(entry: dict[str, Any], opts: Options) -> list[Row]:
    runtime = "vllm-v0-eager"
    model = _splitwise_model(entry)
    value = need(entry, "value")
    if not isinstance(value, dict):
        raise EntryError("value is not a mapping")
    rows: list[Row] = []
    cache: dict[tuple[int, int, int], tuple[float, float]] = {}

    def phases(tp: int, batch: int, prompt: int) -> tuple[float, float]:
        key = (tp, batch, prompt)
        if key not in cache:
            spec = _static(
                f"{entry['id']}-tp{tp}-b{batch}-p{prompt}",
                "dgx-h100",
                model,
                "fp16",
                tp,
                batch,
                prompt,
                SPLITWISE_OUTPUT,
                opts.runtime(runtime),
                # the profile ran these lengths; vLLM takes max_model_len from the user
                {"policy": "vllm", "max_model_len": prompt + SPLITWISE_OUTPUT},
            )
            cache[key] = _phases(_run(spec)[1])
        return cache[key]

    def row(rid: str, metric: str, measured: Any, simulated: float, how: str) -> Row:
        note = (
            f"{model} fp16 on dgx-h100, {how}; burst of identical requests, vllm policy, "
            f"{SPLITWISE_OUTPUT} output tokens; runtime {runtime}"
        )
        return Row(rid, metric, number(measured), simulated * 1e3, "ms", note, runtime=runtime)

    if all(str(k).startswith("TP") for k in value):  # P3: {TPn: {x: ms}}
        decode = "decode" in entry["id"]
        for tp_key, series in value.items():
            tp = int(str(tp_key)[2:])
            if not isinstance(series, dict):
                raise EntryError(f"value.{tp_key} is not a mapping")
            for x, ms in series.items():
                if decode:
                    t = phases(tp, int(x), 512)[1]
                    rid, metric = f"{tp_key}/batch{x}", f"decode ms per token, TP{tp} batch {x}"
                    how = f"TP{tp}, batch {x}, prompt 512"
                else:
                    t = phases(tp, 1, int(x))[0]
                    rid, metric = f"{tp_key}/prompt{x}", f"prefill ms, TP{tp} prompt {x}"
                    how = f"TP{tp}, batch 1, prompt {x}"
                rows.append(row(f"{entry['id']}/{rid}", metric, ms, t, how))
        return rows
    for sweep, points in value.items():
        if not isinstance(points, dict):
            raise EntryError(f"value.{sweep} is not a mapping")
        for x, ms in points.items():
            n = int(x)
            if sweep.startswith("decode_ms_per_token_vs_batch"):
                t, how = phases(8, n, 512)[1], f"TP8, batch {n}, prompt 512"
            elif sweep.startswith("prefill_ms_whole_batch_vs_batch"):
                t, how = phases(8, n, 512)[0], f"TP8, batch {n}, prompt 512"
            elif sweep.startswith("prefill_ms_vs_prompt_len"):
                t, how = phases(8, 1, n)[0], f"TP8, batch 1, prompt {n}"
            elif sweep.startswith("decode_ms_per_token_vs_output_len"):
                rows.append(
                    Row(
                        f"{entry['id']}/{sweep}/{x}",
                        f"decode ms per token, output {n}",
                        number(ms),
                        None,
                        "ms",
                        "the profile's long-output rows look truncated (its notes: e2e_time "
                        "stops growing beyond ~1-2k output tokens); not compared",
                        NOT_REPRODUCIBLE,
                        runtime=runtime,
                    )
                )
                continue
            else:
                raise EntryError(f"unknown sweep {sweep!r}")
            metric = "prefill ms (whole batch)" if "prefill" in sweep else "decode ms per token"
            rows.append(row(f"{entry['id']}/{sweep}/{x}", metric, ms, t, how))
    return rows


# ------------------------------------------------------------------ TensorRT-LLM


_TRT_MODELS = {
    "gpt-j 6b": "gpt-j-6b",
    "llama 7b": "llama-2-7b",
    "llama 70b": "llama-2-70b",
    "falcon 180b": "falcon-180b",
}


def _trt_model(label: str) -> tuple[str, int]:
    """('LLaMA 70B TP4') -> (catalog model, tp)."""
    text = label.lower()
    tp = int(m.group(1)) if (m := re.search(r"tp(\d+)", text)) else 1
    for key, name in _TRT_MODELS.items():
        if key in text:
            return name, tp
    raise EntryError(f"no catalog model for {label!r}")


def _model_known(name: str) -> bool:
    try:
        catalog.load_model(name)
    except Exception:
        return False
    return True


def trt_first_token(entry: dict[str, Any], opts: Options) -> list[Row]:
    runtime = "tensorrt-llm"
    value = need(entry, "value")
    rows: list[Row] = []
    for label, series in value.items():
        model, tp = _trt_model(str(label))
        for prompt, ms in series.items():
            rid = f"{entry['id']}/{label}/{prompt}"
            metric = f"first-token ms, {label}, prompt {prompt}"
            if not _model_known(model):
                rows.append(
                    Row(
                        rid,
                        metric,
                        number(ms),
                        None,
                        "ms",
                        f"no {model} in the catalog",
                        NOT_REPRODUCIBLE,
                        runtime=runtime,
                    )
                )
                continue
            spec = _static(
                f"{entry['id']}-{model}-{prompt}",
                "dgx-h100",
                model,
                "fp8",
                tp,
                1,
                int(prompt),
                1,
                opts.runtime(runtime),
                {"policy": "static", "batch_size": 1, "max_wait": 0},
            )
            summary, _ = _run(spec)
            note = (
                f"{model} fp8 weights/KV, TP{tp} on dgx-h100; one request, {prompt} tokens, "
                f"1 output token; TTFT; runtime {runtime}"
            )
            ttft = summary.ttft_s.mean
            rows.append(
                Row(rid, metric, number(ms), ttft * 1e3, "ms", note, runtime=runtime)
                if ttft is not None
                else Row(
                    rid,
                    metric,
                    number(ms),
                    None,
                    "ms",
                    f"not finished ({', '.join(summary.reject_reasons)}); {note}",
                    NOT_REPRODUCIBLE,
                    runtime=runtime,
                )
            )
    return rows


def trt_static_throughput(entry: dict[str, Any], opts: Options) -> list[Row]:
    runtime = "tensorrt-llm"
    value = need(entry, "value")
    rows: list[Row] = []
    for group, series in value.items():
        base_model, base_tp = _trt_model(str(group))
        for label, measured in series.items():
            m = re.match(r"bs(\d+)(?:\s+TP(\d+))?\s+(\d+)/(\d+)", str(label))
            if not m:
                raise EntryError(f"cannot read row label {label!r}")
            batch, prompt, output = int(m.group(1)), int(m.group(3)), int(m.group(4))
            tp = int(m.group(2)) if m.group(2) else base_tp
            spec = _static(
                f"{entry['id']}-{label}",
                "dgx-h100",
                base_model,
                "fp8",
                tp,
                batch,
                prompt,
                output,
                opts.runtime(runtime),
                {"policy": "static", "batch_size": batch, "max_wait": 0},
            )
            summary, _ = _run(spec)
            rid = f"{entry['id']}/{group}/{label}".replace(" ", "_")
            metric = f"output tok/s/GPU, {group} {label}"
            note = (
                f"{base_model} fp8 weights/KV, TP{tp} on dgx-h100; a static batch of {batch} "
                f"requests, {prompt} in / {output} out; output tokens / makespan / {tp} GPUs; "
                f"runtime {runtime}"
            )
            if summary.finished < batch:
                reasons = ", ".join(summary.reject_reasons) or "unfinished"
                rows.append(
                    Row(
                        rid,
                        metric,
                        number(measured),
                        None,
                        "tokens/s/GPU",
                        f"{summary.finished}/{batch} finished ({reasons}); {note}",
                        NOT_REPRODUCIBLE,
                        runtime=runtime,
                    )
                )
                continue
            rows.append(
                Row(
                    rid,
                    metric,
                    number(measured),
                    summary.output_tokens_per_s / tp,
                    "tokens/s/GPU",
                    note,
                    runtime=runtime,
                )
            )
    return rows


# ------------------------------------------------------------------ vLLM


def vllm053_light_load(entry: dict[str, Any], opts: Options) -> list[Row]:
    runtime = "vllm-v0"
    value = need(entry, "value")
    spec = _static(
        entry["id"], "dgx-h100", "llama-3-8b", "bf16", 1, 1, 512, 256, opts.runtime(runtime)
    )
    summary, _ = _run(spec)
    tpot_ms = summary.tpot_s.mean * 1e3
    busy = summary.device_utilization * 100.0
    note = (
        "llama-3-8b bf16 on one H100; one request, 512 in / 256 out (the source does not "
        f"state lengths); runtime {runtime}, whose host time was read from this entry "
        "(in-sample for the host part; the device part is predicted)"
    )
    return [
        Row(
            f"{entry['id']}/light_load_time_per_token_ms",
            "light-load ms per token",
            number(need(entry, "value.light_load_time_per_token_ms")),
            tpot_ms,
            "ms",
            note,
            runtime=runtime,
        ),
        Row(
            f"{entry['id']}/gpu_execution_pct",
            "GPU busy share of the step",
            number(value["gpu_execution_pct"]),
            busy,
            "%",
            note,
            runtime=runtime,
        ),
    ]


ITL_CONTEXTS = (256, 1024, 4096, 16384, 32768, 65536, 125000)


def vllm0191_itl(entry: dict[str, Any], opts: Options) -> list[Row]:
    runtime = "vllm-v1"
    value = need(entry, "value")
    rows: list[Row] = []
    for kv_key, kv_dtype in (("BF16_KV", "bf16"), ("FP8_KV", "fp8")):
        fit = value.get(kv_key)
        if not isinstance(fit, dict):
            continue
        itl = []
        for ctx in ITL_CONTEXTS:
            spec = _static(
                f"{entry['id']}-{kv_key}-{ctx}",
                "dgx-h100",
                "llama-3.1-8b",
                "bf16",
                1,
                1,
                ctx,
                128,
                opts.runtime(runtime),
            )
            spec["precision"]["kv"] = kv_dtype
            spec["scheduler"] = {"policy": "sarathi", "chunk_size": 8192, "max_model_len": 131072}
            summary, _ = _run(spec)
            itl.append(summary.tpot_s.mean * 1e3)
        slope, intercept = np.polyfit(np.array(ITL_CONTEXTS, dtype=float), np.array(itl), 1)
        note = (
            f"llama-3.1-8b bf16 weights, {kv_dtype} KV on one H100; single requests at "
            f"contexts {ITL_CONTEXTS[0]}..{ITL_CONTEXTS[-1]}, 128 out; least-squares line "
            f"through the mean ITLs; runtime {runtime}"
        )
        rows += [
            Row(
                f"{entry['id']}/{kv_key}/itl_intercept_ms",
                f"ITL intercept ({kv_key})",
                number(fit["itl_intercept_ms"]),
                float(intercept),
                "ms",
                note,
                runtime=runtime,
            ),
            Row(
                f"{entry['id']}/{kv_key}/itl_slope_ms_per_token",
                f"ITL slope ({kv_key})",
                number(fit["itl_slope_ms_per_token"]),
                float(slope),
                "ms/token",
                note,
                runtime=runtime,
            ),
        ]
    return rows
