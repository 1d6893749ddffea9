"""FlexGen's policy search (Sheng et al. 2023, §4.3): the offload placement and block
shape that minimise the time of a block, found by linear programming.

For each block shape on a grid — `gpu_batch_size` and `gpu_batches` in powers of two,
bounded by what could fit, and `cpu_attention` off or on — the nine placement fractions
(weights, KV cache and activations over GPU, host DRAM and disk; each tensor's three sum
to 1) are chosen by `scipy.optimize.linprog` to minimise

    T = Σ_steps ( l · T_step + first_step + ends_step ),   T_step ≥ every stream of the step

subject to every tier's peak bytes (`sim.cost.offload.tier_bytes`) fitting its capacity (GPU:
memory × gpu_memory_utilization; CPU: host DRAM; disk). The streams are those of
`sim.cost.offload.layer_terms` (ctog, gtoc, dtoc, ctod, GPU and CPU compute), priced exactly
as the simulator's `OffloadExecutor.step_seconds` prices them: the GPU compute of a layer
is the block's GPU batches run one after another, `first` is the first layer's weights,
which must arrive before anything overlaps them, and `ends` the embedding and LM head.
This is FlexGen's cost model T = T_pre·l + T_gen·(n−1)·l with its assumptions: within a
layer the streams overlap perfectly (a layer takes as long as its slowest stream), and
every step of the block runs the same schedule.

Decode contexts: by default each of the n−1 decode steps is its own term, at the context
the simulator gives it (prompt + k − 1 cached tokens at step k), so the LP's time is the
simulator's time. `representative=True` prices one decode step at the mean context and
counts it n−1 times, as FlexGen does; the LP's time is then an approximation.

Prompts and outputs are taken at their longest in the scenario's workload: a static
block pads every sequence to them, as FlexGen's benchmark does.

The objective ranks the solved shapes: "throughput" (generated tokens per second,
block·n / T) or "latency" (seconds per generated token of a block, T / n). The best
policies are then run in the simulator (static policy, one block of requests arriving
at once) and their simulated throughput is reported beside the LP's.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from sim.cost.offload import VARIABLES
from sim.errors import LlmsimError
from sim.plan import load_scenario
from sim.results.run import simulate
from sim.spec.offload import TIERS, OffloadSpec
from sim.spec.scenario import Scenario
from sim.studies.offload_lp import _GB, OffloadModel, Policy, _lp, _solve
from sim.studies.pool import Pool
from sim.workload.arrivals import generate

OBJECTIVES = ("throughput", "latency")


# Capacities the LP may fill, as a share of each tier: a hair under 1 so that the
# solver's feasibility tolerance never lands a policy over a tier.
@dataclass(frozen=True)
class SearchResult:
    objective: str
    prompt: int
    output: int
    capacities: dict[str, float]
    policies: tuple[Policy, ...]  # best first
    shapes_solved: int  # (block shape, cpu_attention) points given to the LP
    shapes_feasible: int
    representative: bool = False
    notes: tuple[str, ...] = field(default=())

    @property
    def best(self) -> Policy:
        return self.policies[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "prompt": self.prompt,
            "output": self.output,
            "decode_context": "representative" if self.representative else "every step",
            "capacities_bytes": dict(self.capacities),
            "shapes_solved": self.shapes_solved,
            "shapes_feasible": self.shapes_feasible,
            "policies": [p.to_dict() for p in self.policies],
            "snippet": offload_snippet(self.best),
        }


# ------------------------------------------------------------------------ the LP


def _powers(limit: int) -> tuple[int, ...]:
    return tuple(2**k for k in range(max(1, limit).bit_length()) if 2**k <= limit)


def workload_lengths(scenario: Scenario) -> tuple[int, int]:
    """The longest prompt and output of the scenario's requests (a block pads to them)."""
    try:
        arrivals = generate(scenario.workload, scenario.seed, scenario.base_dir)
    except LlmsimError as exc:
        raise exc.at(file=exc.file or scenario.file) from None
    if not len(arrivals):
        raise scenario.error("no requests to size the block by", "workload")
    return int(arrivals.prompt_tokens.max()), int(arrivals.output_tokens.max())


def search(
    scenario: Scenario,
    objective: str = "throughput",
    gpu_batch_sizes: tuple[int, ...] | None = None,
    gpu_batches: tuple[int, ...] | None = None,
    cpu_attention: tuple[bool, ...] = (False, True),
    *,
    top: int = 5,
    max_block: int = 2048,
    representative: bool = False,
    simulate: bool = True,
    jobs: int = 1,
) -> SearchResult:
    """The best offload policies for `scenario`'s model, machine and request lengths.

    `gpu_batch_sizes` and `gpu_batches` default to the powers of two up to `max_block`
    sequences in a block, pruned where the GPU's fixed part (embedding, two streamed
    layers, one GPU batch's activations) or all tiers together cannot hold the block.
    With `simulate`, each returned policy is also run in the simulator (`jobs` of them
    at once on the study pool)."""
    if objective not in OBJECTIVES:
        raise LlmsimError(
            f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}", key="objective"
        )
    if top < 1:
        raise LlmsimError(f"top must be at least 1, got {top}", key="top")
    for name, given in (("gpu_batch_sizes", gpu_batch_sizes), ("gpu_batches", gpu_batches)):
        if given is not None and (not given or min(given) < 1):
            raise LlmsimError(f"expected positive integers, got {list(given)}", key=name)
    if not cpu_attention:
        raise LlmsimError("give at least one of false, true", key="cpu_attention")
    par = scenario.parallel
    if (par.tp, par.pp, par.replicas) != (1, 1, 1) or scenario.disaggregation is not None:
        raise scenario.error(
            "the offload search places one replica on one GPU: tp, pp and replicas must be 1 "
            "(and no disaggregation)",
            "parallel",
        )
    om = OffloadModel(scenario)
    prompt, output = workload_lengths(scenario)
    sizes = gpu_batch_sizes or _powers(max_block)
    counts = gpu_batches or _powers(max_block)
    found: list[Policy] = []
    solved = 0
    smallest: OffloadSpec | None = None
    for gbs in sorted(set(sizes)):
        for nb in sorted(set(counts)):
            if gpu_batches is None and gbs * nb > max_block:
                break
            shape = OffloadSpec(gpu_batch_size=gbs, gpu_batches=nb)
            if smallest is None or shape.block < smallest.block:
                smallest = shape
            gpu_ok, total_ok = om.fits_somewhere(shape, prompt, output)
            if not gpu_ok:
                break  # a bigger block of the same GPU batch needs as much GPU, and more
            if not total_ok:
                break
            base = om.steps(shape, prompt, output, representative)
            for cpu in cpu_attention:
                spec = shape.model_copy(update={"cpu_attention": cpu})
                steps = base if not cpu else om.steps(spec, prompt, output, representative)
                solved += 1
                policy = _solve(om, spec, prompt, output, steps)
                if policy is not None:
                    found.append(policy)
    if not found:
        assert smallest is not None
        raise _shortfall(scenario, om, smallest, prompt, output)
    found.sort(key=lambda p: (p.score(objective), p.block, p.offload.cpu_attention))
    best = found[:top]
    if simulate:
        with Pool(min(jobs, len(best))) as pool:
            seconds = pool.map(_simulate_one, [(scenario, p) for p in best])
        best = [replace(p, simulated_s=s) for p, s in zip(best, seconds, strict=True)]
    return SearchResult(
        objective=objective,
        prompt=prompt,
        output=output,
        capacities=dict(om.capacity),
        policies=tuple(best),
        shapes_solved=solved,
        shapes_feasible=len(found),
        representative=representative,
    )


def _shortfall(
    scenario: Scenario, om: OffloadModel, shape: OffloadSpec, prompt: int, output: int
) -> LlmsimError:
    """Why nothing fits: the least overflow of the smallest block, by tier (the LP with
    each tier allowed to overflow, charged to the GPU only where nothing else can help)."""
    tiers = om.tiers(shape, prompt, output)
    res = _lp(om, [], tiers, slack=True)
    assert res.status == 0, res.message  # every placement is allowed to overflow
    over = {t: max(0.0, float(res.x[len(VARIABLES) + i])) * _GB for i, t in enumerate(TIERS)}
    what = (
        f"the smallest block ({shape.gpu_batches} GPU batch(es) of {shape.gpu_batch_size} "
        f"sequence(s), {prompt}+{output} tokens each)"
    )
    cap = om.capacity
    if over["gpu"] > 1.0:
        message = (
            f"no offload policy fits: {what} needs {over['gpu'] / _GB:.2f} GB of GPU memory "
            f"beyond the {cap['gpu'] / _GB:.1f} GB usable (embedding, two streamed layers and "
            "one GPU batch's activations stay on the GPU); use a GPU with more memory, a "
            "shorter prompt, or a smaller weight dtype"
        )
    else:
        short = over["cpu"] + over["disk"]
        message = (
            f"no offload policy fits: {what} needs {short / _GB:.1f} GB beyond the "
            f"{cap['cpu'] / _GB:.0f} GB of host DRAM and {cap['disk'] / _GB:.0f} GB of disk "
            f"(with {cap['gpu'] / _GB:.1f} GB on the GPU); add that much DRAM or disk, or "
            "use smaller dtypes"
        )
    return scenario.error(message, "offload")


# ------------------------------------------------------------------ the simulator


def policy_scenario(scenario: Scenario, policy: Policy) -> Scenario:
    """`scenario` running `policy`: its `offload:`, a static batch of one block, and one
    block of requests (the policy's prompt and output) arriving at once."""
    data = scenario.resolved_dict()
    for key in ("compare", "offload"):
        data.pop(key, None)
    o = policy.offload
    data["offload"] = {
        "weights": list(o.weights),
        "kv": list(o.kv),
        "activations": list(o.activations),
        "gpu_batch_size": o.gpu_batch_size,
        "gpu_batches": o.gpu_batches,
        "cpu_attention": o.cpu_attention,
    }
    util = scenario.scheduler.policy_params().gpu_memory_utilization
    data["scheduler"] = {
        "policy": "static",
        "batch_size": o.block,
        "padding": "padded",
        "gpu_memory_utilization": util,
    }
    data["workload"] = {
        "requests": o.block,
        "arrival": {"process": "burst"},
        "prompt": {"dist": "fixed", "value": policy.prompt},
        "output": {"dist": "fixed", "value": policy.output},
    }
    data["output"] = {"records": False}
    data.get("engine", {}).pop("until_s", None)  # the block runs to its end
    try:
        return load_scenario(data)
    except LlmsimError as exc:
        raise exc.at(file=scenario.file) from None


def simulate_policy(scenario: Scenario, policy: Policy) -> float:
    """Simulated seconds for one block of `policy` (burst at t = 0 to the last token)."""
    results = simulate(policy_scenario(scenario, policy), records=False)
    return float(results.summary.sim_time_s)


def _simulate_one(task: tuple[Scenario, Policy]) -> float:
    """`simulate_policy` of one (scenario, policy) pair (module level: a pool worker)."""
    return simulate_policy(*task)


def offload_snippet(policy: Policy) -> str:
    """The policy as YAML to paste into a scenario."""
    o = policy.offload

    def fr(v: tuple[float, float, float]) -> str:
        return "[" + ", ".join(_decimal(x) for x in v) + "]"

    return (
        "offload:\n"
        f"  weights: {fr(o.weights)}        # gpu, cpu, disk\n"
        f"  kv: {fr(o.kv)}\n"
        f"  activations: {fr(o.activations)}\n"
        f"  gpu_batch_size: {o.gpu_batch_size}\n"
        f"  gpu_batches: {o.gpu_batches}\n"
        f"  cpu_attention: {'true' if o.cpu_attention else 'false'}\n"
        f"scheduler: {{policy: static, batch_size: {o.block}}}\n"
    )


def _decimal(x: float) -> str:
    """A fraction as plain decimals (YAML reads `1e-06` as a string)."""
    text = f"{x:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"
