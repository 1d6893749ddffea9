"""Hugging Face transformers on this CPU, measured, against llmsim's prediction with the
hf-eager runtimes from a calibration of this CPU.

Models: GPT-2 small (transformers' GPT2Config defaults) and a small grouped-query Llama
(4 layers, d_model 512, 8 heads over 2 K/V heads, d_ff 1408, vocabulary 32000), built
from their configs with random weights, sdpa attention, one torch thread. llmsim reads
the same config.json files (sim.spec.hf_config).

Cases, in fp32 and bf16:
- prefill of batch 1 / 4 x prompt 32 / 128 / 512: with a cache, `model(ids,
  use_cache=True, logits_to_keep=1)` (what generate() runs: a DynamicCache is filled,
  the last position's logits computed); without, `model(ids, use_cache=False)` (logits
  of every position, as the runtime hf-eager-no-cache prices it);
- decode of batch 1 / 4 / 16 x context 128 / 512: with a cache, one token against a
  DynamicCache of `context` tokens (appended with torch.cat, the appended token dropped
  again between samples, the cache kept contiguous as decoding leaves it); without,
  the whole sequence of context + 1 tokens recomputed with logits for every position.

Prediction: the prices the engine charges a step (sim.cost.stage.StageCost of the whole
model on the calibrated CPU, with the runtime's host time per step), from a profile of
`llmsim calibrate --device cpu --dtype D --threads 1 --hf --no-compile --models
<both config.json>` and the runtime that calibration writes (`--runtime-out`, behaving
as hf-eager or hf-eager-no-cache, its host time and kernel launch measured). The CPU
grid measures GEMMs up to 1024 tokens and attention up to 1024 prefill tokens: steps of
more tokens (prefill b=4 x 512, recompute without a cache) are extrapolated.

Procedure, as bench/cpu_fidelity.py's: rounds interleave calibration, prediction and
the transformers timings, so that background load hits both sides alike; minima on both
sides (the calibration: each point's least p10 over the rounds, refitted; the
measurement: the least thread CPU time of each case over every sample of every round).
A case whose prediction exceeds --max-case-s (default 4 s; bf16 GPT-2 takes a slow
path on CPUs without bf16 units) is predicted but not measured.

Prints a table and the median |error| of each (dtype, cache) group; never pass/fail.

    python bench/hf_cpu.py [--rounds 2] [--dtypes fp32,bf16] [--quick] [--max-case-s 4]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

try:
    import torch
    import transformers
except ImportError:  # PyTorch and transformers are the calibrate extra
    if __name__ == "__main__":
        print("hf_cpu: PyTorch or transformers is not installed (the calibrate extra); skipped")
        sys.exit(0)
    raise

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu_fidelity import fastest_profile, one_thread  # noqa: E402
from sim.arith.ops import Work, layer_plan  # noqa: E402
from sim.arith.precision import Precision  # noqa: E402
from sim.cli.main import main as llmsim  # noqa: E402
from sim.cost.calibrated import CalibratedKernel  # noqa: E402
from sim.cost.hf_eager import runtime_kernel  # noqa: E402
from sim.cost.stage import StageCost  # noqa: E402
from sim.spec import catalog  # noqa: E402
from sim.spec.model import ModelSpec  # noqa: E402
from sim.spec.profile import Profile  # noqa: E402
from sim.spec.runtime import RuntimeSpec  # noqa: E402

CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2": ("GPT2Config", {}),
    "llama-gqa": (
        "LlamaConfig",
        {
            "hidden_size": 512,
            "intermediate_size": 1408,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,
            "num_key_value_heads": 2,
            "vocab_size": 32000,
            "max_position_embeddings": 2048,
        },
    ),
}
PREFILL = [(b, s) for b in (1, 4) for s in (32, 128, 512)]
DECODE = [(b, c) for b in (1, 4, 16) for c in (128, 512)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SAMPLES, WARMUP = 3, 1
MAX_CASE_S = 4.0


@dataclass(frozen=True)
class Case:
    model: str
    dtype: str
    cache: bool
    phase: str  # prefill | decode
    batch: int
    length: int  # prompt, or decode context

    @property
    def label(self) -> str:
        return (
            f"{self.model:<10} {self.dtype:<5} {'cache' if self.cache else 'none':<6}"
            f"{self.phase:<8} b={self.batch:<3} {'s' if self.phase == 'prefill' else 'ctx'}="
            f"{self.length}"
        )


@dataclass
class Row:
    case: Case
    predicted: float = 0.0
    cpu: list[float] = field(default_factory=list)  # thread CPU seconds per sample
    wall: list[float] = field(default_factory=list)
    skipped: str = ""

    @property
    def measured(self) -> float | None:
        return min(self.cpu) if self.cpu else None

    @property
    def error(self) -> float | None:
        m = self.measured
        return None if m is None else self.predicted / m - 1.0


# ------------------------------------------------------------------- the models


def write_configs(workdir: Path, configs: dict[str, tuple[str, dict[str, Any]]]) -> dict[str, Path]:
    """Each model's config.json (what transformers builds and llmsim reads)."""
    paths = {}
    for name, (cls, kwargs) in configs.items():
        config = getattr(transformers, cls)(**kwargs)
        path = workdir / name / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        config.to_json_file(str(path))
        paths[name] = path
    return paths


def build_hf(path: Path, dtype: str) -> Any:
    transformers.logging.set_verbosity_error()  # its notices are not the bench's output
    config = transformers.AutoConfig.from_pretrained(str(path.parent))
    torch.manual_seed(0)
    with _quiet():
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    return model.to(DTYPES[dtype]).eval()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers warns about configs and deprecated arguments on stderr."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def _timed(fn: Callable[[], object], prepare: Callable[[], object], row: Row, samples: int) -> None:
    for i in range(WARMUP + samples):
        prepare()
        c0, w0 = time.thread_time(), time.perf_counter()
        fn()
        wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
        if i >= WARMUP:
            row.cpu.append(cpu)
            row.wall.append(wall)


def measure_case(model: Any, case: Case, row: Row, samples: int = SAMPLES) -> None:
    """Time one case (see the module docstring), appending its samples to `row`."""
    vocab = model.config.vocab_size
    b, n = case.batch, case.length
    nothing: Callable[[], object] = lambda: None  # noqa: E731
    with one_thread(), torch.inference_mode(), _quiet():
        if case.phase == "prefill" or not case.cache:
            ids = torch.randint(0, vocab, (b, n + (case.phase == "decode")))
            if case.cache:
                _timed(lambda: model(ids, use_cache=True, logits_to_keep=1), nothing, row, samples)
            else:
                _timed(lambda: model(ids, use_cache=False), nothing, row, samples)
            return
        out = model(torch.randint(0, vocab, (b, n)), use_cache=True, logits_to_keep=1)
        cache = getattr(out, "cache", None) or out.past_key_values
        step = torch.randint(0, vocab, (b, 1))
        # transformers 5 renamed the argument (the old name still works, with a warning)
        kw = (
            "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        )

        def restore() -> None:  # drop the appended token; contiguous, as decoding leaves it
            extra = cache.get_seq_length() - n
            if extra > 0:
                cache.crop(-extra)
            for layer in cache.layers:
                layer.keys, layer.values = layer.keys.contiguous(), layer.values.contiguous()

        _timed(
            lambda: model(step, use_cache=True, logits_to_keep=1, **{kw: cache}),
            restore,
            row,
            samples,
        )


# ---------------------------------------------------------------- the prediction


def calibrate(
    paths: Sequence[Path], dtype: str, out: Path, runtime_out: Path, quick: bool
) -> Profile:
    err = io.StringIO()
    argv = [
        "calibrate",
        *("--device", "cpu", "--dtype", dtype, "--threads", "1", "--hf"),
        *("--models", ",".join(str(p) for p in paths), "--out", str(out)),
        *("--runtime-out", str(runtime_out), "--runtime-base", "hf-eager"),
        "--no-compile",  # the prediction prices eager transformers: no compiled step
        *(("--quick",) if quick else ()),
    ]
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = llmsim(argv)
    if code != 0:
        raise RuntimeError(f"llmsim calibrate failed (exit {code}):\n{err.getvalue()}")
    return Profile.model_validate(yaml.safe_load(out.read_text()))


def combined(profiles: Sequence[Profile]) -> Profile:
    """The fastest of every point over the rounds, refitted, and the least runtime
    figures (bench.cpu_fidelity.fastest_profile, plus the runtime section)."""
    best = fastest_profile(profiles)
    runtimes = [p.runtime for p in profiles if p.runtime is not None]
    if not runtimes:
        return best
    rt = runtimes[0]

    def least(get: Callable[[Any], float | None]) -> float | None:
        values = [v for r in runtimes if (v := get(r)) is not None]
        return min(values) if values else None

    update = {
        "host_step_s": rt.host_step_s.model_copy(
            update={
                "eager": least(lambda r: r.host_step_s.eager),
                "compiled": least(lambda r: r.host_step_s.compiled),
            }
        ),
        "host_layer_s": rt.host_layer_s.model_copy(
            update={"eager": least(lambda r: r.host_layer_s.eager)}
        ),
        "kernel_launch_s": least(lambda r: r.kernel_launch_s),
    }
    return best.model_copy(update={"runtime": rt.model_copy(update=update)})


def runtimes(profile: Profile, base_file: Path) -> dict[bool, RuntimeSpec]:
    """The hf-eager runtime with this profile's host and launch times (from the file
    `llmsim calibrate --runtime-out` wrote), and its no-cache twin."""
    from sim.calibrate.runtime import runtime_file

    measured = RuntimeSpec.model_validate(yaml.safe_load(base_file.read_text()))
    fresh = runtime_file(profile, measured.name, catalog.load_runtime("hf-eager"))
    cached = RuntimeSpec.model_validate(fresh)
    none = catalog.load_runtime("hf-eager-no-cache").model_copy(
        update={"host": cached.host, "kernel_launch_s": cached.kernel_launch_s}
    )
    return {True: cached, False: none}


def predict(spec: ModelSpec, profile: Profile, runtime: RuntimeSpec, case: Case) -> float:
    """Seconds the engine would charge the case's step: the model as one stage, priced
    by the hf-eager kernel over the calibrated CPU, plus the runtime's host time."""
    assert profile.device_spec is not None  # a CPU profile carries its device
    precision = Precision(case.dtype, case.dtype, case.dtype)
    kernel = runtime_kernel(
        CalibratedKernel(profile.device_spec, precision, profile), spec, runtime
    )
    stage = StageCost(layer_plan(spec, 1, precision), spec.n_layers, kernel, None, runtime=runtime)
    b, n = case.batch, case.length
    if case.phase == "prefill":
        work, logits = Work.prefill(b, n), (b if case.cache else b * n)
        tokens = b * n
    elif case.cache:
        work, logits, tokens = Work.decode(b, n), b, b
    else:  # no cache: the whole sequence again, logits for every position
        work, logits, tokens = Work.prefill(b, n + 1), b * (n + 1), b * (n + 1)
    return stage.time(work, logits) + runtime.host.seconds(b, tokens)


# ---------------------------------------------------------------------- the run


@dataclass
class Result:
    rows: list[Row]
    rounds: int
    calibrate_s: float
    profiles: dict[str, Profile]


def cases_for(
    models: Sequence[str],
    dtypes: Sequence[str],
    prefill: Sequence[tuple[int, int]] = PREFILL,
    decode: Sequence[tuple[int, int]] = DECODE,
) -> list[Case]:
    return [
        Case(m, d, cache, phase, b, n)
        for d in dtypes
        for m in models
        for cache in (True, False)
        for phase, grid in (("prefill", prefill), ("decode", decode))
        for b, n in grid
    ]


def run(
    workdir: Path,
    *,
    configs: dict[str, tuple[str, dict[str, Any]]] = CONFIGS,
    dtypes: Sequence[str] = ("fp32", "bf16"),
    prefill: Sequence[tuple[int, int]] = PREFILL,
    decode: Sequence[tuple[int, int]] = DECODE,
    rounds: int = 2,
    quick: bool = False,
    samples: int = SAMPLES,
    max_case_s: float = MAX_CASE_S,
    say: Callable[[str], None] | None = None,
) -> Result:
    say = say or (lambda _line: None)
    paths = write_configs(workdir, configs)
    specs = {name: catalog.load_model(str(path)) for name, path in paths.items()}
    rows = {c: Row(c) for c in cases_for(list(configs), dtypes, prefill, decode)}
    calibrate_s = 0.0
    final: dict[str, Profile] = {}
    for dtype in dtypes:
        models = {name: build_hf(path, dtype) for name, path in paths.items()}
        profiles: list[Profile] = []
        for r in range(rounds):
            t0 = time.perf_counter()
            rt_file = workdir / f"{dtype}-r{r}" / "hf-eager-measured.yaml"
            profiles.append(
                calibrate(
                    list(paths.values()), dtype, workdir / f"{dtype}-r{r}.yaml", rt_file, quick
                )
            )
            calibrate_s += time.perf_counter() - t0
            profile = combined(profiles)
            rts = runtimes(profile, rt_file)
            for case, row in rows.items():
                if case.dtype != dtype:
                    continue
                row.predicted = predict(specs[case.model], profile, rts[case.cache], case)
                if row.predicted > max_case_s:
                    row.skipped = f"predicted {row.predicted:.1f} s > {max_case_s:g} s"
                    continue
                measure_case(models[case.model], case, row, samples)
            say(f"{dtype} round {r + 1}/{rounds}: {describe(rows.values(), dtype)}")
            final[dtype] = profile
        del models
    return Result(list(rows.values()), rounds, calibrate_s, final)


# ----------------------------------------------------------------------- report


def groups(rows: Sequence[Row]) -> dict[tuple[str, bool], list[float]]:
    out: dict[tuple[str, bool], list[float]] = {}
    for row in rows:
        if row.error is not None:
            out.setdefault((row.case.dtype, row.case.cache), []).append(abs(row.error))
    return out


def describe(rows: Sequence[Row] | Any, dtype: str) -> str:
    parts = []
    for (d, cache), errs in sorted(groups(list(rows)).items()):
        if d == dtype:
            label = "cache" if cache else "no cache"
            parts.append(f"{label} median |error| {np.median(errs):.1%} over {len(errs)}")
    return "; ".join(parts) or "nothing measured"


def ms(x: float) -> str:
    return f"{x * 1e3:,.2f}"


def report(result: Result) -> list[str]:
    lines = [f"{'case':<44} {'measured ms':>12} {'predicted ms':>13} {'error':>8}"]
    for row in result.rows:
        m = row.measured
        if m is None:
            note = row.skipped or "not measured"
            lines.append(f"{row.case.label:<44} {'-':>12} {ms(row.predicted):>13}   {note}")
            continue
        lines.append(f"{row.case.label:<44} {ms(m):>12} {ms(row.predicted):>13} {row.error:>+8.1%}")
    lines.append("")
    for (dtype, cache), errs in sorted(groups(result.rows).items()):
        label = "with cache" if cache else "no cache (recompute)"
        lines.append(
            f"{dtype} {label}: median |error| {np.median(errs):.1%}, max {max(errs):.1%} "
            f"over {len(errs)} cases"
        )
    return lines


def _pairs(text: str) -> list[tuple[int, int]]:
    return [tuple(int(x) for x in p.split("x")) for p in text.split(",")]  # type: ignore[misc]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dtypes", default="fp32,bf16")
    ap.add_argument("--models", default=",".join(CONFIGS))
    ap.add_argument("--prefill", default=None, help="BxS,... (default 1/4 x 32/128/512)")
    ap.add_argument("--decode", default=None, help="BxCTX,... (default 1/4/16 x 128/512)")
    ap.add_argument("--quick", action="store_true", help="calibrate with --quick")
    ap.add_argument("--max-case-s", type=float, default=MAX_CASE_S)
    ap.add_argument("--samples", type=int, default=SAMPLES)
    ap.add_argument("--keep", default=None, metavar="DIR", help="work in DIR and keep it")
    args, _ = ap.parse_known_args()  # bench/run_all.py passes every script its options
    configs = {m: CONFIGS[m] for m in args.models.split(",")}
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.keep:
            workdir = Path(args.keep)
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        result = run(
            workdir,
            configs=configs,
            dtypes=args.dtypes.split(","),
            prefill=_pairs(args.prefill) if args.prefill else PREFILL,
            decode=_pairs(args.decode) if args.decode else DECODE,
            rounds=args.rounds,
            quick=args.quick,
            samples=args.samples,
            max_case_s=args.max_case_s,
            say=lambda line: print(line, flush=True),
        )
    for line in report(result):
        print(line)
    print(
        f"{result.rounds} round(s); calibration {result.calibrate_s:.0f} s; "
        f"total {time.perf_counter() - t0:.0f} s; transformers {transformers.__version__}, "
        f"torch {torch.__version__}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
