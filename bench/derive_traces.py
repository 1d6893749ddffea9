"""Derive the small trace samples that ship in workloads/traces/ from the Azure LLM
inference traces (2023), and print the lognormal fits used by the workload recipes.

    .venv/bin/python bench/derive_traces.py [--src DIR] [--out DIR]

The source CSVs (github.com/Azure/AzurePublicDataset, CC-BY 4.0; Patel et al.,
Splitwise, ISCA 2024) are read, never copied: only samples and cut-outs of them are
written, each with a first line saying where it came from. Deterministic: the same
inputs give byte-identical outputs.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, special

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.workload.traces import load_trace  # noqa: E402

DEFAULT_SRC = ROOT.parent / "shared" / "data" / "traces"
SAMPLE_ROWS = 2000
FIRST_SECONDS = 600.0
ORIGIN = (
    "github.com/Azure/AzurePublicDataset data/AzureLLMInferenceTrace_{name}.csv "
    "(CC-BY 4.0; Patel et al., Splitwise, ISCA 2024)"
)


def lengths_sample(src: Path, name: str, out: Path) -> pd.DataFrame:
    """SAMPLE_ROWS (prompt, output) pairs drawn without replacement, seed 0, kept in
    trace order."""
    trace = load_trace(src / f"AzureLLMInferenceTrace_{name}.csv", "azure")
    rng = np.random.default_rng(0)
    rows = np.sort(rng.choice(len(trace), size=SAMPLE_ROWS, replace=False))
    sample = trace.iloc[rows][["prompt_tokens", "output_tokens"]]
    header = (
        f"# derived from {ORIGIN.format(name=name)}: {SAMPLE_ROWS} of its {len(trace)} rows "
        "drawn without replacement (numpy default_rng(0)) by bench/derive_traces.py\n"
    )
    _write(out / f"azure-{name}-2023-lengths.csv", header, sample)
    return sample


def first_minutes(src: Path, name: str, out: Path) -> pd.DataFrame:
    """The first FIRST_SECONDS of a trace in plain format, times from its first row."""
    trace = load_trace(src / f"AzureLLMInferenceTrace_{name}.csv", "azure")
    part = trace[trace["arrival_s"] < FIRST_SECONDS].copy()
    part["arrival_s"] = part["arrival_s"].round(6)
    header = (
        f"# derived from {ORIGIN.format(name=name)}: its first {FIRST_SECONDS:.0f} s "
        "in plain format, arrival_s = seconds since its first row, by bench/derive_traces.py\n"
    )
    _write(out / f"azure-{name}-2023-first-10min.csv", header, part)
    return part


def _write(path: Path, header: str, frame: pd.DataFrame) -> None:
    with path.open("w", newline="") as f:
        f.write(header)
        frame.to_csv(f, index=False, lineterminator="\n")
    print(f"wrote {path}: {len(frame)} rows")


def describe(label: str, values: pd.Series) -> None:
    q = values.quantile([0.5, 0.9, 0.99])
    print(
        f"  {label}: mean {values.mean():.1f}, median {q[0.5]:.0f}, p90 {q[0.9]:.0f}, "
        f"p99 {q[0.99]:.0f}, min {values.min()}, max {values.max()}"
    )


# ---------------------------------------------------------------- recipe lognormal fits


def sigma_from_median_p90(median: float, p90: float) -> float:
    return math.log(p90 / median) / special.ndtri(0.9)


def sigma_from_cv(cv: float) -> float:
    return math.sqrt(math.log(1 + cv**2))


def truncated_mean(mu: float, sigma: float, lo: float, hi: float) -> float:
    """Mean of exp(N(mu, sigma²)) conditioned on [lo, hi] (continuous approximation of
    the rounded draws in sim/workload/lengths.py, which use [min - 0.5, max + 0.5])."""
    a, b = (math.log(lo) - mu) / sigma, (math.log(hi) - mu) / sigma
    mass = special.ndtr(b) - special.ndtr(a)
    return math.exp(mu + sigma**2 / 2) * (special.ndtr(b - sigma) - special.ndtr(a - sigma)) / mass


def median_for_mean(mean: float, sigma: float, lo: int, hi: int) -> float:
    """The untruncated median whose truncated law has the given mean."""

    def gap(mu: float) -> float:
        return truncated_mean(mu, sigma, lo - 0.5, hi + 0.5) - mean

    return math.exp(optimize.brentq(gap, math.log(lo) - 5, math.log(hi) + 5))


def fits() -> None:
    print("lognormal fits for the recipes:")
    # ShareGPT and Alpaca: vLLM (SOSP 2023) Fig. 11 gives means only; sigma is a choice.
    for label, mean, sigma, lo, hi in (
        ("sharegpt prompt", 161.31, 1.0, 4, 1024),
        ("sharegpt output", 337.99, 1.0, 4, 2048),
        ("alpaca prompt", 19.31, sigma_from_cv(15.19 / 19.67), 1, 1024),
        ("alpaca output", 58.45, sigma_from_cv(64.85 / 64.51), 1, 1024),
    ):
        median = median_for_mean(mean, sigma, lo, hi)
        print(
            f"  {label}: sigma {sigma:.3f}, median {median:.2f} gives mean {mean} on [{lo}, {hi}]"
        )
    # Vidur Table 1 gives median and p90: fit both, report the implied mean.
    for label, median, p90, mean in (
        ("arxiv prompt", 7827, 18549, 9882),
        ("arxiv output", 228, 475, 411),
        ("lmsys prompt", 417, 1678, 786),
        ("lmsys output", 141, 491, 215),
    ):
        sigma = sigma_from_median_p90(median, p90)
        implied = median * math.exp(sigma**2 / 2)
        print(f"  {label}: sigma {sigma:.3f} (median {median}, p90 {p90}); ", end="")
        print(f"mean {implied:.0f} vs {mean} reported")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC)
    parser.add_argument("--out", type=Path, default=ROOT / "workloads" / "traces")
    args = parser.parse_args()
    if not args.src.is_dir():
        sys.exit(f"no source traces at {args.src} (give --src)")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("conv", "code"):
        full = load_trace(args.src / f"AzureLLMInferenceTrace_{name}.csv", "azure")
        print(f"{name} full trace ({len(full)} rows):")
        describe("prompt", full["prompt_tokens"])
        describe("output", full["output_tokens"])
        sample = lengths_sample(args.src, name, args.out)
        describe("sample prompt", sample["prompt_tokens"])
        describe("sample output", sample["output_tokens"])
    part = first_minutes(args.src, "conv", args.out)
    print(f"  first 10 min: {len(part)} rows, {len(part) / FIRST_SECONDS:.2f} req/s")
    describe("prompt", part["prompt_tokens"])
    describe("output", part["output_tokens"])
    fits()


if __name__ == "__main__":
    main()
