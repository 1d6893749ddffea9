"""Collectives over the topology: algorithm choice, torus dimension-ordered collectives,
sub-grids, and links shared by concurrent transfers."""

from __future__ import annotations

import functools
import math

import pytest
import simpy

from sim.cost.collectives import CollectiveModel
from sim.cost.topology import Cluster, build_cluster
from sim.cost.torus import torus_box
from sim.errors import LlmsimError
from sim.spec import catalog

ICI_BYTES_PER_S = 45e9  # hardware/clusters/tpu-v4-*.yaml: one ICI link, per direction
ICI_LATENCY_S = 1e-6


@functools.cache
def cluster(name: str) -> Cluster:
    return build_cluster(catalog.load_cluster(name))


@functools.cache
def torus(dims: tuple[int, ...], wraparound: bool = True) -> Cluster:
    """A TPU v4 slice of any shape, from the 4x4x8 catalog entry."""
    spec = catalog.load_cluster("tpu-v4-4x4x8")
    assert spec.torus is not None
    shape = spec.torus.model_copy(update={"dims": dims, "wraparound": wraparound})
    name = "tpu-v4-" + "x".join(map(str, dims))
    return build_cluster(spec.model_copy(update={"name": name, "torus": shape}))


# ---------------------------------------------------------------- algorithm choice


def test_tree_wins_small_messages_ring_wins_large_across_nodes():
    col = CollectiveModel(cluster("dgx-h100-x8"), range(64))
    small, large = col.all_reduce_algorithms(4096), col.all_reduce_algorithms(1 << 30)
    assert small["tree"] < small["ring"]
    assert large["ring"] < large["tree"]
    assert col.all_reduce_algorithm(4096) == "tree"
    assert col.all_reduce_algorithm(1 << 30) == "ring"
    assert col.all_reduce_s(4096) == pytest.approx(small["tree"])
    assert col.all_reduce_s(1 << 30) == pytest.approx(large["ring"])


def test_tree_latency_is_logarithmic_in_the_nodes():
    """One device per node: the tree pays 2·⌊log2 8⌋ = 6 network hops, the ring
    2·(8−1) = 14; both move the data at the NIC's bandwidth."""
    c = cluster("dgx-h100-x8")
    col = CollectiveModel(c, range(0, 64, 8))
    hop = c.route("dev0", "dev8")
    tiny = col.all_reduce_algorithms(1.0)
    assert tiny["tree"] - col.launch_s == pytest.approx(6 * hop.latency_s, rel=1e-3)
    assert tiny["ring"] - col.launch_s == pytest.approx(14 * hop.latency_s, rel=1e-3)
    big = 1e9
    tree = col.all_reduce_algorithms(big)["tree"]
    assert tree == pytest.approx(
        col.launch_s + 6 * hop.latency_s + 2 * big / hop.bandwidth_bytes_per_s, rel=1e-6
    )


def test_inside_one_node_the_tree_is_not_offered_and_results_are_unchanged():
    """NCCL's tree is a chain inside a node: never faster than the ring there."""
    col = CollectiveModel(cluster("dgx-h100"), range(8))
    algos = col.all_reduce_algorithms(1e6)
    assert set(algos) == {"ring", "one-shot"}
    assert col.all_reduce_s(1e6) == min(algos.values())
    assert col.all_reduce_algorithm(1e3) == "one-shot"
    assert col.all_reduce_algorithm(1e9) == "ring"


def test_a_calibrated_fit_overrides_the_model():
    profile = catalog.load_profile("h100-sxm")
    col = CollectiveModel(cluster("dgx-h100"), range(8), profile.fit.collectives)
    fit = col.measured["all_reduce"]
    assert col.all_reduce_algorithm(1e6) == "measured"
    assert col.all_reduce_s(1e6) == pytest.approx(fit.alpha_s + 1e6 / fit.bandwidth_bytes_per_s)


# ------------------------------------------------------------------------- torus


def test_sub_boxes_of_a_torus_are_recognised():
    c = cluster("tpu-v4-4x4x4")
    box = torus_box(c, range(16))  # index = 16·x + 4·y + z: the x = 0 face
    assert box is not None and box.axes == (1, 2) and box.extents == (4, 4)
    assert torus_box(c, range(64)) is not None
    assert torus_box(c, (0, 1, 2, 3, 4)) is None  # a line and one more chip
    assert torus_box(c, (0, 2)) is None  # not contiguous
    assert torus_box(cluster("dgx-h100"), range(8)) is None


@pytest.mark.parametrize("devices", [range(4), range(16), range(64)])
def test_torus_all_reduce_beats_a_naive_ring_over_the_same_chips(devices):
    col = CollectiveModel(cluster("tpu-v4-4x4x4"), devices)
    for size in (1e3, 1e6, 1e9):
        algos = col.all_reduce_algorithms(size)
        assert algos["torus"] <= algos["ring"]
        assert col.all_reduce_s(size) == algos["torus"]
    # big messages: both directions of every wrapped axis carry data; a naive ring
    # uses one direction (and shares links where its hops take several).
    big = col.all_reduce_algorithms(1e9)
    assert big["ring"] / big["torus"] >= 1.99


@pytest.mark.parametrize(
    ("dims", "devices"),
    [((4, 4, 4), 4), ((4, 4, 4), 16), ((4, 4, 4), 64), ((4, 4, 8), 128), ((8, 8, 4), 256)],
)
def test_dimension_ordered_all_reduce_matches_its_closed_form(dims, devices):
    """2 × Σ_i (k_i − 1)·(α + S_i/(k_i·2B)), S_i = S/Π_{j<i} k_j: with equal links
    = 2·Σ(k_i − 1)·α + S·(1 − 1/n)/B — the bandwidth term of a bidirectional ring over
    all n chips, with Σ(k_i − 1) latency steps a phase instead of n − 1."""
    col = CollectiveModel(torus(dims), range(devices))
    assert col.box is not None
    extents = col.box.extents
    assert math.prod(extents) == devices
    size = 1e8
    steps = sum(k - 1 for k in extents)
    expected = col.launch_s + 2 * steps * ICI_LATENCY_S + size * (1 - 1 / devices) / ICI_BYTES_PER_S
    assert col.all_reduce_s(size) == pytest.approx(expected, rel=1e-9)
    # reduce-scatter and all-gather are each half of it
    half = col.reduce_scatter_s(size) - col.launch_s
    assert half == pytest.approx((expected - col.launch_s) / 2, rel=1e-9)
    assert col.all_gather_s(size) == pytest.approx(col.reduce_scatter_s(size))


def test_dimension_ordered_time_falls_with_the_axis_sizes():
    """Gathering a fixed shard per chip: the bandwidth term grows as (n − 1)·shard/2B
    whatever the shape, but the latency term counts Σ(k_i − 1) hops, so a cube beats
    a long line of the same chips; each wrapped axis halves a line's time."""
    shard = 1e3  # bytes each chip contributes: latency-bound
    cube = CollectiveModel(torus((4, 4, 4)), range(64))
    line = CollectiveModel(torus((64,)), range(64))
    assert line.box is not None and line.box.extents == (64,)
    t_cube = cube.all_gather_s(64 * shard)
    t_line = line.all_gather_s(64 * shard)
    assert t_cube < t_line / 5
    assert t_line - line.launch_s == pytest.approx(63 * (ICI_LATENCY_S + shard / 2 / 45e9))
    assert t_cube - cube.launch_s == pytest.approx(9 * ICI_LATENCY_S + 63 * shard / 2 / 45e9)
    # without wraparound the axis ring runs one way only: twice the bandwidth term
    mesh = CollectiveModel(torus((4, 4, 4), wraparound=False), range(64))
    big = 1e9
    ratio = (mesh.all_reduce_s(big) - mesh.launch_s) / (cube.all_reduce_s(big) - cube.launch_s)
    assert ratio == pytest.approx(2.0, rel=0.01)
    assert [p.directions for p in mesh.axis_phases()] == [1, 1, 1]
    assert [p.directions for p in cube.axis_phases()] == [2, 2, 2]


def test_torus_all_to_all_uses_every_axis_at_once():
    col = CollectiveModel(cluster("tpu-v4-4x4x4"), range(64))
    size = 1e9
    t = col.all_to_all_s(size)
    # each axis alone: an all-to-all along a line of 4; the axes run concurrently
    line = CollectiveModel(cluster("tpu-v4-4x4x4"), range(4))
    t_line = line.all_to_all_s(size)
    assert t < 1.01 * t_line + 3 * 4 * ICI_LATENCY_S
    # each chip sends (n−1)/n of its buffer out through its 6 links: a lower bound
    assert t > size * (63 / 64) / (6 * ICI_BYTES_PER_S)


def test_links_of_a_torus_group_are_its_axis_rings():
    col = CollectiveModel(cluster("tpu-v4-4x4x4"), range(16))
    links = col.links()
    # 16 chips × 2 axes × 2 directions, one ICI link each
    assert len(links) == 64
    assert all(u.startswith("dev") and v.startswith("dev") for u, v in links)


# ------------------------------------------------------------------------ grids


def test_grid_on_a_node_puts_power_of_two_rows_inside():
    col = CollectiveModel(cluster("dgx-h100"), range(8))
    grid = col.axis_groups()
    assert (grid.x, grid.y) == (2, 4)
    assert [g.devices for g in grid.x_groups] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert [g.devices for g in grid.y_groups] == [(0, 2, 4, 6), (1, 3, 5, 7)]
    assert col.grid_sizes() == (2, 4)
    with pytest.raises(LlmsimError, match="does not divide"):
        col.axis_groups(3)


def test_grid_on_a_torus_follows_its_axes():
    c = torus((4, 8, 8))
    col = CollectiveModel(c, range(256))
    assert col.grid_sizes() == (4, 8, 32, 64)
    grid = col.axis_groups(8)
    assert (grid.x, grid.y) == (8, 32)
    assert len(grid.x_groups) == 32 and len(grid.y_groups) == 8
    for g in (*grid.x_groups, *grid.y_groups):
        assert g.box is not None  # every row and column is itself a box
    assert sorted(d for g in grid.x_groups for d in g.devices) == list(range(256))
    # the default is the axis product nearest √n
    assert CollectiveModel(cluster("tpu-v4-4x4x4"), range(64)).axis_groups().x in (4, 16)
    assert CollectiveModel(cluster("tpu-v4-4x4x4"), range(16)).axis_groups().x == 4


# ------------------------------------------------------------- shared links (SimPy)


def _finish_times(cluster_name: str, pairs: list[tuple[str, str]], size: float) -> list[float]:
    from sim.engine.resources import Links
    from sim.plan.deploy import Network

    env = simpy.Environment()
    links, net, graph = Links(env), Network(), cluster(cluster_name)
    done: list[float] = []

    def send(src: str, dst: str):
        yield from links.transfer(net.path(graph, src, dst), size)
        done.append(env.now)

    for src, dst in pairs:
        env.process(send(src, dst))
    env.run()
    return sorted(done)


def test_transfers_sharing_a_directed_link_queue_and_disjoint_ones_do_not():
    size = 1e9
    alone = cluster("dgx-h100").route("dev0", "dev1").transfer_s(size)
    assert _finish_times("dgx-h100", [("dev0", "dev1")], size) == [pytest.approx(alone)]
    # dev0→dev1 and dev0→dev2 both leave through dev0's switch port
    shared = _finish_times("dgx-h100", [("dev0", "dev1"), ("dev0", "dev2")], size)
    assert shared[0] == pytest.approx(alone)
    assert shared[1] == pytest.approx(2 * alone)
    # dev0→dev1 and dev2→dev3 use four different directed links
    apart = _finish_times("dgx-h100", [("dev0", "dev1"), ("dev2", "dev3")], size)
    assert apart == [pytest.approx(alone), pytest.approx(alone)]
    # opposite directions of one cable are separate links
    both_ways = _finish_times("dgx-h100", [("dev0", "dev1"), ("dev1", "dev0")], size)
    assert both_ways == [pytest.approx(alone), pytest.approx(alone)]
