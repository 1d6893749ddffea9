"""`llmsim analyze`: the closed-form arithmetic of a model on a device, no simulation."""

from __future__ import annotations

import argparse
from typing import Any

from sim.cli.options import print_json
from sim.errors import LlmsimError
from sim.results.table import aligned


def _fmt_bytes(n: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:,.2f} {unit}"
    return f"{n:,.0f} B"


def _fmt_s(s: float) -> str:
    if s >= 1:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.1f} us"


def _fmt_count(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:,.2f}{unit}"
    return f"{n:,.0f}"


def _analysis_table(a: dict[str, Any]) -> str:
    split = f"tp={a['tp']}, pp={a['pp']}"
    if a["tp_layout"] != "1d-weight-stationary":
        split += f", {a['tp_layout']}"
    if a["attention"] != "heads":
        split += f", attention by {a['attention']}"
    rows: list[tuple[str, str]] = [
        ("model / device", f"{a['model']} on {a['device']} ({split})"),
        ("batch, prompt, output", f"{a['batch']}, {a['prompt']}, {a['output']}"),
        (
            "dtypes (w / act / kv)",
            f"{a['weight_dtype']} / {a['activation_dtype']} / {a['kv_dtype']}",
        ),
        (
            "parameters",
            f"{_fmt_count(a['params'])} ({_fmt_count(a['non_embedding_params'])} in layers"
            + (
                f"; {_fmt_count(a['active_params'])} active per token)"
                if a["active_params"] != a["params"]
                else ")"
            ),
        ),
        (
            "weights",
            f"{_fmt_bytes(a['weight_bytes'])} total, "
            f"{_fmt_bytes(a['weight_bytes_per_device'])} per device",
        ),
        (
            "KV cache per token",
            f"{_fmt_bytes(a['kv_bytes_per_token'])} "
            f"({_fmt_bytes(a['kv_bytes_per_token_per_device'])} per device)",
        ),
        (
            "KV cache at peak",
            f"{_fmt_bytes(a['kv_bytes_peak'])} "
            f"({_fmt_bytes(a['kv_bytes_peak_per_device'])} per device)",
        ),
        ("activation workspace", _fmt_bytes(a["activation_workspace_bytes"])),
        (
            "device memory",
            f"{_fmt_bytes(a['memory_bytes_per_device'])}; fits: "
            f"{'yes' if a['fits'] else 'NO'}; max batch {a['max_batch']}",
        ),
        (
            "FLOPs per token",
            f"{_fmt_count(a['flops_per_token'])} at context "
            f"{a['flops_per_token_context']} (LM head {_fmt_count(a['lm_head_flops_per_token'])})",
        ),
    ]
    for op, frac in a["flops_split"].items():
        rows.append((f"  {op}", f"{frac * 100:.1f}%"))
    rows += [
        ("ridge point", f"{a['ridge_flops_per_byte']:.1f} FLOP/byte"),
        (
            "prefill",
            f"{a['prefill_intensity_flops_per_byte']:.1f} FLOP/byte: "
            f"{a['prefill_bound']}-bound; floor {_fmt_s(a['prefill_latency_floor_s'])}",
        ),
        (
            "decode",
            f"{a['decode_intensity_flops_per_byte']:.1f} FLOP/byte: "
            f"{a['decode_bound']}-bound; floor {_fmt_s(a['decode_latency_floor_s'])}/token",
        ),
    ]
    return "\n".join(aligned(("", ""), rows, left=(0, 1))[1:])


def setup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="closed-form memory, FLOPs and roofline arithmetic (no simulation)",
        description="Closed-form analysis of a model on a device: parameters, weight and KV "
        "bytes, the largest batch that fits, FLOPs per token by op, arithmetic intensity "
        "against the ridge point, and roofline floors on prefill and decode latency. "
        "Give --model and --hardware, or a scenario file (which names its own model and "
        "cluster: giving both is an error); the other options override the scenario's.",
    )
    p.add_argument("scenario", nargs="?", help="a scenario YAML (instead of --model/--hardware)")
    p.add_argument("--model", help="model name, Hugging Face id, YAML or config.json path")
    p.add_argument(
        "--hardware",
        help="device, node or cluster name (a node or cluster bounds tp × pp by its devices)",
    )
    p.add_argument("--tp", type=int, default=None, help="tensor-parallel degree (default 1)")
    p.add_argument("--pp", type=int, default=None, help="pipeline stages (default 1)")
    p.add_argument(
        "--tp-layout",
        default=None,
        help="how a TP group splits each layer: 1d-weight-stationary (default), "
        "2d-weight-stationary or weight-gathered",
    )
    p.add_argument(
        "--attention",
        choices=["heads", "batch"],
        default=None,
        help="split attention over the TP group by heads (default) or by batch",
    )
    p.add_argument("--batch", type=int, default=None, help="sequences in the batch (default 1)")
    p.add_argument("--prompt", type=int, default=None, help="prompt tokens (default 512)")
    p.add_argument("--output", type=int, default=None, help="output tokens (default 128)")
    p.add_argument("--dtype", default=None, help="weight dtype: fp32 bf16 fp16 fp8 int8 int4")
    p.add_argument("--kv-dtype", default=None, help="KV-cache dtype (default: activations)")
    p.add_argument("--act-dtype", default=None, help="activation dtype (default bf16)")
    p.add_argument(
        "--ops",
        action="store_true",
        help="add the predicted seconds of each op of one layer on one device "
        "for --tokens tokens, with the source of each figure",
    )
    p.add_argument(
        "--tokens",
        type=int,
        default=None,
        help="tokens for --ops (prefill chunk, or decoding sequences); default 1",
    )
    p.add_argument(
        "--kv-len",
        type=int,
        default=None,
        help="cached tokens for --ops attention (default: 0 prefill, 1024 decode)",
    )
    p.add_argument(
        "--cost",
        choices=["auto", "roofline", "calibrated"],
        default="auto",
        help="--ops pricing: the device's calibration profile when it has one",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    # the library loads when the command runs (start-up time: see sim.cli.main)
    from sim.plan.analyze import analyze

    kwargs: dict[str, Any] = {}
    for name in ("tp", "pp", "batch", "prompt", "output"):
        if getattr(ns, name) is not None:
            kwargs[name] = getattr(ns, name)
    if ns.dtype:
        kwargs["dtype"] = ns.dtype
    if ns.kv_dtype:
        kwargs["kv_dtype"] = ns.kv_dtype
    if ns.act_dtype:
        kwargs["activation_dtype"] = ns.act_dtype
    if ns.tp_layout:
        kwargs["tp_layout"] = ns.tp_layout
    if ns.attention:
        kwargs["attention"] = ns.attention
    model: Any = ns.model
    hardware: Any = ns.hardware
    if ns.scenario:
        from sim.plan.analyze import analyze_scenario
        from sim.spec.scenario import read_scenario

        given = [f"--{k}" for k in ("model", "hardware") if getattr(ns, k)]
        if given:
            raise LlmsimError(
                f"give a scenario or {' and '.join(given)}, not both: the scenario names "
                "its own model and cluster"
            )
        result = analyze_scenario(ns.scenario, **kwargs)
        if ns.ops:  # the scenario's own model and cluster (either may be inline)
            scenario = read_scenario(ns.scenario)
            model, hardware = scenario.model, scenario.cluster
    else:
        if not ns.model or not ns.hardware:
            raise LlmsimError("give a scenario file, or both --model and --hardware")
        result = analyze(ns.model, ns.hardware, **kwargs)
    data = result.to_dict()
    if ns.ops:
        from sim.plan.analyze import op_breakdown

        data["ops"] = op_breakdown(
            model,
            hardware,
            tp=data["tp"],
            attention=data["attention"],
            tokens=ns.tokens or 1,
            kv_len=ns.kv_len,
            dtype=data["weight_dtype"],
            kv_dtype=data["kv_dtype"],
            activation_dtype=data["activation_dtype"],
            cost=ns.cost,
        )
    if ns.json:
        print_json(data)
    else:
        print(_analysis_table(data))
        if ns.ops:
            print(_ops_table(data["ops"], ns.tokens or 1))
    return 0


def _ops_table(ops: dict[str, dict[str, Any]], tokens: int) -> str:
    rows = [(name, _fmt_s(row["seconds"]), row["source"]) for name, row in ops.items()]
    table = aligned(("op", "time", "source"), rows, left=(0, 2), min_widths=(14, 10))
    lines = [f"\none layer on one device, {tokens} token(s):", *table]
    return "\n".join(lines)
