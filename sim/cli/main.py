"""`llmsim`: the command line. Parses arguments, calls the library, prints.

Bad input of any kind ends in one line on stderr naming the file, the key and what was
expected, and exit status 2; nothing here prints a traceback for a user's mistake.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sim.errors import LlmsimError

EXIT_BAD_INPUT = 2


def add_overrides(p: argparse.ArgumentParser, help: str) -> None:
    """The `--set KEY=VALUE` option every scenario-taking command shares."""
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help
    )


def add_progress(p: argparse.ArgumentParser) -> None:
    """The `--progress auto|on|off` option of the commands that draw a progress bar."""
    p.add_argument(
        "--progress",
        choices=["auto", "on", "off"],
        default="auto",
        help="progress bar on stderr (auto: only on a terminal)",
    )


def progress_flag(value: str) -> bool | None:
    """`--progress` as the library takes it: None (auto: only on a terminal), on, off."""
    return {"auto": None, "on": True, "off": False}[value]


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=_json_default, allow_nan=True))


# ------------------------------------------------------------------------ analyze


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
    rows: list[tuple[str, str]] = [
        ("model / device", f"{a['model']} on {a['device']} (tp={a['tp']}, pp={a['pp']})"),
        ("batch, prompt, output", f"{a['batch']}, {a['prompt']}, {a['output']}"),
        (
            "dtypes (w / act / kv)",
            f"{a['weight_dtype']} / {a['activation_dtype']} / {a['kv_dtype']}",
        ),
        (
            "parameters",
            f"{_fmt_count(a['params'])} ({_fmt_count(a['non_embedding_params'])} in layers)",
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
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _setup_analyze(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="closed-form memory, FLOPs and roofline arithmetic (no simulation)",
        description="Closed-form analysis of a model on a device: parameters, weight and KV "
        "bytes, the largest batch that fits, FLOPs per token by op, arithmetic intensity "
        "against the ridge point, and roofline floors on prefill and decode latency. "
        "Give --model and --hardware, or a scenario file.",
    )
    p.add_argument("scenario", nargs="?", help="a scenario YAML (instead of --model/--hardware)")
    p.add_argument("--model", help="model name, Hugging Face id, YAML or config.json path")
    p.add_argument("--hardware", help="device, node or cluster name")
    p.add_argument("--tp", type=int, default=None, help="tensor-parallel degree (default 1)")
    p.add_argument("--pp", type=int, default=None, help="pipeline stages (default 1)")
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
    p.set_defaults(func=_run_analyze)


def _run_analyze(ns: argparse.Namespace) -> int:
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
    if ns.scenario:
        from sim.plan.analyze import analyze_scenario

        result = analyze_scenario(ns.scenario, **kwargs)
    else:
        if not ns.model or not ns.hardware:
            raise LlmsimError("give a scenario file, or both --model and --hardware")
        result = analyze(ns.model, ns.hardware, **kwargs)
    data = result.to_dict()
    if ns.ops:
        from sim.plan.analyze import op_breakdown

        hardware = ns.hardware or data["device"]
        data["ops"] = op_breakdown(
            data["model"] if not ns.model else ns.model,
            hardware,
            tp=data["tp"],
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
    lines = [f"\none layer on one device, {tokens} token(s):", f"{'op':<16}{'time':>12}  source"]
    for name, row in ops.items():
        lines.append(f"{name:<16}{_fmt_s(row['seconds']):>12}  {row['source']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------ catalog


def _setup_catalog(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "catalog",
        help="list the devices, nodes, clusters, models, workloads and scenarios that ship",
    )
    p.add_argument(
        "kind", nargs="?", help="one of: device node cluster calibration model workload scenario"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_run_catalog)


def _run_catalog(ns: argparse.Namespace) -> int:
    from sim.spec import catalog

    kinds = list(catalog.KINDS)
    if ns.kind:
        kind = ns.kind.rstrip("s") if ns.kind.rstrip("s") in kinds else ns.kind
        if kind not in kinds:
            raise LlmsimError(f"unknown catalog kind {ns.kind!r}; valid: {', '.join(kinds)}")
        kinds = [kind]
    listing = {
        kind: [
            {
                "name": e.name,
                "aliases": list(e.aliases),
                "description": e.description,
                "path": str(e.path),
            }
            for e in catalog.entries(kind)
        ]
        for kind in kinds
    }
    if ns.json:
        print_json(listing)
        return 0
    for kind, items in listing.items():
        print(f"{kind}s ({len(items)}):")
        for item in items:
            alias = f"  [{', '.join(item['aliases'])}]" if item["aliases"] else ""
            desc = f"  {item['description']}" if item["description"] else ""
            print(f"  {item['name']}{alias}{desc}")
    return 0


# ------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmsim",
        description="A discrete-event simulator of LLM inference clusters.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _setup_analyze(sub)
    _setup_catalog(sub)
    for setup in _extra_commands():
        setup(sub)
    return parser


def _extra_commands() -> list[Callable[[argparse._SubParsersAction], None]]:
    """Commands defined in their own modules (run, compare, ...), imported lazily."""
    from importlib import import_module

    found = []
    for module in (
        "sim.cli.run",
        "sim.cli.validate",
        "sim.cli.calibrate",
        "sim.cli.compare",
        "sim.cli.capacity",
        "sim.cli.sweep",
        "sim.cli.offload",
    ):
        try:
            mod = import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        found.append(mod.setup)
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        code: int = ns.func(ns)
        return code
    except LlmsimError as exc:
        print(f"llmsim: error: {exc.line()}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("llmsim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `llmsim ... | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
