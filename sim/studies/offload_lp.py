"""The linear program of FlexGen's policy search: for one block shape, the nine
placement fractions that minimise a block's time under every tier's capacity (see
sim.studies.offload_search for the cost model and its assumptions)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linprog

from sim.arith.ops import Work
from sim.arith.precision import Precision
from sim.cost.offload import VARIABLES, Linear, StepModel, StepPricer, tier_bytes
from sim.cost.topology import build_cluster
from sim.errors import LlmsimError
from sim.plan.kernels import make_kernel
from sim.plan.offload import offload_machine
from sim.spec.offload import TENSORS, TIERS, OffloadSpec
from sim.spec.scenario import Scenario

_LP_FILL = 1.0 - 1e-7
_GB = 1e9
_TIE = 1e-6


@dataclass(frozen=True)
class Policy:
    """One placement and block shape, with the LP's prediction and the simulator's."""

    offload: OffloadSpec
    prompt: int
    output: int
    prefill_s: float
    decode_s: float
    tier_bytes: dict[str, float]
    bound: str  # the stream that binds a decode step (at the middle one)
    simulated_s: float | None = None

    @property
    def block(self) -> int:
        return self.offload.block

    @property
    def seconds(self) -> float:
        """The LP's time for the block: prefill and every decode step."""
        return self.prefill_s + self.decode_s

    @property
    def seconds_per_token(self) -> float:
        """Seconds per generated token of one sequence (the latency objective)."""
        return self.seconds / self.output

    @property
    def throughput(self) -> float:
        """Generated tokens per second (FlexGen's metric)."""
        return self.block * self.output / self.seconds

    @property
    def simulated_throughput(self) -> float | None:
        if self.simulated_s is None:
            return None
        return self.block * self.output / self.simulated_s

    def score(self, objective: str) -> float:
        """Smaller is better."""
        return self.seconds_per_token if objective == "latency" else -self.throughput

    def to_dict(self) -> dict[str, Any]:
        o = self.offload
        return {
            "gpu_batch_size": o.gpu_batch_size,
            "gpu_batches": o.gpu_batches,
            "block": o.block,
            "cpu_attention": o.cpu_attention,
            "weights": list(o.weights),
            "kv": list(o.kv),
            "activations": list(o.activations),
            "prefill_s": self.prefill_s,
            "decode_s": self.decode_s,
            "lp_seconds": self.seconds,
            "lp_seconds_per_token": self.seconds_per_token,
            "lp_throughput_tokens_per_s": self.throughput,
            "simulated_seconds": self.simulated_s,
            "simulated_throughput_tokens_per_s": self.simulated_throughput,
            "tier_bytes": dict(self.tier_bytes),
            "decode_bound": self.bound,
        }


class OffloadModel:
    """The offload cost and memory model of one scenario's model and machine, priced as
    the simulator's executor prices a step."""

    def __init__(self, scenario: Scenario):
        s = scenario
        self.model = s.model
        self.precision = Precision.of(s.precision)
        cluster = build_cluster(s.cluster)
        try:
            self.machine = offload_machine(cluster)
            kernel, _ = make_kernel(cluster.device, self.precision, s.engine.cost)
        except LlmsimError as exc:
            raise s.error(exc.message, exc.key or "cluster") from None
        self.pricer = StepPricer(self.model, self.precision, self.machine, kernel)
        util = s.scheduler.policy_params().gpu_memory_utilization
        self.capacity = {
            "gpu": cluster.device.memory_bytes * util,
            "cpu": self.machine.cpu_bytes,
            "disk": self.machine.disk_bytes,
        }

    def step(self, spec: OffloadSpec, work: Work, logits: int, repeat: int = 1) -> StepModel:
        """One step of `spec`'s block, priced exactly as the simulator prices it."""
        return self.pricer.step(spec, work, logits, repeat)

    def steps(
        self, spec: OffloadSpec, prompt: int, output: int, representative: bool = False
    ) -> list[StepModel]:
        """The prefill and the n−1 decode steps of one block (static, padded: decode step
        k reads prompt + k − 1 cached tokens per sequence)."""
        b = spec.block
        out = [self.step(spec, Work.prefill(b, prompt), b)]
        if output <= 1:
            return out
        if representative:
            mid = round(prompt + (output - 2) / 2)
            out.append(self.step(spec, Work.decode(b, mid), b, repeat=output - 1))
        else:
            out += [self.step(spec, Work.decode(b, prompt + k), b) for k in range(output - 1)]
        return out

    def tiers(self, spec: OffloadSpec, prompt: int, output: int) -> dict[str, Linear]:
        return tier_bytes(self.model, self.precision, spec, prompt, output)

    def fits_somewhere(self, spec: OffloadSpec, prompt: int, output: int) -> tuple[bool, bool]:
        """Necessary conditions: (the GPU's fixed part fits, all tiers together hold
        everything), each at the placement that needs least of it."""
        tiers = self.tiers(spec, prompt, output)
        gpu = tiers["gpu"]
        gpu_min = gpu.const + sum(
            min(gpu.coef.get(f"{t}.{tier}", 0.0) for tier in TIERS) for t in TENSORS
        )
        total_min = sum(lin.const for lin in tiers.values()) + sum(
            min(sum(lin.coef.get(f"{t}.{tier}", 0.0) for lin in tiers.values()) for tier in TIERS)
            for t in TENSORS
        )
        return gpu_min <= self.capacity["gpu"], total_min <= sum(self.capacity.values())


def _lp(
    om: OffloadModel,
    steps: list[StepModel],
    tiers: dict[str, Linear],
    slack: bool = False,
) -> Any:
    """Solve for the placement. Variables: the nine fractions, one T per step, and
    (with `slack`) one overflow per tier, the objective then being the least overflow."""
    nv, ns = len(VARIABLES), len(steps)
    nt = len(TIERS) if slack else 0
    n = nv + ns + nt
    index = {v: i for i, v in enumerate(VARIABLES)}
    layers = om.model.n_layers
    c = np.zeros(n)
    if slack:  # any overflow is charged to the GPU only when nothing else can take it
        c[nv + ns :] = [1e3 if tier == "gpu" else 1.0 for tier in TIERS]
    else:
        for s, step in enumerate(steps):
            c[nv + s] = step.repeat * layers
            for v, coef in step.first.coef.items():
                c[index[v]] += step.repeat * coef
            # A tie-breaker: among placements equally fast, the one that moves least
            # (streams that do not bind are still kept short).
            for term in step.terms.values():
                for v, coef in term.coef.items():
                    c[index[v]] += _TIE * step.repeat * layers * coef
    rows: list[np.ndarray] = []
    rhs: list[float] = []
    if not slack:
        for s, step in enumerate(steps):
            for term in step.terms.values():
                if not term.coef and term.const == 0.0:
                    continue
                row = np.zeros(n)
                for v, coef in term.coef.items():
                    row[index[v]] += coef
                row[nv + s] = -1.0
                rows.append(row)
                rhs.append(-term.const)
    for i, tier in enumerate(TIERS):
        lin = tiers[tier]
        row = np.zeros(n)
        for v, coef in lin.coef.items():
            row[index[v]] += coef
        # Bytes are scaled to GB so the solver's tolerances mean the same on every row.
        row /= _GB
        if slack:
            row[nv + ns + i] = -1.0  # GB over
        rows.append(row)
        rhs.append((om.capacity[tier] * _LP_FILL - lin.const) / _GB)
    a_eq = np.zeros((len(TENSORS), n))
    for j, t in enumerate(TENSORS):
        for tier in TIERS:
            a_eq[j, index[f"{t}.{tier}"]] = 1.0
    bounds = [(0.0, 1.0)] * nv + [(0.0, None)] * (ns + nt)
    return linprog(
        c,
        A_ub=np.array(rows),
        b_ub=np.array(rhs),
        A_eq=a_eq,
        b_eq=np.ones(len(TENSORS)),
        bounds=bounds,
        method="highs",
    )


def _fits(om: OffloadModel, tiers: dict[str, Linear], values: dict[str, float]) -> bool:
    return all(tiers[t].at(values) <= om.capacity[t] for t in TIERS)


def _round_placement(
    om: OffloadModel, tiers: dict[str, Linear], steps: list[StepModel], x: np.ndarray
) -> dict[str, float] | None:
    """The LP's fractions on a grid of 1/10⁴ (then 1/10⁶) that pastes cleanly into YAML:
    of the roundings of each tensor's fractions up or down (one tier taking the rest),
    the fastest that leaves every tier within its capacity."""
    raw = {v: min(1.0, max(0.0, float(x[i]))) for i, v in enumerate(VARIABLES)}
    layers = om.model.n_layers
    for q in (10**4, 10**6):
        options: list[set[tuple[int, int, int]]] = []
        for t in TENSORS:
            scaled = [round(raw[f"{t}.{tier}"] * q, 3) for tier in TIERS]
            found: set[tuple[int, int, int]] = set()
            for rest in range(3):
                a, b = (k for k in range(3) if k != rest)
                for ra in (math.floor, math.ceil):
                    for rb in (math.floor, math.ceil):
                        grid = [0, 0, 0]
                        grid[a], grid[b] = ra(scaled[a]), rb(scaled[b])
                        grid[rest] = q - grid[a] - grid[b]
                        if grid[rest] >= 0:
                            found.add((grid[0], grid[1], grid[2]))
            options.append(found)
        best: tuple[float, dict[str, float]] | None = None
        for combo in itertools.product(*(sorted(o) for o in options)):
            values = {
                f"{t}.{tier}": combo[j][k] / q
                for j, t in enumerate(TENSORS)
                for k, tier in enumerate(TIERS)
            }
            if not _fits(om, tiers, values):
                continue
            seconds = sum(step.seconds(values, layers) for step in steps)
            if best is None or seconds < best[0]:
                best = (seconds, values)
        if best is not None:
            return best[1]
    return raw if _fits(om, tiers, raw) else None


def _solve(
    om: OffloadModel,
    spec: OffloadSpec,
    prompt: int,
    output: int,
    steps: list[StepModel],
) -> Policy | None:
    tiers = om.tiers(spec, prompt, output)
    res = _lp(om, steps, tiers)
    if res.status != 0:
        return None
    values = _round_placement(om, tiers, steps, res.x)
    if values is None:
        return None
    frac = {t: tuple(values[f"{t}.{tier}"] for tier in TIERS) for t in TENSORS}
    placed = spec.model_copy(update=frac)
    layers = om.model.n_layers
    prefill_s = steps[0].seconds(values, layers)
    decode_s = sum(step.seconds(values, layers) for step in steps[1:])
    middle = steps[min(len(steps) - 1, max(1, len(steps) // 2))]
    return Policy(
        offload=placed,
        prompt=prompt,
        output=output,
        prefill_s=prefill_s,
        decode_s=decode_s,
        tier_bytes={t: tiers[t].at(values) for t in TIERS},
        bound=middle.bound(values),
    )
