"""`llmsim calibrate`: measure this machine's op times with PyTorch; write a profile.

The measuring lives in sim.calibrate.harness (options and grids in sim.calibrate.grids);
this module parses the options, checks them (and that --out can be written) before
minutes of measuring, prints one progress line per op family on stderr and writes the
profile YAML. PyTorch is the `calibrate` extra and is imported only here, when the
command runs.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sim.errors import LlmsimError

if TYPE_CHECKING:
    from sim.spec.profile import Profile
    from sim.spec.runtime import RuntimeSpec

HELP = """\
Runs microbenchmarks with PyTorch on one device and writes a calibration profile (YAML,
schema sim/spec/profile.py): GEMMs over the per-device (n, k) of the models' layers
at each TP degree times a grid of token counts; attention prefill (causal) and decode
(flash_attn when installed, else torch SDPA) over batch x KV-length grids; element-wise
ops (norm, activation, rotary, residual add, embedding); launch overhead; pinned
host<->device copies; with --collectives on a machine with several GPUs, NCCL
collectives (all-reduce, all-gather, reduce-scatter, all-to-all, send/recv) among 2..N
GPUs. Each point keeps the median and p10/p90 over repeats (CUDA events on GPU,
perf_counter on CPU), after warm-up; eager PyTorch, no CUDA graphs. Curves are then
fitted to the points (sim.calibrate.fit).

The runtime, always measured: the host time of one decode step of a small decoder
(sim.calibrate.runtime: d_model 64, where its kernels do next to nothing) eager with 1
and 3 layers (each layer's share, and the step's own), and with torch.compile unless
--quick or --no-compile (a compiler that fails here, e.g. no C++ compiler for Inductor
on a CPU, is a note, not an error); the aten kernels per layer; the eager dispatch of
one tiny kernel; on CUDA the replay of a captured CUDA graph of 1 and of 32 tiny kernels
(graph launch, and each kernel inside a graph). All go in the profile's `runtime:`
section. --runtime-out FILE also writes them as a runtime (runtimes/*.yaml: host.fixed,
kernel_launch, graphs.launch) that behaves as --runtime-base (default bare), every
number's source the measurement; a scenario names it with `runtime: PATH` or, dropped
on LLMSIM_CATALOG_PATH/runtimes/, by name.

--hf also times each op the way Hugging Face transformers' eager modules call it (its
SDPA wrapper, with enable_gqa for grouped heads; the DynamicCache torch.cat append;
LlamaRMSNorm, apply_rotary_pos_emb, gelu_new as its eight kernels; GPT-2's Conv1D
GEMMs), per model shape, stored with `form: hf` (attention fitted per shape), and the
decode step of a small transformers GPT-2 and Llama (the host time outside and per
layer). The hf-eager runtimes price with them (sim.cost.hf_eager); with --runtime-base
hf-eager, host.fixed is transformers' own step. Needs transformers (in the extra).

The profile's `device:` is --catalog-device when given; on CUDA otherwise the catalog
device whose name or alias is the GPU's name (e.g. "NVIDIA H100 80GB HBM3" is h100-sxm);
otherwise a device named after the GPU, or `cpu-calibrated` on a CPU, whose peak FLOP/s
and bandwidth are the best the run measured (the fit is relative to those). Only the
profile (and with --runtime-out the runtime) is written; no device file.

--quick takes well under a minute on a 2-core CPU; a full GPU run takes a few minutes.
Needs the calibrate extra: pip install 'llmsim[calibrate]'."""


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _tps(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in _csv(text))
    except ValueError:
        raise LlmsimError(
            f"expected comma-separated integers like 1,2,4,8, got {text!r}", key="--tp"
        ) from None


def setup(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="measure op times on a GPU or CPU with PyTorch; write a calibration profile",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", required=True, help="cpu, cuda or cuda:N")
    p.add_argument("--out", required=True, help="the profile YAML to write")
    p.add_argument("--quick", action="store_true", help="small grids and few repeats")
    p.add_argument(
        "--dtype",
        default=None,
        metavar="{bf16,fp16,fp32}",
        help="operand dtype (default bf16 on CUDA, fp32 on CPU)",
    )
    p.add_argument(
        "--models",
        default=None,
        help="catalog models whose shapes to measure, comma-separated "
        "(default: six 7B-70B models on CUDA, gpt3-125m on CPU)",
    )
    p.add_argument(
        "--tp",
        default=None,
        help="TP degrees, comma-separated; each must divide every model "
        "(default 1,2,4,8 on CUDA where they divide, 1 on CPU)",
    )
    p.add_argument(
        "--collectives",
        action="store_true",
        help="also time NCCL collectives among this machine's GPUs (needs 2 or more)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice, one per core); on a busy "
        "CPU fewer threads give steadier numbers",
    )
    p.add_argument(
        "--hf",
        action="store_true",
        help="also time ops as Hugging Face transformers' eager modules call them "
        "(for the hf-eager runtimes; needs transformers)",
    )
    p.add_argument(
        "--no-compile",
        action="store_true",
        help="do not time the torch.compile'd decoder step (--quick never does)",
    )
    p.add_argument(
        "--runtime-out",
        default=None,
        metavar="FILE",
        help="also write the measured host and launch times as a runtime YAML",
    )
    p.add_argument(
        "--runtime-base",
        default="bare",
        metavar="NAME",
        help="the catalog runtime whose behaviour --runtime-out keeps (default bare; "
        "e.g. hf-eager)",
    )
    p.add_argument(
        "--name",
        default=None,
        help="profile name (default DEVICE-DTYPE; -measured appended for a catalog device)",
    )
    p.add_argument(
        "--catalog-device",
        default=None,
        metavar="NAME",
        help="the catalog device this profile calibrates (see `llmsim catalog device`)",
    )
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    # the library loads when the command runs (start-up time: see sim.cli.main)
    from sim.calibrate import require_torch

    out = Path(ns.out).expanduser()
    tps = _tps(ns.tp) if ns.tp else ()
    models = _csv(ns.models) if ns.models else ()
    if ns.models is not None and not models:
        raise LlmsimError("give at least one model name", key="--models")
    runtime_out = Path(ns.runtime_out).expanduser() if ns.runtime_out else None
    base = _runtime_base(ns.runtime_base) if runtime_out else None
    require_torch()
    from sim.calibrate import grids, harness

    options = grids.Options(
        device=ns.device,
        dtype=ns.dtype,
        models=models,
        tps=tps,
        quick=ns.quick,
        collectives=ns.collectives,
        name=ns.name,
        catalog_device=ns.catalog_device,
        threads=ns.threads,
        hf=ns.hf,
        compile=not ns.no_compile,
        command=_command(ns),
    )
    plan = grids.resolve(options)
    if ns.hf:
        from sim.calibrate.hf import require_transformers

        require_transformers()
    harness.check_writable(out)
    if runtime_out is not None:
        harness.check_writable(runtime_out, "runtime")
    result = harness.calibrate(plan, progress=_progress)
    harness.write_profile(result.profile, out)
    if runtime_out is not None and base is not None:
        from sim.calibrate.runtime import runtime_file

        data = runtime_file(result.profile, _runtime_name(runtime_out), base)
        harness.write_yaml(data, runtime_out, "runtime", _runtime_header(result.profile))
    for warning in result.warnings:
        print(f"llmsim: warning: {warning}", file=sys.stderr)
    m = result.profile.measurements
    counts = ", ".join(
        f"{len(points)} {family}"
        for family, points in (
            ("gemm", m.gemm),
            ("attention", m.attention),
            ("elementwise", m.elementwise),
            ("copies", m.copies),
            ("collective", m.collectives),
        )
        if points
    )
    fitted = [k for k, v in result.profile.fit.model_dump(exclude_none=True).items() if v]
    print(
        f"wrote {out}: device {result.profile.device}, {counts} points; "
        f"fit: {', '.join(fitted) or 'none'} ({result.wall_s:.1f} s)"
    )
    if runtime_out is not None:
        print(f"wrote {runtime_out}: runtime {_runtime_name(runtime_out)}")
    return 0


def _runtime_base(name: str) -> RuntimeSpec:
    from sim.spec.catalog import load_runtime  # start-up time: see sim.cli.main

    try:
        return load_runtime(name)
    except LlmsimError as exc:
        raise LlmsimError(exc.line(), key="--runtime-base") from None


def _runtime_name(path: Path) -> str:
    return path.stem.removesuffix(".yaml")


def _runtime_header(profile: Profile) -> str:
    return (
        f"# Host and launch times {profile.source}; the profile's\n"
        "# runtime: section holds every figure and how it was measured.\n"
    )


def _progress(line: str) -> None:
    print(f"calibrate: {line}", file=sys.stderr, flush=True)


def _command(ns: argparse.Namespace) -> str:
    """The command line as it reproduces this run (for the profile's `source`)."""
    parts = ["llmsim", "calibrate", "--device", ns.device]
    for flag, value in (
        ("--dtype", ns.dtype),
        ("--models", ns.models),
        ("--tp", ns.tp),
        ("--name", ns.name),
        ("--catalog-device", ns.catalog_device),
        ("--threads", ns.threads),
    ):
        if value:
            parts += [flag, str(value)]
    if ns.quick:
        parts.append("--quick")
    if ns.collectives:
        parts.append("--collectives")
    if ns.hf:
        parts.append("--hf")
    if ns.no_compile:
        parts.append("--no-compile")
    return shlex.join(parts)
