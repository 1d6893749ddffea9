"""Multi-turn sessions (sim.workload.sessions and the closed loop in sim.engine.run):
turns ordered and released a think time after the previous answer, each prompt its
whole history, tokens conserved, same seed same results, session traces replayed in
order and their bad rows one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from sim.errors import LlmsimError
from sim.results.run import simulate
from sim.workload.arrivals import generate
from tests.scenarios_for_tests import make
from tests.test_engine import BASE, check_invariants

SESSIONS = {
    "turns": {"dist": "uniform", "min": 1, "max": 5},
    "think_time": {"dist": "exponential", "mean": "2 s"},
    "message": {"dist": "uniform", "min": 20, "max": 100},
}


def scenario(caching: bool = False, **changes):
    changes.setdefault("scheduler", {"policy": "vllm", "prefix_caching": caching})
    return make(BASE, workload__sessions=SESSIONS, workload__requests=60, **changes)


def _check_sessions(req) -> None:
    for _, g in req.groupby("session_id"):
        g = g.sort_values("request")
        assert g["turn"].tolist() == list(range(len(g)))
        # each later turn arrives its think time after the previous one finished
        prev_finish = g["finish_s"].to_numpy()[:-1]
        arrive = g["arrival_s"].to_numpy()[1:]
        np.testing.assert_allclose(arrive, prev_finish + g["think_s"].to_numpy()[1:], rtol=1e-12)
        assert (arrive >= prev_finish).all()
        # each prompt is the previous prompt, its answer and a new message
        prompt, output = g["prompt_tokens"].to_numpy(), g["output_tokens"].to_numpy()
        assert (prompt[1:] > prompt[:-1] + output[:-1]).all()


@pytest.mark.parametrize("caching", [False, True])
def test_turns_are_ordered_released_after_think_time_and_carry_their_history(caching):
    res = simulate(scenario(caching))
    check_invariants(res)
    req = res.requests
    assert (req["status"] == "finished").all()
    _check_sessions(req)
    s = res.summary.to_dict()["sessions"]
    assert s["sessions"] == 60 and s["finished"] == 60
    assert s["turns_mean"] == pytest.approx(len(req) / 60)
    assert res.summary.requests == len(req)  # requests count turns


def test_history_is_exactly_previous_prompt_output_and_message():
    a = generate(scenario().workload, 3)
    plain = generate(make(BASE, workload__requests=60).workload, 3)
    assert a.session_id is not None and a.turn is not None
    first = a.turn == 0
    # first turns are the requests of the same workload without sessions
    np.testing.assert_array_equal(a.arrival_s[first], plain.arrival_s)
    np.testing.assert_array_equal(a.prompt_tokens[first], plain.prompt_tokens)
    np.testing.assert_array_equal(a.output_tokens[first], plain.output_tokens)
    later = np.flatnonzero(~first)
    message = a.prompt_tokens[later] - a.prompt_tokens[later - 1] - a.output_tokens[later - 1]
    assert message.min() >= 20 and message.max() <= 100
    # the session's history is its prefix
    np.testing.assert_array_equal(a.prefix_id, a.session_id)
    np.testing.assert_array_equal(a.prefix_tokens, a.prompt_tokens)


def test_caching_finds_the_previous_turns_prompt():
    res = simulate(scenario(True))
    req = res.requests
    later = req[req["turn"] > 0]
    assert (req.loc[req["turn"] == 0, "cached_tokens"] == 0).all()
    assert (later["cached_tokens"] > 0).mean() > 0.5
    off = simulate(scenario(False)).summary.to_dict()["sessions"]
    on = res.summary.to_dict()["sessions"]
    assert on["follow_up_ttft_s"]["mean"] < off["follow_up_ttft_s"]["mean"]


def test_same_seed_same_results():
    a, b = simulate(scenario(True)), simulate(scenario(True))
    assert a.summary.to_dict() == b.summary.to_dict()
    assert a.requests.equals(b.requests)
    c = simulate(scenario(True, seed=1))
    assert c.summary.to_dict() != a.summary.to_dict()


def test_static_batching_does_not_wait_for_turns_that_wait_on_it():
    s = scenario(scheduler={"policy": "static", "batch_size": 32})
    res = simulate(s)
    check_invariants(res)
    assert (res.requests["status"] == "finished").all()


TRACE = """\
session_id,turn,arrival_s,think_s,message_tokens,output_tokens
7,0,0.5,,100,20
7,1,,1.5,30,40
7,2,,0.25,10,5
3,0,0.0,,200,10
3,1,,3,50,60
"""


def test_a_session_trace_replays_in_order(tmp_path):
    path = tmp_path / "sessions.csv"
    path.write_text(TRACE)
    s = make(BASE, workload={"trace": {"path": str(path)}})
    res = simulate(s)
    check_invariants(res)
    req = res.requests
    _check_sessions(req)
    # sessions ordered by start: session 3 (t = 0) first, then session 7
    assert req["turn"].tolist() == [0, 1, 0, 1, 2]
    assert req["prompt_tokens"].tolist() == [200, 260, 100, 150, 200]
    assert req["think_s"].tolist() == [0.0, 3.0, 0.0, 1.5, 0.25]
    assert req["arrival_s"].tolist()[:3:2] == [0.0, 0.5]


@pytest.mark.parametrize(
    "row, line, message",
    [
        ("7,2,,1,30,40", 4, "turn: expected turn 1, got 2"),
        ("8,1,,1,30,40", 4, "turn: expected turn 0 (a new session), got 1"),
        ("7,1,,x,30,40", 4, "think_s: expected a number of seconds >= 0, got 'x'"),
        ("7,1,,1,0,40", 4, "message_tokens: expected a positive integer, got 0"),
        ("a,0,1,,30,40", 4, "session_id: expected an integer >= 0, got 'a'"),
    ],
)
def test_bad_session_rows_are_one_line_errors(tmp_path, row, line, message):
    path = tmp_path / "s.csv"
    path.write_text(TRACE.splitlines()[0] + "\n7,0,0.5,,100,20\n# a comment\n" + row + "\n")
    with pytest.raises(LlmsimError) as err:
        generate(make(BASE, workload={"trace": {"path": str(path)}}).workload, 0)
    text = str(err.value)
    assert "\n" not in text
    assert str(path) in text and f"line {line}: {message}" in text


def test_a_session_that_comes_back_later_is_an_error(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(TRACE + "7,0,4,,10,10\n")
    with pytest.raises(LlmsimError, match=r"line 7: session_id: session 7 appears again"):
        generate(make(BASE, workload={"trace": {"path": str(path)}}).workload, 0)


def test_sessions_reject_what_they_do_not_support():
    with pytest.raises(LlmsimError, match="prefixes"):
        scenario(workload__prefixes=[{"tokens": 100, "share": 0.5}])


def test_a_session_trace_without_its_columns_is_an_error(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("session_id,turn,arrival_s,prompt_tokens,output_tokens\n1,0,0,5,5\n")
    with pytest.raises(LlmsimError, match="missing think_s,message_tokens"):
        generate(make(BASE, workload={"trace": {"path": str(path)}}).workload, 0)


def test_the_shipped_conversation_scenario_shows_what_caching_saves():
    """scenarios/multi-turn-chat-prefix-cache.yaml (README, its comment): caching the
    history cuts the follow-up turns' TTFT, with most prompt tokens found cached."""
    from pathlib import Path

    from sim.plan import load_scenario

    path = Path(__file__).resolve().parents[1] / "scenarios" / "multi-turn-chat-prefix-cache.yaml"
    on = simulate(load_scenario(path)).summary.to_dict()
    off = simulate(load_scenario(path, ["scheduler.prefix_caching=false"])).summary.to_dict()
    assert on["sessions"]["sessions"] == off["sessions"]["sessions"] == 300
    # two conversations outgrow Llama-2's 4,096-token context either way
    assert on["sessions"]["finished"] == off["sessions"]["finished"] == 298
    assert on["prefix_cache"]["hit_rate_tokens"] > 0.6
    p50 = lambda s: s["sessions"]["follow_up_ttft_s"]["p50"]  # noqa: E731
    assert p50(on) < 0.5 * p50(off)
