"""The software's share of a step on this machine, and a runtime file made from it.

- Host step: one decode step (batch 1, one token after 16 cached) of the reference
  decoder (sim.calibrate.reference) at a size where its kernels do next to no work
  (`PROBE`: d_model 64, 4 heads over 2 K/V heads, d_ff 128, vocabulary 256): what is
  left is host work, the Python of the modules and the dispatch and launch of each
  kernel. Timed eager with 1 and 3 layers (the difference is each layer's share, the
  rest is the step's own), and compiled with torch.compile at 2 layers when that works
  here (Inductor needs a C++ compiler on a CPU): a failure is a note, not an error.
- Kernels per layer: the aten calls of one eager layer that are not views, counted
  with a TorchDispatchMode.
- Kernel launch: a one-element in-place add issued back to back (the launch family).
- Graph launch (CUDA): a CUDAGraph of one tiny kernel replayed back to back, and one of
  GRAPH_KERNELS: the first is what launching a graph costs, the slope what each kernel
  inside it adds. A CPU has no CUDA graphs.

`runtime_file` turns these into a runtime (the schema of sim/spec/runtime.py):
host.fixed the step's own host time, kernel_launch the eager launch, the graph launch
measured, every number's source the measurement.

Assumptions: the probe decoder's Python is representative of a decoder's (a framework
with more module layers, Hugging Face transformers, spends more); times are the p10 of
batches of back-to-back steps (see `_time`), so a step's host work does not overlap a
previous one's kernels (on a CPU nothing does).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from sim.calibrate.grids import Run
from sim.calibrate.reference import build_decoder
from sim.calibrate.timing import Stats, measure
from sim.cost.hf_eager import is_hf_eager
from sim.spec.model import ModelSpec
from sim.spec.profile import FormTimes, Profile, RuntimeMeasurements
from sim.spec.runtime import RuntimeSpec

PROBE = ModelSpec(
    name="host-probe",
    n_layers=2,
    d_model=64,
    n_heads=4,
    n_kv_heads=2,
    d_ff=128,
    mlp="gated",
    activation="silu",
    norm="rmsnorm",
    vocab_size=256,
    max_seq_len=64,
    position="rotary",
)
PROBE_CONTEXT = 16
STEP_CALLS = 20  # steps per sample
GRAPH_KERNELS = 32


def probe_description(run: Run) -> str:
    p = PROBE
    return (
        f"reference decoder, d_model {p.d_model}, {p.n_heads} heads ({p.n_kv_heads} K/V), "
        f"d_ff {p.d_ff}, vocab {p.vocab_size}, {run.dtype_name}; decode step of batch 1 "
        f"after {PROBE_CONTEXT} cached tokens; {p.n_layers} layers (per layer: 1 vs 3)"
    )


def _step(run: Run, layers: int) -> tuple[torch.nn.Module, Callable[[], object]]:
    spec = PROBE.model_copy(update={"n_layers": layers})
    device = "cuda" if run.is_cuda else "cpu"
    decoder = build_decoder(spec, run.dtype_name, device)
    decoder.to(run.device)
    cache = decoder.new_cache(1, PROBE_CONTEXT + 1)
    ids = torch.zeros((1, 1), dtype=torch.long, device=run.device)
    return decoder, lambda: decoder(ids, cache, PROBE_CONTEXT)


def _time(run: Run, fn: Callable[[], object]) -> float:
    """The p10 of the samples: host work is what a step costs when nothing else holds
    the core, and a busy machine shows in the upper percentiles of a step this short."""
    g = run.grid
    _, p10, _ = measure(fn, run.device, warmup=3, repeats=max(g.repeats, 10), calls=STEP_CALLS)
    return p10


class _KernelCount(TorchDispatchMode):
    """Counts the aten calls that are not views (views launch nothing)."""

    def __init__(self) -> None:
        super().__init__()
        self.kernels = 0

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        if not getattr(func, "is_view", False):
            self.kernels += 1
        return func(*args, **(kwargs or {}))


def count_kernels(fn: Callable[[], object]) -> int:
    with _KernelCount() as mode:
        fn()
    return mode.kernels


def measure_host(run: Run, compiled: bool) -> tuple[FormTimes, FormTimes, int, list[str]]:
    """Host time of a probe decoder's decode step (eager, and compiled when asked and it
    works), each layer's share (eager), and its kernels per layer."""
    notes: list[str] = []
    _, one = _step(run, 1)
    _, three = _step(run, 3)
    t1, t3 = _time(run, one), _time(run, three)
    layer = max((t3 - t1) / 2, 1e-9)
    per_layer = max((count_kernels(three) - count_kernels(one)) // 2, 0)
    eager_step = t1 + layer  # two layers, as compiled
    compiled_step = None
    if compiled:
        compiled_step, note = measure_compiled(run)
        if note:
            notes.append(note)
    else:
        why = "--quick" if run.options.quick else "--no-compile"
        notes.append(f"compiled: not measured ({why})")
    return (
        FormTimes(eager=eager_step, compiled=compiled_step),
        FormTimes(eager=layer),
        per_layer,
        notes,
    )


def measure_compiled(
    run: Run, compile_fn: Callable[..., Any] | None = None
) -> tuple[float | None, str]:
    """The probe's step under torch.compile, or None and why not."""
    decoder, eager = _step(run, PROBE.n_layers)
    del eager
    compile_fn = compile_fn or torch.compile
    try:
        with _quiet():
            fast = compile_fn(decoder)
            cache = decoder.new_cache(1, PROBE_CONTEXT + 1)  # type: ignore[operator]
            ids = torch.zeros((1, 1), dtype=torch.long, device=run.device)

            def step() -> object:
                return fast(ids, cache, PROBE_CONTEXT)

            step()  # compiles
            return _time(run, step), ""
    except Exception as exc:  # no compiler, an unsupported op: say so, keep the rest
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"compiled: torch.compile failed here ({type(exc).__name__}: {first[:200]})"
    finally:
        reset = getattr(getattr(torch, "_dynamo", None), "reset", None)
        if callable(reset):
            reset()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Inductor prints compiler chatter on a first compile; the command's stderr is for
    its progress lines."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        yield


def measure_graph_launch(
    run: Run,
    cuda: ModuleType | Any = None,
    timer: Callable[..., Stats] = measure,
) -> tuple[float, float]:
    """(seconds to replay a captured graph of one tiny kernel, seconds each further
    kernel inside a graph adds), on CUDA. `cuda` and `timer` are torch.cuda and
    sim.calibrate.timing.measure unless a test hands in stand-ins."""
    cuda = cuda or torch.cuda
    a = torch.zeros(1, device=run.device)

    def capture(kernels: int) -> Any:
        side = cuda.Stream()
        side.wait_stream(cuda.current_stream())
        with cuda.stream(side):  # warm-up outside the graph, as capture requires
            for _ in range(3):
                a.add_(1.0)
        cuda.current_stream().wait_stream(side)
        graph = cuda.CUDAGraph()
        with cuda.graph(graph):
            for _ in range(kernels):
                a.add_(1.0)
        return graph

    g = run.grid
    one, many = capture(1), capture(GRAPH_KERNELS)
    t1 = timer(one.replay, run.device, warmup=g.warmup, repeats=g.repeats, calls=100)[0]
    tn = timer(many.replay, run.device, warmup=g.warmup, repeats=g.repeats, calls=100)[0]
    return t1, max((tn - t1) / (GRAPH_KERNELS - 1), 1e-12)


def measure_runtime(run: Run, launch_s: float, compiled: bool) -> RuntimeMeasurements:
    """Every runtime figure of this device (see the module docstring)."""
    step, layer, kernels, notes = measure_host(run, compiled)
    graph_launch = graph_kernel = None
    if run.is_cuda:
        try:
            graph_launch, graph_kernel = measure_graph_launch(run)
        except Exception as exc:  # capture is fragile across drivers: keep the rest
            notes.append(f"graphs: CUDA graph capture failed ({type(exc).__name__}: {exc})")
    else:
        notes.append("graphs: a CPU has no CUDA graphs; kernel_launch is the eager dispatch")
    return RuntimeMeasurements(
        decoder=probe_description(run),
        host_step_s=step,
        host_layer_s=layer,
        kernels_per_layer=kernels,
        kernel_launch_s=launch_s,
        graph_launch_s=graph_launch,
        graph_kernel_s=graph_kernel,
        notes=tuple(notes),
    )


# ----------------------------------------------------------------------- the file


def runtime_file(profile: Profile, name: str, base: RuntimeSpec) -> dict[str, Any]:
    """A runtime (runtimes/*.yaml) of `base`'s behaviour with this profile's measured
    host time per step, eager kernel launch and graph launch, each sourced."""
    rt = profile.runtime
    if rt is None or rt.host_step_s.eager is None or rt.kernel_launch_s is None:
        raise ValueError("the profile has no runtime measurements")
    layers = PROBE.n_layers
    layer = rt.host_layer_s.eager or 0.0
    fixed = max(rt.host_step_s.eager - layers * layer, 0.0)
    where = f"{profile.environment.device_name or profile.device}, {profile.source}"
    host_source = (
        f"fixed: a probe decoder's decode step less its layers ({rt.decoder}): "
        f"{rt.host_step_s.eager * 1e6:.1f} us - {layers} x {layer * 1e6:.1f} us; {where}"
    )
    if is_hf_eager(base) and rt.hf:  # transformers' own step, measured with --hf
        fixed = sum(p.step_s for p in rt.hf.values()) / len(rt.hf)
        host_source = (
            f"fixed: the decode step of a small transformers model less its layers "
            f"({', '.join(f'{k} {p.step_s * 1e6:.1f} us' for k, p in sorted(rt.hf.items()))}"
            f"{', the mean' if len(rt.hf) > 1 else ''}; per layer: sim.cost.hf_eager); {where}"
        )
    data = base.model_dump(by_alias=True, exclude_defaults=True)
    data.pop("aliases", None)
    data.pop("fitted", None)
    host = dict(data.get("host", {}))
    host["fixed"] = fixed
    data.update(
        {
            "name": name,
            "description": f"{base.description or base.name}, with host and launch times "
            f"measured on {profile.environment.device_name or profile.device}".strip(),
            "host": host,
            "kernel_launch": rt.kernel_launch_s,
        }
    )
    sources = dict(base.sources)
    sources["host"] = host_source
    sources["kernel_launch"] = f"a one-element add_ issued back to back; {where}"
    if rt.graph_launch_s is not None:
        graphs = dict(data.get("graphs", {}))
        graphs["launch"] = rt.graph_launch_s
        data["graphs"] = graphs
        sources["graphs.launch"] = f"replay of a captured CUDA graph of one tiny kernel; {where}"
    data["sources"] = sources
    RuntimeSpec.model_validate(data)  # what it writes loads as a runtime
    return data
