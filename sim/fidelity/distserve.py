"""DistServe Figure 1 (`distserve_intro_13b_goodput`): OPT-13B fp16 on one A100-80GB,
vLLM policy, Poisson arrivals, 512 prompt / 64 output tokens, SLOs TTFT 0.4 s and
TPOT 0.04 s; goodput is the highest rate at which 90% of requests meet both, found by
`llmsim capacity`'s search; the prefill-only, decode-only and 2P1D curves run on
disaggregated pools."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sim.fidelity.rows import (
    NOT_REPRODUCIBLE,
    EntryError,
    Options,
    Row,
    need,
    number,
)
from sim.plan import load_scenario
from sim.studies.capacity import capacity

RUNTIME = "vllm-v0"  # DistServe (OSDI 2024) compared against vLLM of early 2024 (v0.2-v0.3)
GOODPUT_REQUESTS = 1000  # per seed and rate
GOODPUT_SEEDS = 3
GOODPUT_REL_TOL = 0.01
QUICK_SEEDS, QUICK_REL_TOL = 1, 0.05  # Options.quick


@dataclass(frozen=True)
class GoodputSetup:
    """A colocated goodput experiment: one replica, fixed lengths, Poisson arrivals."""

    model: str
    dtype: str
    cluster: str
    prompt: int
    output: int
    ttft_s: float
    tpot_s: float
    attainment: float


DISTSERVE_FIG1 = GoodputSetup("opt-13b", "fp16", "dgx-a100", 512, 64, 0.4, 0.04, 0.9)


def _distserve_scenario(
    d: GoodputSetup, variant: str, runtime: str | dict[str, Any] = "vllm-v0"
) -> dict[str, Any] | None:
    """The scenario behind one of DistServe Figure 1's curves (None: not one of them)."""
    slo: dict[str, Any] = {"ttft": d.ttft_s, "tpot": d.tpot_s, "percentile": 90}
    output = d.output
    disaggregation = None
    if variant == "prefill_only_per_GPU":  # one GPU that only prefills: TTFT is its SLO
        slo.pop("tpot")
        output = 1
    elif variant == "decode_only_per_GPU":  # one decode GPU fed by prefill GPUs to spare
        slo.pop("ttft")
        disaggregation = {"prefill": {"replicas": 7}, "decode": {"replicas": 1}}
    elif variant in ("2P1D_total", "2P1D_per_GPU"):
        disaggregation = {"prefill": {"replicas": 2}, "decode": {"replicas": 1}}
    elif variant != "colocated_1GPU":
        return None
    return {
        "name": f"distserve-fig1-{variant}",
        "cluster": d.cluster,
        "model": d.model,
        "precision": {"weights": d.dtype, "activations": d.dtype, "kv": d.dtype},
        "scheduler": {"policy": "vllm"},
        "runtime": runtime,
        "router": {"policy": "least-outstanding"},
        "slo": slo,
        "disaggregation": disaggregation,
        "workload": {
            "requests": GOODPUT_REQUESTS,
            "arrival": {"process": "poisson", "rate": 1.0},
            "prompt": {"dist": "fixed", "value": d.prompt},
            "output": {"dist": "fixed", "value": output},
        },
    }


_DISTSERVE_HOW = {
    "colocated_1GPU": "one GPU serving both phases, TTFT and TPOT SLOs",
    "prefill_only_per_GPU": "one GPU, 1-token outputs (prefill only), TTFT SLO only",
    "decode_only_per_GPU": "disaggregated 7 prefill + 1 decode GPU (prefill to spare), "
    "TPOT SLO only; per decode GPU",
    "2P1D_total": "disaggregated 2 prefill + 1 decode GPU, KV over NVSwitch, both SLOs",
    "2P1D_per_GPU": "the 2P1D goodput over its 3 GPUs",
}


def distserve(entry: dict[str, Any], opts: Options) -> list[Row]:

    value = need(entry, "value")
    if not isinstance(value, dict):
        raise EntryError("value is not a mapping")
    unit = str(entry.get("unit", "requests/s"))
    d = DISTSERVE_FIG1
    found: dict[str, float] = {}  # scenario name -> goodput (2P1D serves two rows)
    seeds, tol = (QUICK_SEEDS, QUICK_REL_TOL) if opts.quick else (GOODPUT_SEEDS, GOODPUT_REL_TOL)
    rows = []
    for key, measured in value.items():
        rid = f"{entry['id']}/{key}"
        spec = _distserve_scenario(d, str(key), opts.runtime(RUNTIME))
        if spec is None:
            rows.append(
                Row(
                    rid,
                    f"goodput ({key})",
                    number(measured),
                    None,
                    unit,
                    "not one of DistServe Figure 1's setups the suite models",
                    NOT_REPRODUCIBLE,
                )
            )
            continue
        if spec["name"] not in found:
            result = capacity(
                load_scenario(spec),
                target=d.attainment,
                seeds=seeds,
                tolerance=tol,
                loads=(),
            )
            found[spec["name"]] = result.capacity_rps
        goodput = found[spec["name"]] / (3 if key == "2P1D_per_GPU" else 1)
        rows.append(
            Row(
                rid,
                f"goodput ({key}) at {d.attainment:.0%} SLO attainment",
                number(measured),
                goodput,
                unit,
                f"{d.model} {d.dtype} on {d.cluster}, vllm policy, Poisson, {d.prompt} in / "
                f"{d.output} out; {_DISTSERVE_HOW[str(key)]}; TTFT <= {d.ttft_s} s, TPOT <= "
                f"{d.tpot_s} s (Fig. 1 SLOs, per the authors' blog); `llmsim capacity` "
                f"--target {d.attainment} over {seeds} seed(s) x {GOODPUT_REQUESTS} "
                f"requests, 10% warm-up and drain trimmed, bisection to {tol:.0%}; "
                f"runtime {RUNTIME}",
                runtime=RUNTIME,
            )
        )
    return rows
