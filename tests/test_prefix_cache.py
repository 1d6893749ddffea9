"""Prefix caching (sim.engine.prefix_cache), shared-prefix workloads and cache-aware
routing: no change without shared prefixes, prefill falls to the uncached tail, blocks
conserved under sharing, one prefix kept on one replica."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.engine.kv_cache import BlockManager, OutOfBlocks
from sim.errors import LlmsimError
from sim.results.run import simulate
from sim.workload.arrivals import generate
from tests.scenarios_for_tests import make
from tests.test_engine import BASE, check_invariants


def scenario(**changes):
    return make(BASE, **changes)


def _without_cache(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k not in ("prefix_cache", "scenario")}


@pytest.mark.parametrize(
    "sched", [{"policy": "vllm"}, {"policy": "sarathi", "chunk_size": 256, "max_num_seqs": 64}]
)
def test_caching_without_shared_prefixes_changes_nothing_bit_for_bit(sched):
    off = simulate(scenario(scheduler=sched)).summary
    on = simulate(scenario(scheduler={**sched, "prefix_caching": True})).summary
    assert _without_cache(on.to_dict()) == _without_cache(off.to_dict())
    assert off.prefix_cache is None
    assert on.metric("prefix_cache.hit_rate_tokens") == 0.0
    assert on.metric("prefix_cache.hit_rate_requests") == 0.0
    assert on.metric("prefix_cache.cached_prefill_tokens") == 0


def test_prefixes_leave_the_other_draws_alone():
    plain = scenario().workload
    shared = scenario(workload__prefixes=[{"tokens": 500, "share": 0.5, "count": 3}]).workload
    a, b = generate(plain, 7), generate(shared, 7)
    assert a.prefix_id is None
    assert b.prefix_id is not None and b.prefix_tokens is not None
    np.testing.assert_array_equal(a.arrival_s, b.arrival_s)
    np.testing.assert_array_equal(a.output_tokens, b.output_tokens)
    np.testing.assert_array_equal(a.prompt_tokens + b.prefix_tokens, b.prompt_tokens)
    assert set(b.prefix_id.tolist()) == {-1, 0, 1, 2}
    assert set(b.prefix_tokens[b.prefix_id >= 0].tolist()) == {500}
    assert 0.4 < (b.prefix_id >= 0).mean() < 0.6


@pytest.mark.parametrize("policy", ["vllm", "sarathi"])
def test_identical_requests_prefill_only_their_uncached_tail(policy):
    s = scenario(
        scheduler={"policy": policy, "prefix_caching": True},
        workload__requests=5,
        workload__arrival={"process": "constant", "rate": 1.0},  # each done before the next
        workload__prompt={"dist": "fixed", "value": 9},
        workload__output={"dist": "fixed", "value": 4},
        workload__prefixes=[{"tokens": 1000, "share": 1.0}],
    )
    res = simulate(s)
    prompt = 1009
    cached = (1000 // 16) * 16  # the prefix's full blocks
    assert res.requests["cached_tokens"].tolist() == [0] + [cached] * 4
    prefill = res.iterations.loc[res.iterations["prefill_tokens"] > 0, "prefill_tokens"]
    assert int(prefill.sum()) == prompt + 4 * (prompt - cached)
    if policy == "vllm":  # one prefill iteration per request
        assert prefill.tolist() == [prompt] + [prompt - cached] * 4
    pc = res.summary.prefix_cache
    assert pc is not None
    assert pc.cached_prefill_tokens == 4 * cached
    assert pc.computed_prefill_tokens == 5 * prompt - 4 * cached
    assert pc.hit_rate_requests == pytest.approx(0.8)
    # and the first token comes sooner than without the cache
    off = simulate(s.model_copy(update={"scheduler": scenario().scheduler}))
    assert res.requests["first_token_s"].iloc[1] - 1.0 < off.requests["first_token_s"].iloc[1] - 1.0


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=st.sampled_from(["vllm", "sarathi"]),
    seed=st.integers(0, 10_000),
    rate=st.floats(1.0, 60.0),
    util=st.sampled_from([0.9, 0.2, 0.19]),
    count=st.integers(1, 40),
    tokens=st.integers(1, 2000),
    share=st.floats(0.1, 1.0),
    swap=st.booleans(),
    replicas=st.integers(1, 3),
)
def test_sharing_conserves_tokens_and_blocks(
    policy, seed, rate, util, count, tokens, share, swap, replicas
):
    params = {"chunk_size": 512, "max_num_seqs": 64} if policy == "sarathi" else {}
    s = scenario(
        seed=seed,
        scheduler={
            "policy": policy,
            "prefix_caching": True,
            "gpu_memory_utilization": util,
            "preemption": "swap" if swap else "recompute",
            **params,
        },
        router={"policy": "cache-aware"},
        parallel={"tp": 1, "pp": 1, "replicas": replicas},
        workload__requests=120,
        workload__arrival={"process": "poisson", "rate": rate},
        workload__prompt={"dist": "uniform", "min": 1, "max": 1500},
        workload__output={"dist": "uniform", "min": 1, "max": 400},
        workload__prefixes=[{"tokens": tokens, "share": share, "count": count}],
    )
    res = simulate(s)
    check_invariants(res)
    done = res.requests[res.requests["status"] == "finished"]
    # a hit never covers the last prompt token, nor more than the prefix's full blocks
    assert (done["cached_tokens"] < done["prompt_tokens"]).all()
    assert (done["cached_tokens"] <= (tokens // 16) * 16).all()
    assert (done.loc[done["prefix_id"] < 0, "cached_tokens"] == 0).all()


@settings(max_examples=200, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3), st.integers(1, 9))))
def test_no_cached_block_is_evicted_while_referenced(ops):
    blocks = BlockManager(40, 16)
    cache = blocks.enable_prefix_cache()
    held: list[tuple[int, int, int]] = []  # (prefix, shared, own) per live request
    for op, prefix, n in ops:
        if op <= 1:  # a request of `prefix` admitted: hits, then n blocks of its own
            hits = cache.hits(prefix, n)
            if blocks.free < n + cache.cost(prefix, hits):
                continue
            cache.ref(prefix, hits)
            blocks.allocate(n)
            held.append((prefix, hits, n))
        elif op == 2 and held:  # its prefill computed n full prefix blocks
            prefix, shared, own = held.pop()
            full = min(n, own)
            if full > shared:
                blocks.release(full - shared)
                cache.unref(prefix, shared)
                cache.insert(prefix, full)
                cache.ref(prefix, full)
                shared, own = full, own - (full - shared)
            held.append((prefix, shared, own))
        elif op == 3 and held:  # a request leaves
            prefix, shared, own = held.pop(0)
            blocks.release(own)
            cache.unref(prefix, shared)
        elif op == 4:
            if n > blocks.free:
                with pytest.raises(OutOfBlocks):
                    blocks.allocate(n)
            else:
                blocks.allocate(n)
                held.append((-1, 0, n))
        for p in {p for p, _, _ in held if p >= 0}:
            assert cache.resident.get(p, 0) >= cache.reach(p)  # referenced blocks stay
        assert blocks.used == sum(own for _, _, own in held) + sum(
            cache.reach(p) for p in cache.resident
        )
        assert blocks.used + cache.idle <= blocks.total
        assert cache.idle == sum(cache.resident[p] - cache.reach(p) for p in cache.resident)
    for prefix, shared, own in held:
        blocks.release(own)
        cache.unref(prefix, shared)
    assert blocks.used == 0 and blocks.tally.used == 0


def test_cache_aware_routing_keeps_each_prefix_on_one_replica():
    def run(router):
        return simulate(
            scenario(
                scheduler={"policy": "vllm", "prefix_caching": True},
                router={"policy": router},
                parallel={"tp": 1, "pp": 1, "replicas": 4},
                workload__requests=400,
                workload__arrival={"process": "poisson", "rate": 8.0},
                workload__prompt={"dist": "uniform", "min": 16, "max": 256},
                workload__prefixes=[{"tokens": 1500, "share": 1.0, "count": 8}],
            )
        )

    rr, ca = run("round-robin"), run("cache-aware")
    replicas = ca.requests.groupby("prefix_id")["replica"].nunique()
    assert (replicas == 1).all()
    assert ca.requests["replica"].nunique() == 4  # the prefixes are spread over them
    hit = "prefix_cache.hit_rate_tokens"
    assert ca.summary.metric(hit) > rr.summary.metric(hit)
    assert ca.summary.metric("prefix_cache.hit_rate_requests") == pytest.approx(392 / 400)


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"scheduler": {"policy": "orca", "prefix_caching": True}}, "scheduler.prefix_caching"),
        (
            {"workload__prefixes": [{"tokens": 10, "share": 0.7}, {"tokens": 5, "share": 0.4}]},
            "workload.prefixes",
        ),
        ({"workload__prefixes": [{"tokens": 10, "share": 0}]}, "workload.prefixes.0.share"),
    ],
)
def test_bad_prefix_settings_are_one_line_errors(changes, key):
    with pytest.raises(LlmsimError) as err:
        scenario(**changes)
        simulate(scenario(**changes))
    assert key in str(err.value)
    assert "\n" not in str(err.value)
