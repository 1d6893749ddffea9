"""The catalogs: every file loads, every number has a source, names resolve."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from sim.cost.topology import build_cluster
from sim.errors import LlmsimError
from sim.spec import catalog, yamlio
from sim.spec.scenario import read_scenario
from tests.cli_helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
KEBAB = re.compile(r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$")


@pytest.mark.parametrize("kind", ["device", "node", "cluster", "model"])
def test_every_catalog_file_loads_and_is_kebab_named(kind):
    load = {
        "device": catalog.load_device,
        "node": catalog.load_node,
        "cluster": catalog.load_cluster,
        "model": catalog.load_model,
    }[kind]
    found = catalog.entries(kind)
    assert found
    for entry in found:
        spec = load(entry.name)
        assert spec.name == entry.name == entry.path.stem
        assert KEBAB.match(entry.name), entry.name
        for alias in entry.aliases:
            assert load(alias) == spec


def test_every_device_number_has_a_source():
    numeric = (
        "peak_flops",
        "memory_bytes",
        "memory_bandwidth",
        "sm_count",
        "launch_overhead",
        "efficiency",
        "nvlink_bandwidth",
        "interconnect_bandwidth",
        "pcie_bandwidth",
        "price_per_hour",
    )
    for entry in catalog.entries("device"):
        raw = yamlio.read_yaml(entry.path)
        for key in numeric:
            if key in raw:
                assert key in raw["sources"], f"{entry.name}: {key} has no source"


def test_every_node_and_model_cites_sources():
    for kind in ("node", "model"):
        for entry in catalog.entries(kind):
            raw = yamlio.read_yaml(entry.path)
            assert raw.get("sources"), f"{entry.name} has no sources"


@pytest.mark.parametrize("name", [e.name for e in catalog.entries("cluster")])
def test_every_cluster_builds_a_connected_graph(name):
    import networkx as nx

    cluster = build_cluster(catalog.load_cluster(name))
    assert cluster.n_devices >= 1
    assert nx.is_strongly_connected(cluster.graph)


def test_tpu_v4_slice_is_a_3d_torus():
    c = build_cluster(catalog.load_cluster("tpu-v4-4x4x4"))
    assert c.n_devices == 64
    degrees = {c.graph.out_degree(f"dev{i}") - 1 for i in range(64)}  # minus the host link
    assert degrees == {6}


def test_hf_alias_and_case_insensitive_names():
    assert catalog.load_model("meta-llama/Llama-2-70b-hf").name == "llama-2-70b"
    assert catalog.load_device("H100-SXM").name == "h100-sxm"


def test_unknown_names_list_valid_ones():
    with pytest.raises(LlmsimError, match=r"unknown device 'z80'; valid devices: .*a100-40gb"):
        catalog.load_device("z80")


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npeak_flops: {fp16: 1\n")
    with pytest.raises(LlmsimError, match=r"bad.yaml: line \d+: malformed YAML"):
        yamlio.read_yaml(bad)


def test_user_catalog_path_shadows_shipped_files(tmp_path, monkeypatch):
    devices = tmp_path / "hardware" / "devices"
    devices.mkdir(parents=True)
    (devices / "t4.yaml").write_text(
        "name: t4\nkind: gpu\npeak_flops: {fp16: 1 TFLOPS}\nmemory_bytes: 1 GB\n"
        "memory_bandwidth: 1 GB/s\n"
    )
    monkeypatch.setenv("LLMSIM_CATALOG_PATH", str(tmp_path))
    catalog.clear_cache()
    try:
        assert catalog.load_device("t4").peak_flops["fp16"] == 1e12
        assert catalog.load_device("a100-40gb").name == "a100-40gb"  # shipped still found
    finally:
        monkeypatch.delenv("LLMSIM_CATALOG_PATH")
        catalog.clear_cache()


def test_bad_value_in_a_device_file_names_the_key(tmp_path):
    bad = tmp_path / "gpu.yaml"
    bad.write_text(
        "name: g\nkind: gpu\npeak_flops: {fp16: fast}\nmemory_bytes: 1 GB\n"
        "memory_bandwidth: 1 GB/s\n"
    )
    with pytest.raises(LlmsimError, match=r"gpu.yaml: peak_flops.fp16: .*312 TFLOPS"):
        catalog.load_device(str(bad))


# ------------------------------------------------------------ user catalogs, broken files

DEVICE = (
    "name: {name}\nkind: gpu\npeak_flops: {{fp16: {flops}}}\nmemory_bytes: 1 GB\n"
    "memory_bandwidth: 1 GB/s\n"
)
NODE = (
    "name: {name}\ndevice: {device}\ndevices_per_node: 2\n"
    "fabric: {{kind: nvswitch, bandwidth: 100 GB/s, latency: 1 us}}\n"
    "pcie: {{bandwidth: 32 GB/s, latency: 5 us}}\nhost: {{dram: 1 TB}}\n"
)


@pytest.fixture
def user_catalog(tmp_path, monkeypatch):
    """A directory on LLMSIM_CATALOG_PATH (the cache cleared before and after)."""
    for folder in ("hardware/devices", "hardware/nodes", "hardware/clusters", "models"):
        (tmp_path / folder).mkdir(parents=True)
    monkeypatch.setenv("LLMSIM_CATALOG_PATH", str(tmp_path))
    catalog.clear_cache()
    yield tmp_path
    monkeypatch.delenv("LLMSIM_CATALOG_PATH")
    catalog.clear_cache()


def test_a_broken_user_device_is_its_own_error_not_unknown_hardware(user_catalog, capsys):
    """It was "unknown hardware 'mygpu'", with mygpu in the list of valid names."""
    bad = user_catalog / "hardware" / "devices" / "mygpu.yaml"
    bad.write_text(DEVICE.format(name="mygpu", flops="fast"))
    code, _, err = run_cli(capsys, "analyze", "--model", "llama-2-7b", "--hardware", "mygpu")
    assert code == 2 and err.count("\n") == 1
    assert f"{bad}: peak_flops.fp16: " in err and "unknown hardware" not in err


def test_a_broken_user_node_is_blamed_on_its_file_not_the_scenario(user_catalog, capsys):
    devices = user_catalog / "hardware" / "devices"
    (devices / "mygpu.yaml").write_text(DEVICE.format(name="mygpu", flops="1 TFLOPS"))
    node = user_catalog / "hardware" / "nodes" / "mynode.yaml"
    node.write_text(NODE.format(name="mynode", device="mygpu") + "devices_per_node: 4\n")
    line = NODE.count("\n") + 1
    scenario = user_catalog / "s.yaml"
    scenario.write_text(
        "model: llama-2-7b\ncluster: mynode\nworkload: {requests: 1, arrival: "
        "{process: burst}, prompt: {dist: fixed, value: 8}, output: {dist: fixed, value: 8}}\n"
    )
    code, _, err = run_cli(capsys, "run", str(scenario))
    assert code == 2 and err.count("\n") == 1
    assert f"llmsim: error: {node}: devices_per_node: line {line}: duplicate key" in err
    # A node naming an unknown device: the node file and its key, with the closest names.
    node.write_text(NODE.format(name="mynode", device="mygpo"))
    catalog.clear_cache()
    code, _, err = run_cli(capsys, "run", str(scenario))
    assert f"{node}: device: unknown device 'mygpo'; did you mean mygpu" in err
    # A bad value in the node: its file and key.
    node.write_text(NODE.format(name="mynode", device="mygpu").replace("2\n", "two\n", 1))
    catalog.clear_cache()
    code, _, err = run_cli(capsys, "run", str(scenario))
    assert f"{node}: devices_per_node: expected an integer, got 'two'" in err
    assert "s.yaml" not in err


def test_a_cluster_naming_an_unknown_node_names_the_cluster_file(user_catalog):
    cluster = user_catalog / "hardware" / "clusters" / "mine.yaml"
    cluster.write_text("name: mine\nnode: dgx-a10O\nnodes: 2\n")
    with pytest.raises(LlmsimError) as info:
        catalog.cluster_from_ref("mine")
    assert str(info.value).startswith(f"{cluster}: node: unknown node 'dgx-a10O'")


def test_a_broken_model_referenced_by_a_scenario_names_the_model_file(user_catalog, tmp_path):
    model = user_catalog / "models" / "mymodel.yaml"
    model.write_text("name: mymodel\nn_layers: many\n")
    with pytest.raises(LlmsimError) as info:
        read_scenario(
            {
                "model": "mymodel",
                "cluster": "dgx-a100",
                "workload": {"requests": 1, "arrival": {"process": "burst"}},
            }
        )
    assert info.value.file == str(model)
    assert str(info.value).startswith(f"{model}: ")


def test_catalog_index_checks_names_and_aliases(user_catalog):
    bad = user_catalog / "hardware" / "devices" / "odd.yaml"
    bad.write_text(DEVICE.format(name="odd", flops="1 TFLOPS") + "aliases: oddity\n")
    with pytest.raises(LlmsimError, match=r"odd.yaml: aliases: expected a list of names"):
        catalog.load_device("nothing-like-it")


@pytest.mark.parametrize("layout", ["missing", "file", "empty"])
def test_a_bad_catalog_path_entry_is_an_error(tmp_path, monkeypatch, layout):
    """A nonexistent LLMSIM_CATALOG_PATH entry was silently ignored."""
    entry = tmp_path / "cat"
    if layout == "file":
        entry.write_text("")
    elif layout == "empty":
        (entry / "devices").mkdir(parents=True)  # not laid out like the checkout
    monkeypatch.setenv("LLMSIM_CATALOG_PATH", f"{ROOT}{os.pathsep}{entry}")
    catalog.clear_cache()
    try:
        with pytest.raises(LlmsimError) as info:
            catalog.load_device("a100-40gb")
        message = str(info.value)
        assert message.startswith("LLMSIM_CATALOG_PATH: ") and str(entry) in message
        want = {"missing": "does not exist", "file": "not a directory", "empty": "holds none"}
        assert want[layout] in message
    finally:
        monkeypatch.delenv("LLMSIM_CATALOG_PATH")
        catalog.clear_cache()


def test_bad_catalog_path_from_the_command_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LLMSIM_CATALOG_PATH", str(tmp_path / "nope"))
    catalog.clear_cache()
    try:
        code, _, err = run_cli(capsys, "analyze", "--model", "llama-2-7b", "--hardware", "t4")
    finally:
        monkeypatch.delenv("LLMSIM_CATALOG_PATH")
        catalog.clear_cache()
    assert code == 2
    missing = tmp_path / "nope"
    assert err == (
        f"llmsim: error: LLMSIM_CATALOG_PATH: catalog directory '{missing}' does not exist\n"
    )


# ------------------------------------------------------------ newer hardware

NEW_DEVICES = (
    "rtx-4090",
    "rtx-pro-6000-server",
    "rtx-pro-6000-workstation",
    "h800-sxm",
    "h20",
    "gb200",
    "mi325x",
    "mi355x",
    "tpu-v6e",
    "grace-cpu",
)
NEW_NODES = (
    "hgx-h800",
    "hgx-h20",
    "mi325x-8x",
    "mi355x-8x",
    "rtx-4090-single",
    "rtx-pro-6000-server-2x",
    "gb200-nvl72",
)
NEW_CLUSTERS = (
    *NEW_NODES,
    "hgx-h200-x2",
    "hgx-h800-x2",
    "dgx-b200-x2",
    "tpu-v6e-2x2",
    "tpu-v6e-4x4",
)
DEVICE_NUMBERS = (
    "peak_flops",
    "memory_bytes",
    "memory_bandwidth",
    "sm_count",
    "launch_overhead",
    "efficiency",
    "nvlink_bandwidth",
    "interconnect_bandwidth",
    "pcie_bandwidth",
    "price_per_hour",
)


@pytest.mark.parametrize("name", NEW_DEVICES)
def test_new_device_loads_and_sources_every_number(name):
    spec = catalog.load_device(name)
    assert spec.name == name
    raw = yamlio.read_yaml(catalog.find("device", name))
    for key in DEVICE_NUMBERS:
        if key in raw:
            assert raw["sources"].get(key, "").strip(), f"{name}: {key} has no source"
    # The figures every roofline needs are present, not defaulted.
    for key in ("peak_flops", "memory_bytes", "memory_bandwidth", "launch_overhead", "efficiency"):
        assert key in raw, f"{name}: {key} missing"
    assert "fp4" not in spec.peak_flops  # no fp4 dtype in the simulator: noted, not keyed


@pytest.mark.parametrize(
    ("alias", "name"),
    [
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("rtx4090", "rtx-4090"),
        ("RTX PRO 6000 Blackwell", "rtx-pro-6000-server"),
        ("rtxpro6000", "rtx-pro-6000-server"),
        ("nvidia_h800", "h800-sxm"),
        ("nvidia_h20", "h20"),
        ("nvidia_gb200", "gb200"),
        ("nvidia_gb200_per_gpu", "gb200"),
        ("amd_mi325x", "mi325x"),
        ("amd_mi355x", "mi355x"),
        ("google_tpu_v6e", "tpu-v6e"),
    ],
)
def test_new_device_aliases_as_the_measurements_name_them(alias, name):
    assert catalog.load_device(alias).name == name


@pytest.mark.parametrize("name", NEW_NODES)
def test_new_node_loads_with_sources(name):
    node = catalog.load_node(name)
    assert node.name == name
    raw = yamlio.read_yaml(catalog.find("node", name))
    for key in ("device", "fabric", "pcie", "host.dram"):
        assert raw["sources"].get(key), f"{name}: {key} has no source"
    if "nic" in raw:
        assert raw["sources"].get("nic"), f"{name}: nic has no source"


@pytest.mark.parametrize("name", NEW_CLUSTERS)
def test_new_cluster_loads_and_builds(name):
    import networkx as nx

    cluster = build_cluster(catalog.load_cluster(name))
    assert cluster.spec.name == name
    assert nx.is_strongly_connected(cluster.graph)


def test_gb200_nvl72_is_one_nvswitch_domain_of_72():
    c = build_cluster(catalog.load_cluster("gb200-nvl72"))
    assert c.n_devices == 72
    route = c.route("dev0", "dev71")
    assert route.edges == (("dev0", "nvsw0"), ("nvsw0", "dev71"))
    assert route.bandwidth_bytes_per_s == pytest.approx(900e9)
    # Every GPU hangs off the one switch, and a NIC per GPU lets racks be joined.
    assert all(c.graph.has_edge(f"dev{i}", "nvsw0") for i in range(72))
    assert catalog.load_node("gb200-nvl72").nic is not None


def test_rtx_pro_6000_pair_talks_over_pcie_through_the_host():
    c = build_cluster(catalog.load_cluster("rtx-pro-6000-server-2x"))
    assert c.n_devices == 2
    route = c.route("dev0", "dev1")
    assert route.edges == (("dev0", "host0"), ("host0", "dev1"))
    assert {c.link(u, v).kind for u, v in route.edges} == {"pcie-gen5"}
    assert route.bandwidth_bytes_per_s == pytest.approx(64e9)


@pytest.mark.parametrize(("name", "per_link"), [("mi325x-8x", 64e9), ("mi355x-8x", 76.8e9)])
def test_amd_platforms_are_a_full_mesh_of_single_links(name, per_link):
    c = build_cluster(catalog.load_cluster(name))
    for j in range(1, 8):
        route = c.route("dev0", f"dev{j}")
        assert route.edges == (("dev0", f"dev{j}"),)
        assert route.bandwidth_bytes_per_s == pytest.approx(per_link)


@pytest.mark.parametrize("name", ["hgx-h200-x2", "hgx-h800-x2", "dgx-b200-x2"])
def test_two_node_clusters_cross_the_network_between_nodes(name):
    c = build_cluster(catalog.load_cluster(name))
    assert c.n_devices == 16
    assert c.route("dev0", "dev8").edges == (("dev0", "net"), ("net", "dev8"))
    assert "net" not in {v for edge in c.route("dev0", "dev7").edges for v in edge}


@pytest.mark.parametrize(("name", "chips"), [("tpu-v6e-2x2", 4), ("tpu-v6e-4x4", 16)])
def test_tpu_v6e_slices_are_2d_grids(name, chips):
    c = build_cluster(catalog.load_cluster(name))
    assert c.n_devices == chips
    side = int(chips**0.5)
    # Without wraparound a corner chip has 2 ICI neighbours, plus its host link.
    assert c.graph.out_degree("dev0") - 1 == 2
    # Corner to corner: the Manhattan distance in ICI hops, none through a host.
    route = c.route("dev0", f"dev{chips - 1}")
    assert len(route.edges) == 2 * (side - 1)
    assert {c.link(u, v).kind for u, v in route.edges} == {"ici"}
    assert route.bandwidth_bytes_per_s == pytest.approx(100e9)
