"""The catalogs: every file loads, every number has a source, names resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sim.cost.topology import build_cluster
from sim.errors import LlmsimError
from sim.spec import catalog

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
        raw = catalog.read_yaml(entry.path)
        for key in numeric:
            if key in raw:
                assert key in raw["sources"], f"{entry.name}: {key} has no source"


def test_every_node_and_model_cites_sources():
    for kind in ("node", "model"):
        for entry in catalog.entries(kind):
            raw = catalog.read_yaml(entry.path)
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
        catalog.read_yaml(bad)


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
