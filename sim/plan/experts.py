"""A stage's expert-parallel group, as the plan builds it: the experts' load from the
scenario's popularity (sim.cost.experts), the collectives of the whole stage and of
each attention rank over the cluster's routes, and what a device keeps in memory."""

from __future__ import annotations

from collections.abc import Sequence

from sim.arith.ops import LayerPlan
from sim.arith.precision import Precision
from sim.cost.collectives import CollectiveModel, CustomAllReduce
from sim.cost.experts import ExpertParallel, group_loads, imbalance, popularity
from sim.cost.topology import Cluster
from sim.spec.profile import CollectiveFit
from sim.spec.scenario import Scenario
from sim.units import dtype_bytes


def uses_experts(s: Scenario) -> bool:
    """Whether the stages run expert or attention data parallelism (else plain TP)."""
    par = s.parallel
    return s.model.moe is not None and (par.ep > 1 or par.dp_attention > 1)


def load_imbalance(s: Scenario) -> float:
    """max/mean load of the scenario's expert groups (1: balanced)."""
    moe, par = s.model.moe, s.parallel
    if moe is None or par.ep == 1:
        return 1.0
    shares = popularity(moe.n_experts, par.experts.skew, par.experts.histogram)
    return imbalance(group_loads(shares, par.ep, par.experts.redundant))


def expert_group(
    s: Scenario,
    plan: LayerPlan,
    precision: Precision,
    cluster: Cluster,
    devices: Sequence[int],
    fits: Sequence[CollectiveFit] = (),
    custom: CustomAllReduce | None = None,
) -> ExpertParallel | None:
    """The expert-parallel group on a stage's `devices` (None: plain TP)."""
    if not uses_experts(s):
        return None
    par = s.parallel
    tp = par.tp
    ranks = [
        CollectiveModel(cluster, devices[r * tp : (r + 1) * tp], fits, custom)
        for r in range(par.dp_attention)
    ]
    return ExpertParallel(
        plan,
        precision,
        dp=par.dp_attention,
        ep=par.ep,
        redundant=par.experts.redundant,
        balance=load_imbalance(s),
        group=CollectiveModel(cluster, devices, fits, custom),
        ranks=ranks,
        overlap=par.two_batch_overlap,
        dispatch_bytes=(
            dtype_bytes(par.experts.dispatch_dtype) if par.experts.dispatch_dtype else None
        ),
    )
