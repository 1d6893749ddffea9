"""Hostile and careless input: duplicate keys, alias bombs, numbers past what int64 or
the simulator holds, huge values in error messages. Each is one short error line naming
the file (and line or key), exit status 2, never a traceback, never a minutes-long run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sim.errors import LlmsimError
from sim.spec import catalog, yamlio
from sim.spec.base import MAX_SHOWN
from sim.spec.workload import MAX_TOKENS, parse_workload
from sim.workload.arrivals import generate
from sim.workload.traces import load_trace
from tests.cli_helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "scenarios" / "quickstart.yaml"
WORKLOAD = (
    "workload:\n  requests: 4\n  arrival: {process: burst}\n"
    "  prompt: {dist: fixed, value: 8}\n  output: {dist: fixed, value: 8}\n"
)
SCENARIO = "name: s\nmodel: llama-2-7b\ncluster: dgx-a100\n" + WORKLOAD


def one_line_error(capsys, *argv: str) -> str:
    code, _, err = run_cli(capsys, *argv)
    assert code == 2, err
    assert err.startswith("llmsim: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


def billion_laughs(levels: int = 9) -> str:
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for prev, name in zip("abcdefghi", "bcdefghij"[: levels - 1], strict=False):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ duplicate keys


def test_duplicate_top_level_key_names_file_line_and_key(capsys, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO + "model: llama-2-70b\n")  # the last one used to win
    err = one_line_error(capsys, "run", str(path))
    line = SCENARIO.count("\n") + 1
    assert f"{path}: model: line {line}: duplicate key (first given on line 2)" in err


def test_duplicate_nested_key_names_its_path(capsys, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.replace("{process: burst}", "{process: burst, process: poisson}"))
    err = one_line_error(capsys, "run", str(path))
    assert f"{path}: workload.arrival.process: line 6: duplicate key" in err


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\nb: 2\na: 3\n",
        "a: 1\n'a': 2\n",  # quoting does not make another key
        "1: x\n0x1: y\n",  # one integer written two ways
        "- {a: 1, a: 1}\n",  # inside a list, even with the same value
        "x: &m {a: 1}\ny:\n  <<: *m\n  b: 2\n  b: 3\n",
    ],
)
def test_duplicates_anywhere_are_errors(tmp_path, text):
    path = tmp_path / "d.yaml"
    path.write_text(text)
    with pytest.raises(LlmsimError, match=r"line \d+: duplicate key \(first given on line \d+\)"):
        yamlio.read_yaml(path)


def test_merge_keys_may_still_be_overridden(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("base: &b {a: 1, c: 2}\nx:\n  <<: *b\n  a: 5\n")
    assert yamlio.read_yaml(path) == {"base": {"a": 1, "c": 2}, "x": {"a": 5, "c": 2}}


def test_duplicate_key_in_a_catalog_file_and_a_recipe(tmp_path):
    device = tmp_path / "gpu.yaml"
    device.write_text("name: g\nkind: gpu\nmemory_bytes: 1 GB\nmemory_bytes: 2 GB\n")
    with pytest.raises(LlmsimError, match=r"gpu.yaml: memory_bytes: line 4: duplicate key"):
        catalog.load_device(str(device))
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("name: mine\nrequests: 3\nrequests: 4\n")
    # A recipe's keys are named as the workload's (its file says where they are).
    with pytest.raises(LlmsimError, match=r"mine.yaml: workload.requests: line 3: duplicate key"):
        parse_workload({"recipe": "mine.yaml"}, "scen.yaml", base_dir=tmp_path)


def test_duplicate_key_in_a_set_value(capsys):
    err = one_line_error(capsys, "run", str(QUICK), "--set", "slo={ttft: 1 s, ttft: 2 s}")
    assert "slo.ttft: line 1: duplicate key" in err and "(in --set)" in err


def test_the_checked_reader_reads_what_yaml_reads():
    for path in [*ROOT.glob("scenarios/*.yaml"), *ROOT.glob("hardware/calibration/*.yaml")]:
        text = path.read_text()
        assert yamlio.load_yaml_text(text) == yaml.safe_load(text), path


# --------------------------------------------------------------------------- alias bombs


def test_billion_laughs_is_refused_at_once(capsys, tmp_path):
    path = tmp_path / "lol.yaml"
    text = billion_laughs() + SCENARIO.replace("{dist: fixed, value: 8}", "*i", 1)
    assert len(text) < 1500
    path.write_text(text)
    # It used to run for minutes: refused before anything is built from the document.
    err = one_line_error(capsys, "run", str(path))
    assert f"{path}: aliases expand this document" in err and "at most 100,000" in err
    assert len(err) < 300


def test_alias_bomb_in_a_set_value(capsys):
    bomb = "{" + billion_laughs().strip().replace("\n", ", ") + "}"
    err = one_line_error(capsys, "run", str(QUICK), "--set", f"description={bomb}")
    assert "aliases expand this document" in err and len(err) < 400


def test_recursive_alias_is_an_error(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("a: 1\nb: &x\n  - *x\n")
    with pytest.raises(LlmsimError) as info:
        yamlio.read_yaml(path)
    assert str(info.value) == (
        f"{path}: b.0: an alias of the list anchored on line 2, inside that list "
        "(a recursive alias)"
    )


def test_modest_aliases_are_fine(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("x: &v {dist: fixed, value: 8}\nprompt: *v\noutput: *v\n")
    assert yamlio.read_yaml(path)["output"] == {"dist": "fixed", "value": 8}


# ---------------------------------------------------- values YAML cannot turn into Python


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1" * 5000, "as int: 5000 digits are too many"),
        ("2023-13-45", "cannot read '2023-13-45' as timestamp: month must be in 1..12"),
    ],
)
def test_unconvertible_scalars_name_the_line(capsys, tmp_path, value, message):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO + f"description: {value}\n")
    err = one_line_error(capsys, "run", str(path))
    assert f"{path}: line {SCENARIO.count(chr(10)) + 1}: malformed YAML: " in err
    assert message in err and len(err) < 300


# ------------------------------------------------------------------- long values, bounded


@pytest.mark.parametrize(
    "change",
    [
        ("model: llama-2-7b", "model: " + "x" * 5000),  # a name the OS refuses as a path
        ("model: llama-2-7b", "model: [" + ", ".join(["1"] * 3000) + "]"),
        ("cluster: dgx-a100", "cluster: " + "y" * 5000),
        ("name: s", "name: s\nslo: {ttft: " + "z" * 5000 + "}"),  # parsed by sim.units
        ("name: s", "name: s\nprecision: {weights: " + "w" * 5000 + "}"),
        ("name: s", "name: s\nrouter: {policy: " + "r" * 5000 + "}"),
        ("name: s", "name: s\n" + "k" * 5000 + ": 1"),  # an unknown key
        ("prompt: {dist: fixed, value: 8}", "prompt: {dist: " + "d" * 5000 + "}"),
        ("  requests: 4\n", "  requests: 4\n  recipe: " + "q" * 5000 + "\n"),
    ],
)
def test_huge_values_are_cut_in_the_one_line(capsys, tmp_path, change):
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.replace(*change))
    err = one_line_error(capsys, "run", str(path))
    assert len(err) < 1200, err[:300]
    assert "x" * (MAX_SHOWN + 1) not in err


def test_a_huge_scenario_name_on_the_command_line(capsys):
    err = one_line_error(capsys, "run", "s" * 5000)
    assert "file not found" in err and len(err) < 200


# --------------------------------------------------------------- token counts and int64


def test_a_23_digit_token_count_in_a_trace(capsys, tmp_path):
    """It became INT64_MIN and crashed inside SimPy."""
    trace = tmp_path / "t.csv"
    trace.write_text(
        "arrival_s,prompt_tokens,output_tokens\n0.0,10,5\n0.5,12345678901234567890123,5\n"
    )
    with pytest.raises(LlmsimError) as info:
        load_trace(trace)
    assert str(info.value) == (
        f"{trace}: line 3: prompt_tokens: expected a token count <= 2,147,483,647, "
        "got 12345678901234567890123"
    )
    path = tmp_path / "s.yaml"
    path.write_text(
        SCENARIO.replace(WORKLOAD, f"workload: {{trace: {{path: {json.dumps(str(trace))}}}}}\n")
    )
    err = one_line_error(capsys, "run", str(path))
    assert f"{trace}: line 3: prompt_tokens: expected a token count" in err


@pytest.mark.parametrize(
    "count", ["18446744073709551615", "9223372036854775807", "2147483648", "1e30"]
)
def test_token_counts_past_the_bound_in_length_files(tmp_path, count):
    lengths = tmp_path / "l.csv"
    lengths.write_text(f"prompt_tokens,output_tokens\n3,4\n5,{count}\n")
    data = {
        "requests": 4,
        "arrival": {"process": "burst"},
        "prompt": {"dist": "empirical", "path": str(lengths), "column": "output_tokens"},
        "output": {"dist": "fixed", "value": 2},
    }
    with pytest.raises(LlmsimError, match=r"l.csv: line 3: output_tokens: expected a token count"):
        generate(parse_workload(data, "scen.yaml"), 0, tmp_path)
    with pytest.raises(LlmsimError, match=r"l.csv: line 3: output_tokens: expected a token count"):
        generate(
            parse_workload(
                {**data, "lengths": {"path": str(lengths)}, "prompt": None, "output": None},
                "scen.yaml",
            ),
            0,
            tmp_path,
        )


def test_the_bound_itself_is_a_valid_count(tmp_path):
    trace = tmp_path / "t.csv"
    trace.write_text(f"arrival_s,prompt_tokens,output_tokens\n0,{MAX_TOKENS},1\n")
    assert load_trace(trace)["prompt_tokens"].tolist() == [MAX_TOKENS]


@pytest.mark.parametrize(
    ("key", "dist"),
    [
        ("workload.prompt.value", {"dist": "fixed", "value": 2**63}),
        ("workload.prompt.max", {"dist": "uniform", "min": 1, "max": 2**64}),
        ("workload.prompt.min", {"dist": "normal", "mean": 10, "std": 1, "min": 2**40}),
        ("workload.prompt.max", {"dist": "zipf", "a": 1.1, "max": 2**70}),
    ],
)
def test_lengths_past_the_bound_in_a_spec(capsys, tmp_path, key, dist):
    """`value: 2**63` was an OverflowError traceback when drawn."""
    path = tmp_path / "s.yaml"
    path.write_text(SCENARIO.replace("{dist: fixed, value: 8}", json.dumps(dist), 1))
    err = one_line_error(capsys, "run", str(path))
    assert f"{path}: {key}: must be <= 2147483647, got " in err


@pytest.mark.parametrize(
    ("dist", "key"),
    [
        ({"dist": "normal", "mean": 1e12, "std": 10}, "workload.prompt.mean"),
        ({"dist": "lognormal", "median": 1e15, "sigma": 0.5}, "workload.prompt.median"),
    ],
)
def test_an_unbounded_law_above_the_bound_is_an_error(dist, key):
    data = {
        "requests": 4,
        "arrival": {"process": "burst"},
        "prompt": dist,
        "output": {"dist": "fixed", "value": 2},
    }
    with pytest.raises(LlmsimError, match=rf"scen.yaml: {key}: the distribution lies almost"):
        parse_workload(data, "scen.yaml")


def test_an_unbounded_law_is_cut_at_the_bound():
    data = {
        "requests": 1000,
        "arrival": {"process": "burst"},
        "prompt": {"dist": "lognormal", "median": 1e9, "sigma": 2},
        "output": {"dist": "fixed", "value": 2},
    }
    prompts = generate(parse_workload(data, "scen.yaml"), 0).prompt_tokens
    assert prompts.max() <= MAX_TOKENS and prompts.min() >= 1


@pytest.mark.parametrize("key", ["max_prompt", "max_output"])
def test_length_caps_past_the_bound(key):
    data = {"trace": {"path": "t.csv", key: 2**63}}
    with pytest.raises(LlmsimError, match=rf"workload.trace.{key}: must be <= 2147483647"):
        parse_workload(data, "scen.yaml")
