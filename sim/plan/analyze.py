"""Closed-form analysis of a model on a device: memory, FLOPs, intensity and floors.

No simulation: the arithmetic of the seeds applied to one (model, device, tp, pp,
batch, prompt, output, dtypes) point. Memory per device assumes layers split evenly
over `pp` stages (the first stage also holding the embedding, the last the LM head)
and the TP layout and attention split given (default: Megatron's 1D layout, attention
by heads), sized as the simulator sizes a replica (`sim.cost.layouts.layout_weights`,
`sim.plan.layers.plan_attention`). Latency floors use the ideal roofline (peak FLOP/s,
peak bandwidth, no launch overhead, no communication), so a simulated or measured
latency can never be lower. With pp > 1 stages, a prompt's tokens may pipeline through
the stages (TeraPipe: each chunk attends over the chunks before it), so the prefill
floor is the whole step's work spread evenly over the stages, the least any stage can
hold; a decode token must cross every stage in turn, so the decode floor is their sum.

Hardware is a device, a node or a cluster; a node or cluster also bounds tp × pp by
the devices it has. A scenario gives all of it (`analyze_scenario`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sim.arith.memory import (
    activation_workspace_bytes,
    embedding_weight_elems,
    kv_bytes_per_token,
    kv_bytes_per_token_per_device,
    layer_weight_elems,
    layers_per_stage,
    stage_weights,
)
from sim.arith.ops import (
    Work,
    all_reduce_bytes,
    check_tp,
    layer_plan,
    lm_head_op,
    op_active,
    op_bytes,
    op_flops,
)
from sim.arith.params import (
    active_params,
    flops_per_token,
    lm_head_flops_per_token,
    non_embedding_params,
    total_params,
)
from sim.arith.precision import Precision
from sim.cost.collectives import CollectiveModel
from sim.cost.layouts import WeightStationary1D, check_layout, compute_attention, layout_weights
from sim.cost.roofline import floor_time
from sim.cost.topology import build_cluster, n_devices
from sim.errors import LlmsimError, unknown_name
from sim.plan.check import check_scenario
from sim.plan.kernels import make_kernel
from sim.spec import catalog
from sim.spec.catalog import profile_for
from sim.spec.hardware import ClusterSpec, DeviceSpec
from sim.spec.model import ModelSpec
from sim.spec.scenario import read_scenario
from sim.workload.arrivals import generate

GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default share of device memory it may use


def resolve_hardware(name: str) -> tuple[DeviceSpec, ClusterSpec | None]:
    """A device by name, or the device of a node or cluster of that name and the
    cluster (a node: one of it). A broken catalog file is its own error, not "unknown"."""
    try:
        return catalog.load_device(name), None
    except catalog.NotInCatalog:
        pass
    try:
        cluster = catalog.cluster_from_ref(name)
    except catalog.NotInCatalog:
        names = [e.name for k in ("device", "node", "cluster") for e in catalog.entries(k)]
        raise unknown_name("hardware", name, names) from None
    return cluster_device(cluster), cluster


def resolve_device(name: str) -> DeviceSpec:
    """A device by name, or the device of a node or cluster of that name."""
    return resolve_hardware(name)[0]


def check_devices(cluster: ClusterSpec, tp: int, pp: int) -> None:
    """A TP × PP group must fit the node or cluster it is analysed on."""
    have = n_devices(cluster)
    if tp * pp <= have:
        return
    device = cluster_device(cluster).name
    if cluster.torus is not None:
        shape = "x".join(str(d) for d in cluster.torus.dims)
        holds = f"a {shape} torus of {have} {device}"
    else:
        assert cluster.node is not None
        node = catalog.node_of(cluster.node)
        per = node.devices_per_node
        holds = f"{cluster.nodes} × node {node.name} of {per} {device}"
        holds = f"node {node.name}: {per} {device}" if cluster.nodes == 1 else holds
    raise LlmsimError(
        f"tp × pp = {tp} × {pp} = {tp * pp} devices, but {cluster.name} has {have} ({holds})",
        key="tp" if pp == 1 else "parallel",
    )


def check_split(model: ModelSpec, tp: int, tp_layout: str, attention: str) -> str:
    """Raise if the layout cannot split `model` over `tp` devices; return how attention
    is then split (as the simulator splits it: `plan_attention`)."""
    try:
        check_layout(tp_layout, model, tp, attention)
    except LlmsimError as exc:
        if exc.key == "parallel.tp_layout" and tp_layout == WeightStationary1D.name:
            message = exc.message.removeprefix(f"{tp_layout}: ")
            raise LlmsimError(message, key="parallel.tp") from None
        raise
    return compute_attention(tp_layout, model, tp, attention)


def cluster_device(cluster: ClusterSpec) -> DeviceSpec:
    if cluster.torus is not None:
        return catalog.device_of(cluster.torus.device)
    assert cluster.node is not None
    return catalog.device_of(catalog.node_of(cluster.node).device)


@dataclass(frozen=True)
class Analysis:
    model: str
    device: str
    tp: int
    pp: int
    tp_layout: str
    attention: str  # how the TP group splits attention: by heads, or by batch
    batch: int
    prompt: int
    output: int
    weight_dtype: str
    activation_dtype: str
    kv_dtype: str
    params: int
    non_embedding_params: int
    active_params: int  # parameters a token touches (MoE: top-k routed + shared experts)
    weight_bytes: float
    weight_bytes_per_device: float
    kv_bytes_per_token: float
    kv_bytes_per_token_per_device: float
    kv_bytes_peak: float
    kv_bytes_peak_per_device: float
    activation_workspace_bytes: float
    memory_bytes_per_device: float
    fits: bool
    max_batch: int
    flops_per_token: float
    flops_per_token_context: int
    flops_split: dict[str, float]
    lm_head_flops_per_token: float
    ridge_flops_per_byte: float
    prefill_intensity_flops_per_byte: float
    decode_intensity_flops_per_byte: float
    prefill_bound: str
    decode_bound: str
    prefill_latency_floor_s: float
    decode_latency_floor_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _step_floor(
    model: ModelSpec,
    device: DeviceSpec,
    tp: int,
    pp: int,
    precision: Precision,
    work: Work,
    logits: int,
    attention: str = "heads",
) -> tuple[float, float, float]:
    """(seconds, FLOPs, bytes) of one step through all stages at the ideal roofline,
    for one device of each stage (stages run one after another)."""
    plan = layer_plan(model, tp, precision, attention)
    seconds = flops = moved = 0.0
    for layers in layers_per_stage(model.n_layers, pp):
        for op in plan.ops:
            seconds += layers * floor_time(device, precision, op, work)
        flops += layers * plan.flops(work)
        moved += layers * plan.bytes(work)
    if not model.encoder_only and logits:
        head = lm_head_op(model, tp)
        head_work = Work(tokens=logits)
        seconds += floor_time(device, precision, head, head_work)
        flops += 2.0 * logits * head.k * head.n
        moved += head.k * head.n * precision.w_bytes
    return seconds, flops, moved


def analyze(
    model: ModelSpec | str,
    hardware: DeviceSpec | ClusterSpec | str,
    *,
    tp: int = 1,
    pp: int = 1,
    batch: int = 1,
    prompt: int = 512,
    output: int = 128,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
    activation_dtype: str | None = None,
    memory_utilization: float = GPU_MEMORY_UTILIZATION,
    tp_layout: str = WeightStationary1D.name,
    attention: str = "heads",
) -> Analysis:
    """The closed forms at one point. `hardware` is a device, or a node or cluster
    (whose devices then bound tp × pp); `tp_layout` and `attention` split each layer
    as `parallel.tp_layout` and `parallel.attention` of a scenario do."""
    spec = catalog.load_model(model) if isinstance(model, str) else model
    cluster: ClusterSpec | None = None
    if isinstance(hardware, str):
        device, cluster = resolve_hardware(hardware)
    elif isinstance(hardware, ClusterSpec):
        device, cluster = cluster_device(hardware), hardware
    else:
        device = hardware
    for key, value in (("batch", batch), ("prompt", prompt)):
        if value < 1:
            raise LlmsimError(f"must be at least 1, got {value}", key=key)
    if output < 0:
        raise LlmsimError(f"must be at least 0, got {output}", key="output")
    act = activation_dtype or (dtype if dtype in ("bf16", "fp16", "fp32", "fp8") else "bf16")
    precision = Precision(weights=dtype, activations=act, kv=kv_dtype or act)
    split = check_split(spec, tp, tp_layout, attention)
    stages = layers_per_stage(spec.n_layers, pp)
    if cluster is not None:
        check_devices(cluster, tp, pp)

    # Sized as sim.plan.memory sizes a replica: the layout's share of each layer.
    per_layer = layer_weight_elems(spec, tp, split)
    emb = embedding_weight_elems(spec, tp)
    w_dev = max(stage_weights(stages, per_layer, emb, spec.tied_embeddings)) * precision.w_bytes
    layout_workspace = layout_weights(tp_layout, spec, tp, precision, attention)[1]
    kv_tok = kv_bytes_per_token(spec, precision)
    kv_tok_dev = kv_bytes_per_token_per_device(spec, tp, stages[0], precision, split)
    kept = spec.kv_tokens_kept(prompt + output)
    workspace_tokens = max(prompt, 2048)
    workspace = activation_workspace_bytes(spec, workspace_tokens, tp, precision)
    workspace += layout_workspace
    usable = device.memory_bytes * memory_utilization
    free_for_kv = usable - w_dev - workspace
    max_batch = max(0, math.floor(free_for_kv / (kept * kv_tok_dev))) if kept else 0
    kv_peak_dev = batch * kept * kv_tok_dev

    context = prompt + output // 2
    by_op = flops_per_token(spec, context)
    layers_total = sum(by_op.values())
    lm = lm_head_flops_per_token(spec)

    prefill = Work.prefill(batch, prompt)
    t_pre, f_pre, b_pre = _step_floor(spec, device, tp, pp, precision, prefill, batch, split)
    t_pre /= pp  # the busiest of pp stages holds at least 1/pp of the step's work
    decode = Work.decode(batch, spec.kv_tokens_kept(prompt))
    t_dec, f_dec, b_dec = _step_floor(spec, device, tp, pp, precision, decode, batch, split)
    ridge = device.ridge_flops_per_byte(precision.compute_dtype)
    i_pre, i_dec = f_pre / b_pre, f_dec / b_dec

    return Analysis(
        model=spec.name,
        device=device.name,
        tp=tp,
        pp=pp,
        tp_layout=tp_layout,
        attention=split,
        batch=batch,
        prompt=prompt,
        output=output,
        weight_dtype=precision.weights,
        activation_dtype=precision.activations,
        kv_dtype=precision.kv,
        params=total_params(spec),
        non_embedding_params=non_embedding_params(spec),
        active_params=active_params(spec),
        weight_bytes=total_params(spec) * precision.w_bytes,
        weight_bytes_per_device=w_dev,
        kv_bytes_per_token=kv_tok,
        kv_bytes_per_token_per_device=kv_tok_dev,
        kv_bytes_peak=batch * kept * kv_tok,
        kv_bytes_peak_per_device=kv_peak_dev,
        activation_workspace_bytes=workspace,
        memory_bytes_per_device=device.memory_bytes,
        fits=w_dev + workspace + kv_peak_dev <= usable,
        max_batch=max_batch,
        flops_per_token=layers_total + lm,
        flops_per_token_context=context,
        flops_split={k: v / layers_total for k, v in by_op.items()},
        lm_head_flops_per_token=lm,
        ridge_flops_per_byte=ridge,
        prefill_intensity_flops_per_byte=i_pre,
        decode_intensity_flops_per_byte=i_dec,
        prefill_bound="compute" if i_pre >= ridge else "memory",
        decode_bound="compute" if i_dec >= ridge else "memory",
        prefill_latency_floor_s=t_pre,
        decode_latency_floor_s=t_dec,
    )


def analyze_scenario(path: str, **overrides: Any) -> Analysis:
    """`analyze` at a scenario's model, cluster, parallelism (tp, pp, TP layout and
    attention split) and dtypes; prompt and output default to the workload's mean
    lengths, batch to 1. Keyword overrides win."""
    s = read_scenario(path)
    check_scenario(s)
    arrivals = generate(s.workload, s.seed, s.base_dir)
    prompt = round(float(np.mean(arrivals.prompt_tokens))) if len(arrivals) else 512
    output = round(float(np.mean(arrivals.output_tokens))) if len(arrivals) else 128
    p = Precision.of(s.precision)
    kwargs: dict[str, Any] = {
        "tp": s.parallel.tp,
        "pp": s.parallel.pp,
        "tp_layout": s.parallel.tp_layout,
        "attention": s.parallel.attention,
        "batch": 1,
        "prompt": prompt,
        "output": output,
        "dtype": p.weights,
        "kv_dtype": p.kv,
        "activation_dtype": p.activations,
        "memory_utilization": s.scheduler.policy_params().gpu_memory_utilization,
    }
    kwargs.update(overrides)
    return analyze(s.model, s.cluster, **kwargs)


def op_breakdown(
    model: ModelSpec | str,
    hardware: str | ClusterSpec,
    *,
    tp: int = 1,
    attention: str = "heads",
    tokens: int = 1,
    kv_len: int | None = None,
    dtype: str = "bf16",
    kv_dtype: str | None = None,
    activation_dtype: str | None = None,
    cost: str = "auto",
) -> dict[str, dict[str, Any]]:
    """Seconds of each op of one layer on one device for `tokens` tokens, and where the
    figure comes from (`calibrated`, `roofline`, or the collective's model).

    Matmuls, norms, activation, rotary and residual adds process `tokens` tokens;
    `attn_prefill` is one sequence prefilling `tokens` tokens after `kv_len` cached
    ones (default 0); `attn_decode` is `tokens` sequences each generating one token
    against `kv_len` cached ones (default 1024); `all_reduce` is one of the layer's
    all-reduces of `tokens` activations over the TP group's links. `hardware` is a
    device, node or cluster name, or a cluster (a scenario's); `attention` splits the
    layer by heads or by batch.
    """
    spec = catalog.load_model(model) if isinstance(model, str) else model
    if isinstance(hardware, ClusterSpec):
        device = cluster_device(hardware)
    else:
        device = resolve_device(hardware)
    act = activation_dtype or (dtype if dtype in ("bf16", "fp16", "fp32", "fp8") else "bf16")
    precision = Precision(weights=dtype, activations=act, kv=kv_dtype or act)
    check_tp(spec, tp, attention)
    if tokens < 1:
        raise LlmsimError(f"must be at least 1, got {tokens}", key="tokens")
    kernel, _ = make_kernel(device, precision, cost)
    plan = layer_plan(spec, tp, precision, attention)
    prefill = Work.prefill(1, tokens, kv_len or 0)
    decode = Work.decode(tokens, kv_len if kv_len is not None else 1024)
    out: dict[str, dict[str, Any]] = {}
    for op in plan.ops:
        if op.kind == "all_reduce":
            continue
        work = decode if op.kind == "attn_decode" else prefill
        seconds = kernel.op_time(op, work) if op_active(op, work) else 0.0
        out[op.name] = {
            "seconds": seconds,
            "source": kernel.source(op),
            "flops": op_flops(op, work),
            "bytes": op_bytes(op, work, precision),
        }
    reduce = next((o for o in plan.ops if o.kind == "all_reduce"), None)
    if reduce is not None:
        cluster = _cluster_for(hardware, device, tp)
        profile = profile_for(device) if cost != "roofline" else None
        fits = profile.fit.collectives if profile is not None else ()
        collective = CollectiveModel(build_cluster(cluster), tuple(range(tp)), fits)
        size = all_reduce_bytes(reduce, prefill, precision)
        measured = "all_reduce" in collective.measured
        out["all_reduce"] = {
            "seconds": collective.all_reduce_s(size),
            "source": "calibrated" if measured else f"links of {cluster.name}",
            "flops": 0.0,
            "bytes": size,
        }
    return out


def _cluster_for(hardware: str | ClusterSpec, device: DeviceSpec, tp: int) -> ClusterSpec:
    """The cluster given or named by `hardware`, or the first catalog node of `device`
    with room for `tp` devices (for pricing a TP group's collectives)."""
    if isinstance(hardware, ClusterSpec):
        return hardware
    try:
        return catalog.cluster_from_ref(hardware)
    except catalog.NotInCatalog:
        pass
    for entry in catalog.entries("node"):
        node = catalog.load_node(entry.name)
        if catalog.device_of(node.device).name == device.name and node.devices_per_node >= tp:
            return ClusterSpec(name=node.name, node=node, nodes=1)
    raise LlmsimError(
        f"no node in the catalog holds {tp} {device.name} devices to price the all-reduce; "
        "give --hardware a node or cluster",
        key="tp",
    )
