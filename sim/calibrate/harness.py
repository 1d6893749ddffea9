"""`llmsim calibrate`: measure one device's op times with PyTorch and fit a profile to them.

What is measured, each as the median, p10 and p90 seconds of one kernel, one module per
family (their docstrings give the details):

- `gemm`: GEMMs at the per-device (n, k) of the chosen models' layers at the chosen TP
  degrees, times a grid of token counts m.
- `attention`: causal prefill and decode (one query per sequence against a KV cache)
  for the heads one device holds; flash_attn when it imports, else torch SDPA.
- `elementwise`: norm, MLP activation, rotary embedding, residual add and embedding
  gather at the layer plans' widths.
- `copies`: launch overhead and copies between pinned host memory and the device.
- `collectives`: with several GPUs and on request, NCCL collectives.
- `hf` (with --hf): the ops as Hugging Face transformers' eager modules call them
  (attention through its SDPA wrapper, the DynamicCache append, its norms, rotary and
  activations, GPT-2's Conv1D GEMMs), for the hf-eager runtimes.
- `runtime`: the host time of a small decoder's step (eager, and compiled unless
  --quick), the eager launch of one kernel and, on CUDA, a CUDA graph's replay.

`grids` checks the options and holds the grids of sizes, `timing` samples a kernel,
`environment` names the device and the software; this module runs the families in
turn, fits curves to the points (`sim.calibrate.fit`) and writes the profile.

Assumptions: eager PyTorch, no CUDA graphs and no torch.compile (but for the runtime
family's compiled step), so every kernel pays its launch; a sample is a batch of
back-to-back calls after warm-up; GEMM weights and decode KV caches are read from
memory, activations stay cached (see `timing`).
Measurements take minutes, so neither a failed fit nor failed collectives lose them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from sim.calibrate.attention import attention_backend_name, measure_attention
from sim.calibrate.collectives import measure_collectives
from sim.calibrate.copies import measure_copies, measure_launch
from sim.calibrate.elementwise import measure_elementwise
from sim.calibrate.environment import environment, profile_device
from sim.calibrate.fit import fit_measurements
from sim.calibrate.gemm import measure_gemms
from sim.calibrate.grids import Run
from sim.calibrate.runtime import measure_runtime
from sim.errors import LlmsimError
from sim.spec.hardware import DeviceSpec
from sim.spec.profile import CollectivePoint, Environment, Fit, Measurements, Profile


def fit_profile(
    measurements: Measurements, spec: DeviceSpec, dtype: str = "bf16"
) -> tuple[Fit, dict[str, dict[str, float]], str | None]:
    """The fitted curves and their errors, or an empty fit and the reason."""
    try:
        fit, quality = fit_measurements(measurements, spec, dtype)
    except Exception as exc:  # measurements took minutes: keep them even if the fit fails
        return Fit(), {}, f"the fit failed ({type(exc).__name__}: {exc}); no fit written"
    return fit, quality, None


@dataclass(frozen=True)
class Result:
    profile: Profile
    warnings: tuple[str, ...]
    wall_s: float


def _family(name: str, say: Callable[[str], None], work: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    say(f"{name}: measuring")
    out = work()
    if isinstance(out, tuple):
        count = sum(len(part) for part in out)
    else:
        count = len(out) if isinstance(out, list) else 1
    say(f"{name}: {count} point(s) in {time.perf_counter() - t0:.1f} s")
    return out


def calibrate(run: Run, progress: Callable[[str], None] | None = None) -> Result:
    """Measure every op family of `run`, fit curves, and return the profile."""
    threads = torch.get_num_threads()
    if run.options.threads:
        torch.set_num_threads(run.options.threads)
    try:
        return _calibrate(run, progress or (lambda _line: None))
    finally:
        torch.set_num_threads(threads)


def _calibrate(run: Run, say: Callable[[str], None]) -> Result:
    t0 = time.perf_counter()
    if run.is_cuda:
        torch.cuda.set_device(run.device)
    torch.manual_seed(0)
    skipped: list[str] = []
    warnings: list[str] = []
    with torch.inference_mode():
        gemm = _family("gemm", say, lambda: measure_gemms(run, skipped))
        attention = _family("attention", say, lambda: measure_attention(run, skipped))
        elementwise = _family("elementwise", say, lambda: measure_elementwise(run, skipped))
        launch_s = _family("launch", say, lambda: measure_launch(run))
        copies = _family("copy", say, lambda: measure_copies(run, skipped))
        if run.options.hf:
            from sim.calibrate.hf import measure_hf  # imports transformers, an optional extra

            hf_gemm, hf_attention, hf_elementwise = _family(
                "hf", say, lambda: measure_hf(run, skipped)
            )
            gemm, attention = gemm + hf_gemm, attention + hf_attention
            elementwise = elementwise + hf_elementwise
        compiled = run.options.compile and not run.options.quick
        runtime = _family("runtime", say, lambda: measure_runtime(run, launch_s, compiled))
        if run.options.hf:
            from sim.calibrate.hf import measure_hf_host  # imports transformers

            runtime = runtime.model_copy(update={"hf": measure_hf_host(run)})
    collectives: list[CollectivePoint] = []
    if run.options.collectives:
        g = run.grid
        world = torch.cuda.device_count()
        counts = range(2, world + 1) if not run.options.quick else sorted({2, world})
        try:
            collectives = _family(
                "collectives",
                say,
                lambda: measure_collectives(
                    world=world,
                    sizes=g.collective_bytes,
                    counts=counts,
                    dtype_name=run.dtype_name,
                    warmup=g.warmup,
                    repeats=g.repeats,
                ),
            )
        except Exception as exc:  # NCCL set-up is the most fragile part: keep the rest
            warnings.append(f"collectives failed ({type(exc).__name__}: {exc}); none recorded")
    if skipped:
        warnings.append(
            f"{len(skipped)} point(s) did not fit in memory and were skipped (first: {skipped[0]})"
        )
    measurements = Measurements(
        gemm=tuple(gemm),
        attention=tuple(attention),
        elementwise=tuple(elementwise),
        copies=tuple(copies),
        collectives=tuple(collectives),
        launch_s=launch_s,
    )
    spec, in_catalog = profile_device(run, measurements)
    say("fit: fitting curves")
    fit, quality, note = fit_profile(measurements, spec, run.dtype_name)
    if note:
        warnings.append(note)
    env = environment(run)
    profile = Profile(
        name=run.options.name or _default_name(run, spec, in_catalog),
        device=spec.name,
        description=_description(run, env),
        source=f"measured by `{run.options.command or 'llmsim calibrate'}` on {env.host}, "
        f"{env.date}",
        dtype=run.dtype_name,
        device_spec=None if in_catalog else spec,
        environment=env,
        measurements=measurements,
        fit=fit,
        quality=quality,
        runtime=runtime,
    )
    return Result(profile, tuple(warnings), time.perf_counter() - t0)


def _default_name(run: Run, spec: DeviceSpec, in_catalog: bool) -> str:
    """`cpu-calibrated-fp32`; a catalog device's gets `-measured`, to tell it from the
    profiles derived from public data that ship under the device's own name."""
    return f"{spec.name}-{run.dtype_name}{'-measured' if in_catalog else ''}"


def _description(run: Run, env: Environment) -> str:
    models = ", ".join(f"{m.name} (tp {','.join(map(str, run.tps[m.name]))})" for m in run.models)
    threads = "" if run.is_cuda else f", {torch.get_num_threads()} torch threads"
    return (
        f"{env.device_name}, {run.dtype_name}, eager PyTorch {env.torch} (no CUDA graphs)"
        f"{threads}. Shapes from {models}. Attention: {attention_backend_name(run)}. "
        "GEMM weights and decode KV caches read from memory (copies cycled past the "
        f"{'L2' if run.is_cuda else 'L3'} cache). "
        f"{'' if run.is_cuda else 'Copies: memcpy between host tensors, recorded as h2d. '}"
        f"{'Quick grid. ' if run.options.quick else ''}"
        f"{_hf_note(run)}"
        "Median and p10/p90 over repeats of back-to-back calls after warm-up."
    )


def _hf_note(run: Run) -> str:
    if not run.options.hf:
        return ""
    return (
        "Points with form hf (conv1d): as Hugging Face transformers' eager modules call "
        "the op (sim/calibrate/hf.py). "
    )


def check_writable(path: Path, what: str = "profile") -> None:
    """Fail now, not after minutes of measuring, if the file cannot be written."""
    if path.is_dir():
        raise LlmsimError(f"is a directory; give a file path for the {what}", file=str(path))
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a"):
            pass
    except OSError as exc:
        raise LlmsimError(
            f"cannot write the {what}: {exc.strerror or exc}", file=str(path)
        ) from None
    if not existed:
        path.unlink()


def write_profile(profile: Profile, path: Path) -> None:
    write_yaml(profile.model_dump(mode="json", exclude_none=True), path, "profile")


def write_yaml(data: dict[str, Any], path: Path, what: str, header: str = "") -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(header + yaml.safe_dump(data, sort_keys=False))
    except OSError as exc:
        raise LlmsimError(
            f"cannot write the {what}: {exc.strerror or exc}", file=str(path)
        ) from None
