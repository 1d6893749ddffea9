"""The calibrate -> predict path on this machine's CPU: a real small decoder's prefill
and decode step, measured, against llmsim's prediction from a calibration of this CPU.

Prints the figures (never pass/fail); tests/test_cpu_end_to_end.py runs the same
procedure and asserts a looser band that holds on a busy machine.

The procedure, built so that background load slows both sides alike or not at all:

1. Rounds, interleaved: time the decoder, calibrate (`llmsim calibrate --device cpu
   --quick --threads 1`), time the decoder again, calibrate again, ... A burst of load
   then hits one round of each side, not one side wholly.
2. Minima, not medians. The decoder: the least CPU time of its thread over every sample
   of every round (the forward pass runs on one torch thread, so that is what it costs
   on its core, without the time other processes held the core; the least wall time is
   printed beside it). The calibration: for each measured point, the least p10 over the
   rounds; curves are refitted to those points (sim.calibrate.fit, as the CLI does) and
   the device's peaks re-derived from them. Most calibration samples are a batch of
   calls of about a millisecond, short enough to fall between other processes' time
   slices, so their low percentiles are the uncontended speed too.
3. Rounds continue (3 to 6) until one more round moves neither the prediction nor the
   measured minima by more than 2%.
4. llmsim simulates the same model, batch and lengths on the calibrated device, through
   the ordinary scenario -> engine path: TTFT against the measured prefill, TPOT against
   the measured decode step (at the mean decode context).

The strict figure is 25% (the check's original tolerance). What limits it on a busy
machine is the one asymmetry minima cannot remove: a calibration point is timed over
about a millisecond, a forward pass over 15-80 ms, and the shorter a sample the more
often it runs in a quiet moment (of the other cores, the memory bus, the host of a VM);
the prediction sums many such minima, the measurement is the minimum of whole passes.

    python bench/cpu_fidelity.py [--rounds 6]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import yaml

try:
    import torch
except ImportError:  # PyTorch is the calibrate extra
    if __name__ == "__main__":
        print("cpu_fidelity: PyTorch is not installed (the calibrate extra); skipped")
        sys.exit(0)
    raise

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sim.calibrate.environment import measured_device_spec  # noqa: E402
from sim.calibrate.harness import fit_profile, write_profile  # noqa: E402
from sim.calibrate.reference import ReferenceDecoder, build_decoder  # noqa: E402
from sim.cli.main import main as llmsim  # noqa: E402
from sim.plan import load_scenario  # noqa: E402
from sim.results.run import simulate  # noqa: E402
from sim.spec import catalog  # noqa: E402
from sim.spec.profile import Measurements, Profile, Timing  # noqa: E402

TOY = {
    "name": "toy-llama",
    "n_layers": 4,
    "d_model": 512,
    "n_heads": 8,
    "n_kv_heads": 4,
    "d_ff": 1408,
    "mlp": "gated",
    "activation": "silu",
    "norm": "rmsnorm",
    "vocab_size": 8192,
    "max_seq_len": 1024,
    "position": "rotary",
}
BATCH, PROMPT, OUTPUT = 2, 64, 33
CONTEXT = PROMPT + OUTPUT // 2  # the decode step at the mean context of the generation
PROFILE = "cpu-e2e"
STRICT = 0.25
MIN_ROUNDS, MAX_ROUNDS, SETTLED = 3, 6, 0.02
PREFILL_SAMPLES, DECODE_SAMPLES, WARMUP = 12, 32, 2

T = TypeVar("T", bound=Timing)


@dataclass
class Samples:
    """Per-call seconds of the decoder: thread CPU time and wall time."""

    cpu: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)


@dataclass
class Round:
    calibrate_s: float
    predicted: tuple[float, float]  # TTFT, TPOT from the fastest points so far
    prefill: Samples
    decode: Samples


@dataclass
class Result:
    device: str
    rounds: list[Round]
    first_prefill: Samples
    first_decode: Samples

    @property
    def predicted(self) -> tuple[float, float]:
        """TTFT and TPOT predicted from the fastest calibration points of all rounds."""
        return self.rounds[-1].predicted

    def _all(self, phase: str) -> list[Samples]:
        first = self.first_prefill if phase == "prefill" else self.first_decode
        return [first, *(getattr(r, phase) for r in self.rounds)]

    def measured(self, kind: str = "cpu") -> tuple[float, float]:
        """The least prefill and decode-step time over every sample of every round."""
        return (
            min(min(getattr(s, kind)) for s in self._all("prefill")),
            min(min(getattr(s, kind)) for s in self._all("decode")),
        )

    def median(self, kind: str = "wall") -> tuple[float, float]:
        """The median over every sample (what the check used to compare)."""
        pre = [x for s in self._all("prefill") for x in getattr(s, kind)]
        dec = [x for s in self._all("decode") for x in getattr(s, kind)]
        return float(np.median(pre)), float(np.median(dec))


# ------------------------------------------------------------------------ the decoder


def time_calls(fn: Callable[[], object], samples: int, out: Samples) -> None:
    """Time `samples` calls of `fn` (after warm-up), each by its thread's CPU time and
    by the wall clock."""
    for _ in range(WARMUP):
        fn()
    for _ in range(samples):
        c0, w0 = time.thread_time(), time.perf_counter()
        fn()
        out.wall.append(time.perf_counter() - w0)
        out.cpu.append(time.thread_time() - c0)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread, as calibrated (`--threads 1`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def time_decoder(decoder: ReferenceDecoder) -> tuple[Samples, Samples]:
    """Samples of one prefill (BATCH prompts of PROMPT tokens from an empty cache) and
    of one decode step (BATCH sequences, one token after CONTEXT cached ones)."""
    spec = decoder.spec
    prefill, decode = Samples(), Samples()
    with one_thread(), torch.inference_mode():
        cache = decoder.new_cache(BATCH, PROMPT)
        ids = torch.randint(0, spec.vocab_size, (BATCH, PROMPT))
        time_calls(lambda: decoder(ids, cache, 0), PREFILL_SAMPLES, prefill)
        cache = decoder.new_cache(BATCH, CONTEXT + 1)
        step = torch.randint(0, spec.vocab_size, (BATCH, 1))
        time_calls(lambda: decoder(step, cache, CONTEXT), DECODE_SAMPLES, decode)
    return prefill, decode


# ---------------------------------------------------------------------- calibration


def calibrate(model_path: Path, out: Path) -> Profile:
    """One `llmsim calibrate --device cpu --quick --threads 1` of the toy's shapes."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = llmsim(
            [
                "calibrate",
                *("--device", "cpu", "--quick", "--threads", "1"),
                *("--models", str(model_path), "--name", PROFILE, "--out", str(out)),
            ]
        )
    if code != 0:
        raise RuntimeError(f"llmsim calibrate failed (exit {code}):\n{err.getvalue()}")
    return Profile.model_validate(yaml.safe_load(out.read_text()))


def _fastest_points(points: Sequence[T]) -> tuple[T, ...]:
    """One point per measured shape: its least p10 over the rounds."""
    by_shape: dict[tuple, list[T]] = {}
    for p in points:
        shape = tuple(sorted(p.model_dump(exclude={"median_s", "p10_s", "p90_s"}).items()))
        by_shape.setdefault(shape, []).append(p)
    out = []
    for same in by_shape.values():
        best = min(p.p10_s or p.median_s for p in same)
        spread = max(best, min(p.p90_s or p.median_s for p in same))
        out.append(same[0].model_copy(update={"median_s": best, "p10_s": best, "p90_s": spread}))
    return tuple(out)


def fastest_profile(profiles: Sequence[Profile]) -> Profile:
    """A profile of the fastest measurement of every point over `profiles` (rounds of
    the same calibration), its device's peaks re-derived and its curves refitted."""
    first = profiles[0]
    ms = [p.measurements for p in profiles]
    measurements = Measurements(
        gemm=_fastest_points([x for m in ms for x in m.gemm]),
        attention=_fastest_points([x for m in ms for x in m.attention]),
        elementwise=_fastest_points([x for m in ms for x in m.elementwise]),
        copies=_fastest_points([x for m in ms for x in m.copies]),
        launch_s=min((m.launch_s for m in ms if m.launch_s), default=None),
    )
    assert first.device_spec is not None  # a CPU profile carries its measured device
    spec = measured_device_spec(
        first.device, "cpu", measurements, first.dtype, first.device_spec.memory_bytes
    )
    fit, quality, note = fit_profile(measurements, spec, first.dtype)
    if note:
        raise RuntimeError(note)
    return first.model_copy(
        update={
            "description": f"{first.description} Fastest p10 of each point over "
            f"{len(profiles)} rounds.",
            "device_spec": spec,
            "measurements": measurements,
            "fit": fit,
            "quality": quality,
        }
    )


# ----------------------------------------------------------------------- prediction


def predict(model_path: Path, device: str) -> tuple[float, float]:
    """Simulated TTFT and TPOT (p50) of the toy on `device`, priced by its profile."""
    scenario = load_scenario(
        {
            "name": "cpu-e2e",
            "cluster": {
                "name": "this-cpu",
                "nodes": 1,
                "node": {
                    "name": "this-cpu",
                    "device": device,
                    "devices_per_node": 1,
                    "fabric": {"kind": "none"},
                    "pcie": {"bandwidth": "10 GB/s"},
                    "host": {"dram": "16 GB"},
                },
            },
            "model": str(model_path),
            "precision": {"weights": "fp32", "activations": "fp32", "kv": "fp32"},
            "scheduler": {
                "policy": "static",
                "batch_size": BATCH,
                "padding": "packed",
                "max_wait": 0,
                "gpu_memory_utilization": 0.5,
            },
            "workload": {
                "requests": BATCH,
                "arrival": {"process": "burst"},
                "prompt": {"dist": "fixed", "value": PROMPT},
                "output": {"dist": "fixed", "value": OUTPUT},
            },
            "engine": {"cost": "calibrated"},
        }
    )
    summary = simulate(scenario).summary
    return summary.ttft_s.p50, summary.tpot_s.p50


@contextlib.contextmanager
def catalog_root(root: Path) -> Iterator[None]:
    """`root` on LLMSIM_CATALOG_PATH (its hardware/calibration/ holds the profile)."""
    before = os.environ.get("LLMSIM_CATALOG_PATH")
    os.environ["LLMSIM_CATALOG_PATH"] = str(root)
    catalog.clear_cache()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("LLMSIM_CATALOG_PATH", None)
        else:
            os.environ["LLMSIM_CATALOG_PATH"] = before
        catalog.clear_cache()


def _moved(new: Sequence[float], old: Sequence[float]) -> float:
    return max(abs(a / b - 1) for a, b in zip(new, old, strict=True))


def run(
    workdir: Path,
    *,
    min_rounds: int = MIN_ROUNDS,
    max_rounds: int = MAX_ROUNDS,
    say: Callable[[str], None] | None = None,
) -> Result:
    """Interleave calibration rounds and decoder timings (see the module docstring) in
    `workdir`; the combined profile is left in workdir/catalog/hardware/calibration/."""
    say = say or (lambda _line: None)
    model_path = workdir / "toy-llama.yaml"
    model_path.write_text(yaml.safe_dump(TOY))
    root = workdir / "catalog"
    combined = root / "hardware" / "calibration" / f"{PROFILE}.yaml"
    decoder = build_decoder(catalog.load_model(str(model_path)))
    first_prefill, first_decode = time_decoder(decoder)
    result = Result("", [], first_prefill, first_decode)
    profiles: list[Profile] = []
    for r in range(max_rounds):
        t0 = time.perf_counter()
        profiles.append(calibrate(model_path, workdir / "rounds" / f"r{r}.yaml"))
        calibrate_s = time.perf_counter() - t0
        profile = fastest_profile(profiles)
        write_profile(profile, combined)
        with catalog_root(root):
            predicted = predict(model_path, profile.device)
        before = (result.predicted, result.measured()) if result.rounds else None
        prefill, decode = time_decoder(decoder)
        result.rounds.append(Round(calibrate_s, predicted, prefill, decode))
        result.device = profile.device
        say(describe_round(r + 1, result))
        if before is not None and r + 1 >= min_rounds:
            moved = max(_moved(result.predicted, before[0]), _moved(result.measured(), before[1]))
            if moved <= SETTLED:
                break
    return result


# --------------------------------------------------------------------------- report


def ms(x: float) -> str:
    return f"{x * 1e3:.2f} ms"


def describe_round(n: int, result: Result) -> str:
    last = result.rounds[-1]
    ttft, tpot = last.predicted
    pre, dec = result.measured("cpu")
    return (
        f"round {n}: calibrate {last.calibrate_s:.1f} s; predicted TTFT {ms(ttft)} "
        f"TPOT {ms(tpot)}; measured min prefill {ms(pre)} decode {ms(dec)} (CPU time); "
        f"this round's min {ms(min(last.prefill.cpu))} / {ms(min(last.decode.cpu))}"
    )


def report(result: Result, strict: float = STRICT) -> list[str]:
    ttft, tpot = result.predicted
    lines = []
    for what, pred, idx in (("TTFT vs prefill", ttft, 0), ("TPOT vs decode step", tpot, 1)):
        cpu, wall = result.measured("cpu")[idx], result.measured("wall")[idx]
        med = result.median("wall")[idx]
        ok = abs(pred / cpu - 1) <= strict
        lines.append(
            f"{what}: predicted {ms(pred)}; measured min {ms(cpu)} CPU time, "
            f"{ms(wall)} wall; median {ms(med)} wall | predicted/min CPU "
            f"{pred / cpu:.3f}, /min wall {pred / wall:.3f}, /median wall {pred / med:.3f}; "
            f"within {strict:.0%}: {'yes' if ok else 'no'}"
        )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=MAX_ROUNDS, help="at most this many rounds")
    ap.add_argument("--min-rounds", type=int, default=MIN_ROUNDS)
    args, _ = ap.parse_known_args()  # bench/run_all.py passes every script its options
    print(
        f"toy decoder {TOY['n_layers']} layers, d_model {TOY['d_model']}; batch {BATCH}, "
        f"prompt {PROMPT}, decode context {CONTEXT}; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        flush=True,
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(
            Path(tmp),
            min_rounds=min(args.min_rounds, args.rounds),
            max_rounds=args.rounds,
            say=lambda line: print(line, flush=True),
        )
    for line in report(result):
        print(line)
    print(f"{len(result.rounds)} rounds in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
