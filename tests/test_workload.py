"""Tests of sim/workload.py: arrival processes and length laws against their closed
forms, seeding, trace loading and its errors, spec validation, classes and recipes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.errors import LlmsimError
from sim.spec.recipes import resolve_recipe
from sim.spec.workload import LognormalLength, WorkloadSpec, parse_workload
from sim.workload.arrivals import generate
from sim.workload.traces import load_trace

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "workloads" / "traces"
SHARED = ROOT.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not (SHARED / "traces" / "AzureLLMInferenceTrace_conv.csv").is_file(),
    reason=f"the shared Azure traces are not at {SHARED / 'traces'} (a checkout without them)",
)

FIXED = {"dist": "fixed", "value": 8}


def spec(**workload) -> WorkloadSpec:
    data = {"prompt": FIXED, "output": FIXED, **workload}
    return parse_workload(data, "test.yaml", base_dir=ROOT)


def arrivals(process: dict, seed: int = 0, **kw):
    return generate(spec(arrival=process, **kw), seed, ROOT).arrival_s


def cv(x: np.ndarray) -> float:
    return float(np.std(x) / np.mean(x))


def lengths(dist: dict, n: int = 200_000, seed: int = 0) -> np.ndarray:
    s = parse_workload(
        {"requests": n, "arrival": {"process": "burst"}, "prompt": dist, "output": FIXED},
        "test.yaml",
    )
    return generate(s, seed, ROOT).prompt_tokens


def error(data: dict, base_dir: Path = ROOT) -> str:
    with pytest.raises(LlmsimError) as info:
        generate(parse_workload(data, "scen.yaml", base_dir=base_dir), 0, base_dir)
    return str(info.value)


# ---------------------------------------------------------------------------- arrivals


def test_poisson_gaps_are_exponential():
    gaps = np.diff(arrivals({"process": "poisson", "rate": 3.0}, requests=200_001))
    assert np.mean(gaps) == pytest.approx(1 / 3.0, rel=0.02)
    assert cv(gaps) == pytest.approx(1.0, rel=0.02)
    # Memoryless: P(gap > 1/rate) = e^-1.
    assert np.mean(gaps > 1 / 3.0) == pytest.approx(np.exp(-1), abs=0.005)


def test_gamma_gaps_have_the_asked_cv():
    gaps = np.diff(arrivals({"process": "gamma", "rate": 3.0, "cv": 2.0}, requests=200_001))
    assert cv(gaps) == pytest.approx(2.0, rel=0.05)
    assert np.mean(gaps) == pytest.approx(1 / 3.0, rel=0.03)


def test_constant_is_exactly_spaced():
    t = arrivals({"process": "constant", "rate": 4.0}, requests=1000)
    assert np.array_equal(t, np.arange(1000) / 4.0)


def test_onoff_is_silent_when_off():
    process = {"process": "onoff", "rate": 6.0, "on_s": 30, "off_s": 30}
    t = arrivals(process, duration_s=6000)
    assert np.all(t % 60 < 30)
    # Every on window is used, at the on-rate: 100 windows × 180 expected arrivals.
    counts = np.bincount((t // 60).astype(int), minlength=100)
    assert counts.min() > 0
    assert len(t) == pytest.approx(6.0 * 30 * 100, rel=0.05)
    assert spec(arrival=process, requests=1).mean_rate_per_s == pytest.approx(3.0)


def test_burst_puts_everything_at_zero():
    t = arrivals({"process": "burst"}, requests=500)
    assert len(t) == 500 and not t.any()


def test_first_request_arrives_at_zero():
    for process in ({"process": "poisson", "rate": 1}, {"process": "gamma", "rate": 1, "cv": 3}):
        assert arrivals(process, requests=10)[0] == 0.0


@pytest.mark.parametrize(
    "process",
    [
        {"process": "poisson", "rate": 5.0},
        {"process": "gamma", "rate": 5.0, "cv": 3.0},
        {"process": "onoff", "rate": 10.0, "on_s": 7, "off_s": 3},
    ],
)
def test_duration_cuts_exactly_at_the_end(process):
    short = arrivals(process, duration_s=100)
    long = arrivals(process, duration_s=1000)
    assert short.max() < 100 and long.max() < 1000 and long.max() > 990
    # The same stream, cut earlier: exactly the long run's arrivals before 100 s.
    np.testing.assert_array_equal(short, long[long < 100])


def test_duration_with_constant_rate():
    t = arrivals({"process": "constant", "rate": 2.0}, duration_s=10)
    assert np.array_equal(t, np.arange(20) / 2.0)


def test_million_requests():
    """A million requests in one call (vectorised: bench/workload_speed.py times it)."""
    s = spec(
        requests=1_000_000,
        arrival={"process": "gamma", "rate": 10, "cv": 2},
        prompt={"dist": "lognormal", "median": 512, "sigma": 0.8, "max": 4096},
        output={"dist": "zipf", "a": 1.2, "max": 2048},
    )
    a = generate(s, 1)
    assert len(a) == 1_000_000
    assert a.arrival_s[0] == 0.0 and np.all(np.diff(a.arrival_s) >= 0)
    assert a.prompt_tokens.min() >= 1 and a.prompt_tokens.max() <= 4096
    assert a.output_tokens.min() >= 1 and a.output_tokens.max() <= 2048
    assert a.arrival_s[-1] == pytest.approx(1_000_000 / 10, rel=0.02)


# ----------------------------------------------------------------------------- seeding


def test_same_seed_same_arrays_different_seed_different():
    s = spec(
        requests=5000,
        arrival={"process": "poisson", "rate": 3},
        prompt={"dist": "uniform", "min": 1, "max": 100},
        output={"dist": "normal", "mean": 50, "std": 20},
        classes=[{"name": "a", "weight": 1}, {"name": "b", "weight": 2}],
    )
    a, b, c = generate(s, 7), generate(s, 7), generate(s, 8)
    for field in ("arrival_s", "prompt_tokens", "output_tokens", "class_index"):
        assert np.array_equal(getattr(a, field), getattr(b, field))
        assert not np.array_equal(getattr(a, field), getattr(c, field))


def test_changing_output_leaves_arrivals_and_prompts_alone():
    base = {"requests": 2000, "arrival": {"process": "poisson", "rate": 3}}
    one = spec(**base, prompt={"dist": "uniform", "min": 1, "max": 99})
    two = spec(
        **base,
        prompt={"dist": "uniform", "min": 1, "max": 99},
        output={"dist": "zipf", "a": 2, "max": 50},
    )
    a, b = generate(one, 3), generate(two, 3)
    assert np.array_equal(a.arrival_s, b.arrival_s)
    assert np.array_equal(a.prompt_tokens, b.prompt_tokens)
    assert not np.array_equal(a.output_tokens, b.output_tokens)


def test_adding_a_class_leaves_arrivals_alone():
    base = {"requests": 2000, "arrival": {"process": "gamma", "rate": 3, "cv": 2}}
    a = generate(spec(**base), 5)
    b = generate(spec(**base, classes=[{"name": "x"}, {"name": "y", "weight": 3}]), 5)
    assert np.array_equal(a.arrival_s, b.arrival_s)


def test_arrays_are_read_only_and_typed():
    a = generate(spec(requests=10, arrival={"process": "poisson", "rate": 1}), 0)
    assert a.arrival_s.dtype == np.float64 and a.prompt_tokens.dtype == np.int64
    assert a.class_index.dtype == np.int32 and a.class_names == ("default",)
    with pytest.raises(ValueError):
        a.prompt_tokens[0] = 5
    assert list(a.to_frame().columns) == ["arrival_s", "prompt_tokens", "output_tokens", "class"]


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_bad_seed(seed):
    with pytest.raises(LlmsimError, match="seed"):
        generate(spec(requests=1, arrival={"process": "burst"}), seed)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(1, 300),
    lo=st.integers(1, 50),
    width=st.integers(0, 500),
    cv_=st.floats(0.1, 5),
)
def test_invariants(seed, n, lo, width, cv_):
    hi = lo + width
    s = spec(
        requests=n,
        arrival={"process": "gamma", "rate": 2, "cv": cv_},
        prompt={"dist": "lognormal", "median": lo + width / 2, "sigma": 1.5, "min": lo, "max": hi},
        output={"dist": "normal", "mean": lo, "std": 1 + width, "min": lo, "max": hi},
    )
    a = generate(s, seed)
    assert len(a) == n and np.all(np.diff(a.arrival_s) >= 0)
    for tokens in (a.prompt_tokens, a.output_tokens):
        assert tokens.min() >= lo and tokens.max() <= hi


# ----------------------------------------------------------------------------- lengths


@pytest.mark.parametrize(
    "dist",
    [
        {"dist": "fixed", "value": 300},
        {"dist": "uniform", "min": 100, "max": 500},
        {"dist": "normal", "mean": 120, "std": 300, "min": 100, "max": 500},
        {"dist": "lognormal", "median": 2000, "sigma": 2, "min": 100, "max": 500},
        {"dist": "zipf", "a": 0.5, "min": 100, "max": 500},
    ],
)
def test_lengths_stay_within_min_max(dist):
    x = lengths(dist, n=50_000)
    assert x.dtype == np.int64 and x.min() >= 100 and x.max() <= 500


def test_uniform_is_inclusive_and_flat():
    x = lengths({"dist": "uniform", "min": 16, "max": 2048})
    assert x.min() == 16 and x.max() == 2048
    assert x.mean() == pytest.approx((16 + 2048) / 2, rel=0.01)


def test_normal_mean_and_std():
    x = lengths({"dist": "normal", "mean": 512, "std": 128, "min": 1, "max": 4096})
    assert x.mean() == pytest.approx(512, rel=0.01)
    assert x.std() == pytest.approx(128, rel=0.02)


def test_lognormal_by_median_and_by_mean():
    by_median = lengths({"dist": "lognormal", "median": 512, "sigma": 0.8, "max": 100_000})
    assert np.median(by_median) == pytest.approx(512, rel=0.02)
    assert by_median.mean() == pytest.approx(512 * np.exp(0.8**2 / 2), rel=0.02)
    by_mean = lengths({"dist": "lognormal", "mean": 300, "sigma": 0.6})
    assert by_mean.mean() == pytest.approx(300, rel=0.02)
    assert LognormalLength(dist="lognormal", mean=300, sigma=0.6).mu == pytest.approx(
        np.log(300) - 0.18
    )


def test_truncation_does_not_pile_mass_on_the_bound():
    x = lengths({"dist": "lognormal", "median": 512, "sigma": 1.0, "max": 600})
    # Clipping would put ~43% of draws at 600; truncation spreads them below it.
    assert np.mean(x == 600) < 0.01


def test_zipf_follows_the_power_law():
    a = 1.5
    x = lengths({"dist": "zipf", "a": a, "min": 10, "max": 4096}, n=400_000)
    freq = np.bincount(x - 10, minlength=8)[:8] / len(x)
    norm = np.sum(np.arange(1, 4097 - 9, dtype=float) ** -a)
    expected = np.arange(1, 9, dtype=float) ** -a / norm
    np.testing.assert_allclose(freq, expected, rtol=0.05)
    assert x.min() == 10 and x.max() <= 4096


def test_empirical_column(tmp_path):
    (tmp_path / "lens.csv").write_text("# a comment\nid,tokens\n1,10\n2,20\n3,30\n4,40\n")
    x = lengths({"dist": "empirical", "path": str(tmp_path / "lens.csv"), "column": "tokens"})
    assert set(np.unique(x)) == {10, 20, 30, 40}
    assert x.mean() == pytest.approx(25, rel=0.01)


def test_empirical_reads_azure_columns_by_plain_name():
    dist = {
        "dist": "empirical",
        "path": "workloads/traces/azure-conv-2023-first-10min.csv",
        "column": "output_tokens",
    }
    x = lengths(dist, n=20_000)
    column = load_trace(TRACES / "azure-conv-2023-first-10min.csv")["output_tokens"]
    assert set(np.unique(x)) <= set(column) and x.mean() == pytest.approx(column.mean(), rel=0.03)


def test_empirical_unknown_column(tmp_path):
    (tmp_path / "lens.csv").write_text("id,tokens\n1,10\n")
    data = {
        "requests": 5,
        "arrival": {"process": "burst"},
        "prompt": {"dist": "empirical", "path": "lens.csv", "column": "nope"},
        "output": FIXED,
    }
    message = error(data, base_dir=tmp_path)
    assert "workload.prompt.column" in message and "its columns: id, tokens" in message


def test_joint_lengths_keep_pairs_and_cut_prompts():
    s = spec(
        requests=20_000,
        arrival={"process": "burst"},
        prompt=None,
        output=None,
        lengths={"path": "workloads/traces/azure-conv-2023-lengths.csv", "max_prompt": 4096},
    )
    a = generate(s, 0)
    sample = load_lengths_pairs(TRACES / "azure-conv-2023-lengths.csv")
    pairs = set(zip(np.minimum(sample[0], 4096), sample[1], strict=True))
    assert set(zip(a.prompt_tokens, a.output_tokens, strict=True)) <= pairs
    assert a.prompt_tokens.max() == 4096  # cut, not dropped (the sample goes to 6949)


def load_lengths_pairs(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = np.loadtxt(path, delimiter=",", skiprows=2, dtype=np.int64)
    return rows[:, 0], rows[:, 1]


@pytest.mark.parametrize(
    "text",
    [
        "prompt_tokens,output_tokens\n5,6\n",
        "arrival_s,prompt_tokens,output_tokens\n0,5,6\n",
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,5,6\n",
    ],
)
def test_lengths_accepts_two_column_plain_and_azure(tmp_path, text):
    (tmp_path / "l.csv").write_text("# derived from somewhere\n" + text)
    data = {"requests": 4, "arrival": {"process": "burst"}, "lengths": {"path": "l.csv"}}
    a = generate(parse_workload(data, "s.yaml", tmp_path), 0, tmp_path)
    assert list(a.prompt_tokens) == [5] * 4 and list(a.output_tokens) == [6] * 4


# ------------------------------------------------------------------------------ traces

PLAIN = "# a plain trace\narrival_s,prompt_tokens,output_tokens,extra\n" + "".join(
    f"{t},{100 + t},{10 + t},x\n" for t in range(10)
)
AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n" + (
    "2023-11-16 18:15:46.6805900,374,44\n"
    "2023-11-16 18:15:50.9951690,396,109\n"
    "2023-11-16 18:15:51.0000000,879,17\n"
)


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_plain_trace(tmp_path):
    frame = load_trace(write(tmp_path, PLAIN))
    assert list(frame.columns) == ["arrival_s", "prompt_tokens", "output_tokens"]
    assert list(frame["arrival_s"]) == list(range(10))
    assert list(frame["prompt_tokens"]) == list(range(100, 110))


@pytest.mark.parametrize("fmt", ["azure", "auto"])
def test_load_azure_trace(tmp_path, fmt):
    frame = load_trace(write(tmp_path, AZURE), fmt)
    np.testing.assert_allclose(frame["arrival_s"], [0.0, 4.314579, 4.31941], atol=1e-9)
    assert list(frame["prompt_tokens"]) == [374, 396, 879]
    assert list(frame["output_tokens"]) == [44, 109, 17]


def test_wrong_format_names_the_expected_header(tmp_path):
    with pytest.raises(LlmsimError, match="expected columns TIMESTAMP,ContextTokens"):
        load_trace(write(tmp_path, PLAIN), "azure")
    with pytest.raises(LlmsimError, match="does not match"):
        load_trace(write(tmp_path, "a,b\n1,2\n"))


def replay(tmp_path: Path, trace: dict, **kw):
    data = {"trace": {"path": "t.csv", **trace}, **kw}
    return generate(parse_workload(data, "s.yaml", tmp_path), 0, tmp_path)


def test_replay_time_scale_start_limit_and_cut(tmp_path):
    write(tmp_path, PLAIN)
    assert list(replay(tmp_path, {}).arrival_s) == list(range(10))
    assert list(replay(tmp_path, {"time_scale": 2.0}).arrival_s) == [t / 2 for t in range(10)]
    started = replay(tmp_path, {"start_s": 3.5})
    assert list(started.arrival_s) == [t - 3.5 for t in range(4, 10)]
    assert list(started.prompt_tokens) == list(range(104, 110))
    limited = replay(tmp_path, {"start_s": 2, "limit": 3})
    assert list(limited.arrival_s) == [0, 1, 2] and list(limited.prompt_tokens) == [102, 103, 104]
    cut = replay(tmp_path, {"max_prompt": 104, "max_output": 12})
    assert list(cut.prompt_tokens) == [100, 101, 102, 103, 104, 104, 104, 104, 104, 104]
    assert cut.output_tokens.max() == 12 and len(cut) == 10  # cut, none dropped


def test_replay_with_duration_and_requests(tmp_path):
    write(tmp_path, PLAIN)
    assert list(replay(tmp_path, {}, duration_s=4).arrival_s) == [0, 1, 2, 3]
    assert list(replay(tmp_path, {}, requests=2).prompt_tokens) == [100, 101]
    with pytest.raises(LlmsimError, match=r"workload.requests: 11 requested but the trace has 10"):
        replay(tmp_path, {}, requests=11)
    with pytest.raises(LlmsimError, match="no requests left"):
        replay(tmp_path, {"start_s": 100})


def test_replay_with_classes(tmp_path):
    write(tmp_path, PLAIN)
    a = replay(tmp_path, {}, classes=[{"name": "x"}, {"name": "y"}])
    assert a.class_names == ("x", "y") and list(a.prompt_tokens) == list(range(100, 110))


BROKEN = [
    # (body rows after the header, line, column, what the message says)
    ("0,5,6\n1,abc,6\n", 4, "prompt_tokens", "expected a positive integer, got 'abc'"),
    ("0,5,6\n1,7,\n", 4, "output_tokens", "missing value"),
    ("0,5,6\n1,0,6\n", 4, "prompt_tokens", "expected a positive integer, got 0"),
    ("0,5,6\n1,5,-2\n", 4, "output_tokens", "expected a positive integer, got -2"),
    ("0,5,6\n1,5.5,6\n", 4, "prompt_tokens", "expected a positive integer, got 5.5"),
    ("0,5,6\n2,5,6\n1,5,6\n", 5, "arrival_s", "time goes backwards"),
    ("0,5,6\nsoon,5,6\n", 4, "arrival_s", "expected a number of seconds >= 0, got 'soon'"),
    ("0,5,6\n\n# note\n1,5,6\n,5,6\n", 7, "arrival_s", "missing value"),
]


@pytest.mark.parametrize(("body", "line", "column", "what"), BROKEN)
def test_broken_plain_rows_name_file_line_and_column(tmp_path, body, line, column, what):
    path = write(tmp_path, "# comment line\narrival_s,prompt_tokens,output_tokens\n" + body)
    with pytest.raises(LlmsimError) as info:
        load_trace(path)
    assert str(info.value).startswith(f"{path}: line {line}: {column}: {what}")


def test_broken_azure_rows(tmp_path):
    bad_time = AZURE.replace("2023-11-16 18:15:50.9951690", "yesterday")
    with pytest.raises(LlmsimError, match=r"t.csv: line 3: TIMESTAMP: expected a timestamp"):
        load_trace(write(tmp_path, bad_time))
    backwards = AZURE.replace("18:15:51.0000000", "18:15:40.0000000")
    with pytest.raises(LlmsimError, match=r"line 4: TIMESTAMP: time goes backwards"):
        load_trace(write(tmp_path, backwards))
    zero = AZURE.replace(",109", ",0")
    with pytest.raises(LlmsimError, match=r"line 3: GeneratedTokens: .* got 0"):
        load_trace(write(tmp_path, zero))


def test_earliest_bad_row_is_reported(tmp_path):
    body = "0,5,6\n1,5,x\n2,y,6\n"
    with pytest.raises(LlmsimError, match="line 3: output_tokens"):
        load_trace(write(tmp_path, "arrival_s,prompt_tokens,output_tokens\n" + body))


def test_broken_row_in_a_replayed_trace(tmp_path):
    write(tmp_path, "arrival_s,prompt_tokens,output_tokens\n0,5,6\n1,5,abc\n")
    with pytest.raises(LlmsimError, match=r"t.csv: line 3: output_tokens: expected a positive"):
        replay(tmp_path, {})


def test_malformed_and_empty_files(tmp_path):
    with pytest.raises(LlmsimError, match="malformed CSV: line 3: expected 3 fields, saw 5"):
        load_trace(write(tmp_path, "arrival_s,prompt_tokens,output_tokens\n0,5,6\n1,5,6,7,8\n"))
    with pytest.raises(LlmsimError, match="no header"):
        load_trace(write(tmp_path, "# only a comment\n"))
    with pytest.raises(LlmsimError, match="file not found"):
        load_trace(tmp_path / "missing.csv")


def test_an_edited_file_is_read_again(tmp_path):
    path = write(tmp_path, PLAIN)
    assert len(load_trace(path)) == 10
    path.write_text(PLAIN + "10,5,5,x\n11,5,5,x\n")
    assert len(load_trace(path)) == 12


def test_missing_data_file_names_the_key(tmp_path):
    data = {"requests": 3, "arrival": {"process": "burst"}, "lengths": {"path": "nope.csv"}}
    message = error(data, base_dir=tmp_path)
    assert message.startswith("workload.lengths.path: file not found: 'nope.csv'")


def test_paths_resolve_from_the_catalog_roots(tmp_path):
    data = {
        "requests": 3,
        "arrival": {"process": "burst"},
        "lengths": {"path": "workloads/traces/azure-code-2023-lengths.csv"},
    }
    assert len(generate(parse_workload(data, "s.yaml", tmp_path), 0, tmp_path)) == 3


# ------------------------------------------------------------------ derived data files


@pytest.mark.parametrize("name", ["conv", "code"])
def test_shipped_length_samples(name):
    path = TRACES / f"azure-{name}-2023-lengths.csv"
    assert path.read_text().startswith("# derived from github.com/Azure/AzurePublicDataset")
    prompts, outputs = load_lengths_pairs(path)
    assert len(prompts) == 2000 and prompts.min() >= 1 and outputs.min() >= 1
    # Medians near the full trace's (shared/data/workload-stats.yaml).
    expected = {"conv": (1020, 129), "code": (1469, 13)}[name]
    assert np.median(prompts) == pytest.approx(expected[0], rel=0.05)
    assert np.median(outputs) == pytest.approx(expected[1], rel=0.05)


def test_shipped_first_ten_minutes():
    path = TRACES / "azure-conv-2023-first-10min.csv"
    assert path.read_text().startswith("# derived from")
    frame = load_trace(path)
    assert frame["arrival_s"].iloc[0] == 0.0 and frame["arrival_s"].max() < 600
    assert frame["arrival_s"].is_monotonic_increasing and len(frame) == 2867


@needs_shared
def test_full_azure_traces_match_their_published_statistics():
    stats = yaml.safe_load((SHARED / "workload-stats.yaml").read_text())
    by_id = {d["id"]: d for d in stats["datasets"]}
    for name in ("conv", "code"):
        expected = by_id[f"azure_llm_inference_2023_{name}"]["computed_here"]
        frame = load_trace(SHARED / "traces" / f"AzureLLMInferenceTrace_{name}.csv")
        assert len(frame) == expected["rows"]
        assert frame["arrival_s"].iloc[-1] == pytest.approx(expected["duration_s"], abs=0.1)
        assert frame["prompt_tokens"].mean() == pytest.approx(
            expected["context_tokens"]["mean"], abs=0.1
        )
        assert frame["output_tokens"].median() == expected["generated_tokens"]["median"]


@needs_shared
def test_derive_traces_reproduces_the_shipped_files(tmp_path):
    script = ROOT / "bench" / "derive_traces.py"
    subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path)], check=True, capture_output=True
    )
    for shipped in TRACES.glob("azure-*-2023-*.csv"):
        assert (tmp_path / shipped.name).read_bytes() == shipped.read_bytes(), shipped.name


# -------------------------------------------------------------------------- validation


def bad(data: dict) -> str:
    with pytest.raises(LlmsimError) as info:
        parse_workload(data, "scen.yaml")
    return str(info.value)


OK = {
    "requests": 10,
    "arrival": {"process": "poisson", "rate": 3},
    "prompt": FIXED,
    "output": FIXED,
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"arrival": {"process": "poisson", "rate": -3}}, "workload.arrival.rate: must be > 0"),
        (
            {"arrival": {"process": "poisson", "rate": float("inf")}},
            "workload.arrival.rate: expected a finite",
        ),
        (
            {"arrival": {"process": "poison", "rate": 3}},
            "workload.arrival.process: unknown process 'poison'; "
            "valid processes: burst, constant, gamma, onoff, poisson",
        ),
        ({"arrival": {"rate": 3}}, "workload.arrival.process: required key is missing"),
        (
            {"arrival": {"process": "gamma", "rate": 3}},
            "workload.arrival.cv: required key is missing (process: gamma)",
        ),
        (
            {"arrival": {"process": "poisson", "rate": 3, "cv": 2}},
            "workload.arrival.cv: unknown key; valid keys: process, rate",
        ),
        ({"colour": "red"}, "workload.colour: unknown key"),
        ({"duration_s": 60}, "workload.duration_s: give requests or duration_s, not both"),
        ({"requests": None}, "workload.requests: give requests (how many) or duration_s"),
        ({"requests": 0}, "workload.requests: must be >= 1"),
        ({"arrival": None}, "workload.arrival: required key is missing"),
        (
            {"requests": None, "duration_s": 5, "arrival": {"process": "burst"}},
            "workload.duration_s: burst",
        ),
        ({"duration_s": "5 parsecs", "requests": None}, "workload.duration_s: expected a duration"),
        (
            {"prompt": {"dist": "gaussian"}},
            "workload.prompt.dist: unknown dist 'gaussian'; valid dists: empirical",
        ),
        (
            {"prompt": {"dist": "uniform", "min": 9, "max": 3}},
            "workload.prompt.max: must be >= min (9), got 3 (dist: uniform)",
        ),
        (
            {"prompt": {"dist": "lognormal", "median": 5, "mean": 6, "sigma": 1}},
            "workload.prompt.median: give median or mean",
        ),
        (
            {"prompt": {"dist": "normal", "mean": 10, "std": 1, "min": 1000}},
            "workload.prompt.min: min..max holds almost none",
        ),
        (
            {"output": {"dist": "zipf", "a": 1.1, "min": 1}},
            "workload.output.max: required key is missing (dist: zipf)",
        ),
        ({"output": None}, "workload.output: required key is missing"),
        (
            {"lengths": {"path": "x.csv"}},
            "workload.lengths: give lengths (joint pairs) or prompt/output, not both",
        ),
        ({"trace": {"path": "x.csv"}}, "workload.arrival: not allowed with trace"),
        ({"trace": {"path": "x.csv", "format": "excel"}}, "workload.trace.format: Input should be"),
        ({"classes": []}, "workload.classes: "),
        (
            {"classes": [{"name": "a"}, {"name": "a"}]},
            "workload.classes.1.name: duplicate class name 'a'",
        ),
        ({"classes": [{"name": "a", "weight": 0}]}, "workload.classes.0.weight: must be > 0"),
        (
            {"classes": [{"name": "a", "slo": {"ttft": "2 s", "tbt": 1}}]},
            "workload.classes.0.slo.tbt: unknown key; valid keys: e2e, percentile",
        ),
        ({"arrival": 3}, "workload.arrival: expected a mapping"),
    ],
)
def test_bad_values_name_the_key_path(change, expected):
    message = bad({**OK, **change})
    assert message.startswith(f"scen.yaml: {expected}"), message


def test_class_lengths_must_be_complete():
    data = {**OK, "prompt": None, "output": None, "lengths": {"path": "x.csv"}}
    message = bad({**data, "classes": [{"name": "a", "prompt": FIXED}]})
    assert "workload.classes.0.output: required key is missing" in message
    assert "joint pairs" in message


def test_not_a_mapping():
    assert bad([1, 2]) == "scen.yaml: workload: expected a mapping, got list"  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- classes


def test_class_weights_are_respected():
    s = spec(
        requests=100_000,
        arrival={"process": "poisson", "rate": 3},
        classes=[{"name": "chat", "weight": 3}, {"name": "summarise", "weight": 1}],
    )
    a = generate(s, 0)
    assert a.class_names == ("chat", "summarise")
    assert np.mean(a.class_index == 0) == pytest.approx(0.75, abs=0.01)


def test_classes_inherit_top_level_lengths():
    s = spec(
        requests=4000,
        arrival={"process": "poisson", "rate": 3},
        prompt={"dist": "fixed", "value": 100},
        output={"dist": "fixed", "value": 7},
        classes=[
            {"name": "chat", "weight": 1, "slo": {"ttft": "2 s", "tpot": "200 ms"}},
            {"name": "long", "weight": 1, "prompt": {"dist": "fixed", "value": 4000}},
            {"name": "pairs", "lengths": {"path": "workloads/traces/azure-code-2023-lengths.csv"}},
        ],
    )
    a = generate(s, 0)
    chat, long_, pairs = (a.class_index == i for i in range(3))
    assert set(a.prompt_tokens[chat]) == {100} and set(a.output_tokens[chat]) == {7}
    assert set(a.prompt_tokens[long_]) == {4000} and set(a.output_tokens[long_]) == {7}
    assert len(set(a.prompt_tokens[pairs])) > 100
    assert s.slo_for("chat").ttft_s == 2.0 and s.slo_for("chat").tpot_s == pytest.approx(0.2)
    assert s.slo_for("long") is None
    with pytest.raises(LlmsimError, match="unknown class 'nope'; valid classes: chat, long, pairs"):
        s.slo_for("nope")


def test_top_level_joint_lengths_are_inherited():
    s = spec(
        requests=100,
        arrival={"process": "burst"},
        prompt=None,
        output=None,
        lengths={"path": "workloads/traces/azure-code-2023-lengths.csv"},
        classes=[{"name": "a"}, {"name": "b", "prompt": FIXED, "output": FIXED}],
    )
    resolved = s.resolved_classes()
    assert resolved[0].lengths == s.lengths and resolved[1].lengths is None
    a = generate(s, 0)
    assert set(a.prompt_tokens[a.class_index == 1]) == {8}


def test_scaled_load():
    s = spec(requests=10, arrival={"process": "gamma", "rate": 2, "cv": 2})
    assert s.scaled(3).arrival.rate == 6 and s.scaled(3).arrival.cv == 2
    t = parse_workload({"trace": {"path": "x.csv", "time_scale": 2}}, "s.yaml")
    assert t.scaled(1.5).trace.time_scale == 3
    with pytest.raises(LlmsimError, match="burst"):
        spec(requests=10, arrival={"process": "burst"}).scaled(2)


# ----------------------------------------------------------------------------- recipes


def test_recipe_merge():
    merged = resolve_recipe(
        {
            "recipe": "sharegpt",
            "requests": 1000,
            "arrival": {"process": "poisson", "rate": 2},
            "prompt": {"max": 512},
        },
        ROOT / "scenarios",
    )
    assert merged["requests"] == 1000 and "name" not in merged and "recipe" not in merged
    assert merged["prompt"] == {
        "dist": "lognormal",
        "median": 108.04,
        "sigma": 1.0,
        "min": 4,
        "max": 512,
    }
    assert merged["output"]["median"] == 228.76


def test_recipe_other_variant_and_other_length_form_replace():
    merged = resolve_recipe(
        {"recipe": "sharegpt", "requests": 5, "prompt": {"dist": "fixed", "value": 3}}, ROOT
    )
    assert merged["prompt"] == {"dist": "fixed", "value": 3}
    joint = resolve_recipe(
        {"recipe": "sharegpt", "requests": 5, "lengths": {"path": "x.csv"}}, ROOT
    )
    assert "prompt" not in joint and "output" not in joint
    over = resolve_recipe({"recipe": "azure-conv-2023", "lengths": {"max_prompt": 4096}}, ROOT)
    assert over["lengths"]["path"].endswith("azure-conv-2023-lengths.csv")
    assert over["lengths"]["max_prompt"] == 4096


def test_unknown_recipe_lists_the_valid_ones():
    message = bad({"recipe": "sharegtp", "requests": 5})
    assert message.startswith(
        "scen.yaml: workload.recipe: unknown recipe 'sharegtp'; valid recipes:"
    )
    for name in ("alpaca", "azure-code-2023", "azure-conv-2023", "sharegpt", "lmsys-chat"):
        assert name in message


def test_resolve_recipe_keys_are_relative_to_the_workload():
    with pytest.raises(LlmsimError) as info:
        resolve_recipe({"recipe": "nope"}, ROOT)
    assert info.value.key == "recipe" and "valid recipes: alpaca" in info.value.message


def test_bad_recipe_value_names_the_recipe_file(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "name: mine\nprompt: {dist: fixed, value: 0}\noutput: {dist: fixed, value: 3}\n"
    )
    with pytest.raises(LlmsimError) as info:
        parse_workload(
            {"recipe": "mine.yaml", "requests": 5, "arrival": {"process": "burst"}},
            "scen.yaml",
            tmp_path,
        )
    assert str(info.value).startswith(
        f"{tmp_path / 'mine.yaml'}: workload.prompt.value: must be >= 1"
    )


def test_malformed_recipe_names_the_recipe_file(tmp_path):
    (tmp_path / "broken.yaml").write_text("name: broken\nprompt: {dist: fixed\n")
    with pytest.raises(LlmsimError) as info:
        parse_workload({"recipe": "broken.yaml", "requests": 5}, "scen.yaml", tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'broken.yaml'}: line ")


def test_recipe_paths_are_relative_to_the_recipe(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "pairs.csv").write_text("prompt_tokens,output_tokens\n11,12\n")
    (tmp_path / "lib" / "mine.yaml").write_text("name: mine\nlengths: {path: pairs.csv}\n")
    data = {"recipe": "lib/mine.yaml", "requests": 3, "arrival": {"process": "burst"}}
    a = generate(parse_workload(data, "s.yaml", tmp_path), 0, tmp_path)
    assert list(a.prompt_tokens) == [11, 11, 11]


RECIPE_STATS = [
    # recipe, statistic, expected prompt, expected output, relative tolerance
    ("sharegpt", np.mean, 161.31, 337.99, 0.02),
    ("alpaca", np.mean, 19.31, 58.45, 0.02),
    ("arxiv-summarization", np.median, 7827, 228, 0.02),
    ("lmsys-chat", np.median, 417, 141, 0.03),
    ("azure-conv-2023", np.median, 1020, 129, 0.05),
    ("azure-code-2023", np.median, 1469, 13, 0.05),
]


@pytest.mark.parametrize(("name", "stat", "prompt", "output", "rel"), RECIPE_STATS)
def test_shipped_recipes_reproduce_their_sources(name, stat, prompt, output, rel):
    data = {"recipe": name, "requests": 100_000, "arrival": {"process": "poisson", "rate": 5}}
    a = generate(parse_workload(data, "s.yaml", ROOT / "scenarios"), 0, ROOT / "scenarios")
    assert stat(a.prompt_tokens) == pytest.approx(prompt, rel=rel)
    assert stat(a.output_tokens) == pytest.approx(output, rel=rel)


def test_replay_recipe():
    data = {"recipe": "azure-conv-2023-first-10min", "trace": {"time_scale": 2.0}}
    a = generate(parse_workload(data, "s.yaml", ROOT), 0, ROOT)
    assert len(a) == 2867 and a.arrival_s.max() < 300
