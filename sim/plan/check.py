"""Whether a scenario describes a deployment that can be built: the combinations no
single field of the spec can judge (parallelism against the model's shapes and the
cluster's devices, disaggregated pools, offloading's one-GPU setting).

Memory fit is judged when the replicas are planned (sim.plan.memory): it needs the
activation workspace and the layer split, and gives the same kind of error.
"""

from __future__ import annotations

from sim.arith.ops import check_tp
from sim.cost.layouts import check_layout
from sim.cost.topology import n_devices
from sim.errors import LlmsimError
from sim.registry import POLICIES
from sim.spec.offload import OffloadSpec
from sim.spec.scenario import DisaggregationSpec, Scenario


def check_scenario(s: Scenario) -> None:
    """Combinations no single field can judge: parallelism against the model and the
    cluster. Memory fit is checked when the replicas are planned (it needs the cost of
    the activations), with the same kind of error."""
    try:
        check_layout(s.parallel.tp_layout, s.model, s.parallel.tp, s.parallel.attention)
    except LlmsimError as exc:
        key = exc.key or "parallel.tp"
        message = exc.message
        if key == "parallel.tp_layout" and s.parallel.tp_layout == "1d-weight-stationary":
            key, message = "parallel.tp", message.removeprefix("1d-weight-stationary: ")
        raise s.error(message, key) from None
    par = s.parallel
    if par.pp > s.model.n_layers:
        raise s.error(
            f"{par.pp} stages exceed the model's {s.model.n_layers} layers", "parallel.pp"
        )
    if par.layers_per_stage is not None:
        if len(par.layers_per_stage) != par.pp:
            raise s.error(
                f"gives {len(par.layers_per_stage)} stages but pp={par.pp}",
                "parallel.layers_per_stage",
            )
        if sum(par.layers_per_stage) != s.model.n_layers or min(par.layers_per_stage) < 1:
            raise s.error(
                f"must be {par.pp} positive counts summing to n_layers={s.model.n_layers}",
                "parallel.layers_per_stage",
            )
    _check_experts(s)
    if s.speculative is not None:
        _check_speculative(s)
    params = s.scheduler.policy_params()
    if params.prefix_caching:
        _check_prefix_caching(s)
    elif params.kv_tiers is not None:
        raise s.error("needs scheduler.prefix_caching: true", "scheduler.kv_tiers")
    if s.disaggregation is not None:
        _check_pools(s, s.disaggregation)
        return
    if s.offload is not None:
        _check_offload(s, s.offload)
    have = n_devices(s.cluster)
    need = par.replicas * par.devices_per_replica
    if need > have:
        if par.dp_attention > 1:
            raise s.error(
                f"replicas × tp × dp_attention × pp = {par.replicas} × {par.tp} × "
                f"{par.dp_attention} × {par.pp} = {need} devices, "
                f"but cluster {s.cluster.name} has {have}",
                "parallel",
            )
        raise s.error(
            f"replicas × tp × pp = {par.replicas} × {par.tp} × {par.pp} = {need} devices, "
            f"but cluster {s.cluster.name} has {have}",
            "parallel",
        )


def _check_prefix_caching(s: Scenario) -> None:
    """Prefix caching shares the blocks of a paged KV cache (sim.engine.prefix_cache)."""
    for on, what in (
        (
            not POLICIES[s.scheduler.policy].paged,
            f"needs a paged policy (vllm, sarathi), not {s.scheduler.policy}",
        ),
        (
            s.runtime.kv_cache != "paged",
            f"needs a paged KV cache, runtime has kv_cache: {s.runtime.kv_cache}",
        ),
        (s.model.sliding_window is not None, "is not modelled with a sliding window"),
        (s.disaggregation is not None, "is not modelled with disaggregated pools"),
    ):
        if on:
            raise s.error(f"prefix caching {what}", "scheduler.prefix_caching")


def _check_speculative(s: Scenario) -> None:
    """Speculative decoding runs on one colocated pipeline stage with a paged KV cache,
    under a policy that bounds its running sequences (sim.plan.speculative)."""
    par, spec = s.parallel, s.speculative
    assert spec is not None
    for on, what in (
        (par.pp > 1, f"pp={par.pp}: needs one pipeline stage"),
        (
            par.ep > 1 or par.dp_attention > 1,
            "is not modelled with expert or attention data parallelism (ep, dp_attention)",
        ),
        (s.disaggregation is not None, "is not modelled with disaggregated pools"),
        (s.offload is not None, "is not modelled with offloading"),
        (
            s.runtime.kv_cache != "paged",
            f"needs a paged KV cache, runtime has kv_cache: {s.runtime.kv_cache}",
        ),
        (
            not hasattr(s.scheduler.policy_params(), "max_num_seqs"),
            f"needs a policy with max_num_seqs (vllm, sarathi), not {s.scheduler.policy}",
        ),
    ):
        if on:
            raise s.error(f"speculative decoding {what}", "speculative")
    draft = spec.draft_model
    if draft is None:
        return
    key = "speculative.draft_model"
    if draft.vocab_size != s.model.vocab_size:
        raise s.error(
            f"{draft.name} has a vocabulary of {draft.vocab_size} tokens, the target "
            f"{s.model.name} {s.model.vocab_size}: a draft must share the tokenizer",
            key,
        )
    try:
        check_layout(par.tp_layout, draft, par.tp, par.attention)
    except LlmsimError as exc:
        raise s.error(f"{draft.name}: {exc.message}", key) from None


def _check_experts(s: Scenario) -> None:
    """Expert parallelism, attention data parallelism and their options against the
    model (a mixture of experts whose experts divide evenly) and the other settings."""
    par, model = s.parallel, s.model
    ex = par.experts
    moe = model.moe
    if moe is None:
        for key, on in (
            ("ep", par.ep > 1),
            ("dp_attention", par.dp_attention > 1),
            ("two_batch_overlap", par.two_batch_overlap),
            ("experts.redundant", ex.redundant > 0),
            ("experts.histogram", ex.histogram is not None),
        ):
            if on:
                raise s.error(
                    f"needs a mixture of experts; {model.name} is dense", f"parallel.{key}"
                )
        return
    if par.ep == 1 and (par.two_batch_overlap or ex.redundant):
        key, what = (
            ("two_batch_overlap", "hides the all-to-alls of expert parallelism")
            if par.two_batch_overlap
            else ("experts.redundant", "places copies over expert groups")
        )
        raise s.error(f"{what}: needs ep > 1", f"parallel.{key}")
    if par.ep == 1 and par.dp_attention == 1:
        return
    if s.disaggregation is not None or s.offload is not None:
        what = "disaggregated pools" if s.disaggregation is not None else "offloading"
        raise s.error(
            f"expert and attention data parallelism are not modelled with {what}", "parallel.ep"
        )
    if par.tp_layout != "1d-weight-stationary" or par.attention != "heads":
        raise s.error(
            "expert parallelism splits attention as 1d-weight-stationary by heads",
            "parallel.tp_layout",
        )
    stage = par.stage_devices
    if stage % par.ep:
        raise s.error(
            f"ep={par.ep} must divide tp × dp_attention = {par.tp} × {par.dp_attention} = {stage} "
            "(the stage's devices, split into ep expert groups)",
            "parallel.ep",
        )
    slots = moe.n_experts + ex.redundant
    if slots % par.ep:
        valid = ", ".join(str(e) for e in range(1, stage + 1) if stage % e == 0 and slots % e == 0)
        raise s.error(
            f"{par.ep} does not divide the {slots} experts of {model.name}"
            + (f" ({moe.n_experts} + {ex.redundant} redundant)" if ex.redundant else "")
            + f"; valid ep: {valid}",
            "parallel.ep",
        )
    width = stage // par.ep
    if model.d_ff_expert % width:
        raise s.error(
            f"an expert split over tp × dp_attention / ep = {width} devices needs {width} to "
            f"divide d_ff_expert={model.d_ff_expert} of {model.name}",
            "parallel.ep",
        )
    if ex.histogram is not None and len(ex.histogram) != moe.n_experts:
        raise s.error(
            f"gives {len(ex.histogram)} counts for the {moe.n_experts} experts of {model.name}",
            "parallel.experts.histogram",
        )


def _check_pools(s: Scenario, dis: DisaggregationSpec) -> None:
    shared = 0  # devices the pools take from the scenario's cluster
    for role, pool in (("prefill", dis.prefill), ("decode", dis.decode)):
        key = f"disaggregation.{role}"
        try:
            check_tp(s.model, pool.tp, s.parallel.attention)
        except LlmsimError as exc:
            raise s.error(exc.message, f"{key}.tp") from None
        if pool.pp > s.model.n_layers:
            raise s.error(
                f"{pool.pp} stages exceed the model's {s.model.n_layers} layers", f"{key}.pp"
            )
        if pool.cluster is None:
            shared += pool.devices
        elif pool.devices > n_devices(pool.cluster):
            raise s.error(
                f"replicas × tp × pp = {pool.devices} devices, but cluster "
                f"{pool.cluster.name} has {n_devices(pool.cluster)}",
                key,
            )
    if shared > n_devices(s.cluster):
        raise s.error(
            f"the pools need {shared} devices of cluster {s.cluster.name}, which has "
            f"{n_devices(s.cluster)}",
            "disaggregation",
        )
    if s.scheduler.policy not in ("vllm", "sarathi"):
        raise s.error(
            f"policy {s.scheduler.policy!r} cannot decode requests prefilled elsewhere; "
            "use vllm or sarathi",
            "scheduler.policy",
        )


def _check_offload(s: Scenario, off: OffloadSpec) -> None:
    """FlexGen's setting: one GPU running static blocks of the offload's shape."""
    par = s.parallel
    if (par.tp, par.pp, par.replicas) != (1, 1, 1):
        raise s.error(
            "offloading runs one replica on one GPU: tp, pp and replicas must be 1", "parallel"
        )
    if s.scheduler.policy != "static":
        raise s.error(
            "offloading runs blocks of requests: use the static policy", "scheduler.policy"
        )
    batch = s.scheduler.policy_params().batch_size
    if batch != off.block:
        raise s.error(
            f"batch_size {batch} must equal offload.gpu_batch_size × offload.gpu_batches = "
            f"{off.gpu_batch_size} × {off.gpu_batches} = {off.block}",
            "scheduler.batch_size",
        )
