"""Tiered KV (scheduler.kv_tiers, sim.engine.prefix_cache): evicted prefix blocks go to
host DRAM, then disk, and come back on a hit over the links swaps use; tiers off
changes nothing; capacities hold; tokens and blocks conserved."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import simpy

from sim.engine.kv_cache import BlockManager
from sim.engine.replica import VirtualEngine
from sim.engine.resources import Links
from sim.errors import LlmsimError
from sim.plan import load_scenario
from sim.plan.deploy import deploy
from sim.results.run import simulate
from tests.test_engine import check_invariants

SCENARIO = Path(__file__).parent.parent / "scenarios" / "multi-turn-chat-tiered-kv.yaml"


def tiered(kv_tiers, **workload):
    s = load_scenario(SCENARIO)
    sched = {**s.scheduler.params, "policy": s.scheduler.policy, "kv_tiers": kv_tiers}
    w = s.workload.model_dump(by_alias=True, exclude_none=True)
    w.update(requests=60, **workload)
    return s.model_copy(
        update={
            "scheduler": type(s.scheduler).model_validate(sched),
            "workload": type(s.workload).model_validate(w),
        }
    )


def test_tiers_off_changes_nothing_bit_for_bit():
    off = simulate(tiered(None)).summary.to_dict()
    assert "tiers" not in off["prefix_cache"]
    # (the shipped goldens, none with kv_tiers, pin the rest bit for bit)
    on = simulate(tiered({"host": 8e9})).summary.to_dict()
    assert on["prefix_cache"]["tiers"]["host"]["hit_blocks"] > 0
    assert on["prefix_cache"]["hit_rate_tokens"] > off["prefix_cache"]["hit_rate_tokens"]


@pytest.mark.parametrize("kv_tiers", [{"host": 2e9}, {"host": 1e9, "disk": 20e9}])
def test_capacities_hold_and_tokens_and_blocks_are_conserved(kv_tiers):
    res = simulate(tiered(kv_tiers))
    check_invariants(res)
    tiers = res.summary.prefix_cache.tiers
    for name, t in tiers.items():
        assert t["peak_bytes"] <= t["capacity_bytes"], name
        assert t["reload_bytes"] <= t["written_bytes"] + 1e-6, name
    pc = res.summary.prefix_cache
    req = res.requests
    done = req[req["status"] == "finished"]
    assert pc.cached_prefill_tokens + pc.computed_prefill_tokens == int(done["prompt_tokens"].sum())
    # reloaded tokens are cached prompt tokens, not computed ones
    assert sum(t["hit_tokens"] for t in tiers.values()) <= pc.cached_prefill_tokens


def test_cache_tiers_keep_chains_and_capacities():
    """Unit: evictions fill host then disk, LRU tails first; a hit reloads the run."""
    blocks = BlockManager(10, 16)
    cache = blocks.enable_prefix_cache()
    cache.enable_tiers([4, 3])
    for p in range(3):  # three prefixes of 4 blocks, referenced and let go
        blocks.allocate(4)
        blocks.release(4)
        cache.insert(p, 4)
    blocks.allocate(10)  # evicts all 12 cached blocks: 4 to host, 3 to disk, rest dropped
    assert cache.resident == {}
    assert cache.tier_used == [4, 3]
    assert max(cache.tier_peak) <= 4 and cache.tier_peak[1] <= 3
    assert cache.lower[2] == [4, 0]  # most recent prefix in host DRAM
    assert cache.lower[1] == [0, 3]  # prefix 1's first 3 blocks on disk, its tail dropped
    assert 0 not in cache.lower
    blocks.release(10)
    assert cache.lower_hits(2, 3) == [3]
    cache.reload(2, [3])
    cache.ref(2, 3)
    assert cache.resident[2] == 3 and cache.lower[2] == [1, 0]
    assert cache.hits_tier == [3, 0]
    assert ("reload", 0, 3) in cache.pending


def _engine(kv_tiers):
    """A virtual engine of the scenario's replica on a bare SimPy environment."""
    s = tiered(kv_tiers)
    d = deploy(s)
    env = simpy.Environment()
    links = Links(env)
    plan = d.replicas[0]
    blocks = BlockManager(100, 16)
    cache = blocks.enable_prefix_cache()
    cache.enable_tiers([50, 50][: 1 + (plan.disk_read is not None)])
    eng = VirtualEngine.__new__(VirtualEngine)
    eng.env = env
    eng.replica = SimpleNamespace(links=links, plan=plan, stages=[])
    eng.policy = SimpleNamespace(ctx=SimpleNamespace(block_bytes=5e6))
    eng.state = SimpleNamespace(blocks=blocks)
    eng.tiers = cache
    eng.reload_bytes = [0.0] * len(cache.caps)
    eng.reload_s = [0.0] * len(cache.caps)
    return eng, env, links, plan


def test_a_host_hit_costs_its_bytes_over_pcie_and_holds_the_link():
    eng, env, links, plan = _engine({"host": 8e9})
    size = 7 * 5e6
    route = plan.host.route
    closed = route.latency_s + size / route.bandwidth_bytes_per_s
    assert plan.host.seconds(size) == closed
    eng.tiers.pending.append(("reload", 0, 7))
    swap_done = []

    def reload():
        yield from eng._tier_copies()

    def swap():  # a swap on the same link at the same moment queues behind the reload
        yield env.timeout(0)
        yield from links.transfer(plan.host, size)
        swap_done.append(env.now)

    r = env.process(reload())
    env.process(swap())
    env.run()
    assert r.processed
    assert eng.reload_s[0] == closed
    assert eng.reload_bytes[0] == size
    assert swap_done == [pytest.approx(2 * closed, rel=1e-12)]
    assert links.busy[plan.host.edges[0]] == pytest.approx(2 * closed, rel=1e-12)


def test_a_disk_hit_crosses_nvme_then_pcie():
    eng, env, _links, plan = _engine({"host": 8e9, "disk": 20e9})
    eng.tiers.pending.append(("reload", 1, 2))
    size = 2 * 5e6
    env.process(eng._tier_copies())
    env.run()
    assert eng.reload_s[1] == pytest.approx(
        plan.disk_read.seconds(size) + plan.host.seconds(size), rel=1e-12
    )


@pytest.mark.parametrize(
    "kv_tiers, key",
    [
        ({"host": "1 TB"}, "scheduler.kv_tiers.host"),
        ({"host": "1 GB", "disk": "10 TB"}, "scheduler.kv_tiers.disk"),
    ],
)
def test_bad_tier_settings_are_one_line_errors(kv_tiers, key):
    with pytest.raises(LlmsimError) as info:
        simulate(tiered(kv_tiers))
    assert "\n" not in str(info.value)
    assert key in str(info.value)


def test_a_zero_host_tier_is_a_one_line_error(tmp_path):
    text = SCENARIO.read_text().replace("kv_tiers: {host: 8 GB}", "kv_tiers: {host: 0}")
    path = tmp_path / "multi-turn-chat-tiered-kv.yaml"
    path.write_text(text)
    with pytest.raises(LlmsimError) as info:
        load_scenario(path)
    assert "\n" not in str(info.value) and "kv_tiers" in str(info.value)


def test_tiers_need_prefix_caching(tmp_path):
    text = SCENARIO.read_text().replace("prefix_caching: true", "prefix_caching: false")
    path = tmp_path / "multi-turn-chat-tiered-kv.yaml"
    path.write_text(text)
    with pytest.raises(LlmsimError) as info:
        load_scenario(path)
    assert "\n" not in str(info.value) and "prefix_caching" in str(info.value)
