"""A scenario: one YAML file that says what to simulate.

Loading is the only place configuration is interpreted: the YAML is read with the safe
loader, `--set key.path=value` overrides are applied to the raw mapping, catalog names
(model, cluster, workload recipe) are resolved and inlined, and the whole is validated
into a frozen `Scenario`. Every error names the file, the key path and what was
expected. The resolved scenario (`Scenario.resolved_dict()`) has every default filled in
and every reference inlined: written beside the results, it reproduces the run.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, ValidationError, field_validator

from sim.errors import LlmsimError
from sim.registry import SCHEDULES
from sim.spec import catalog, yamlio
from sim.spec.base import Spec, clipped, shown, validation_error
from sim.spec.hardware import ClusterSpec
from sim.spec.model import ModelSpec
from sim.spec.offload import OffloadSpec
from sim.spec.precision import PrecisionSpec
from sim.spec.runtime import RuntimeSpec
from sim.spec.scheduler import RouterSpec, SchedulerSpec, _known_router
from sim.spec.slo import SLOSpec
from sim.spec.speculative import SpeculativeSpec
from sim.spec.workload import WorkloadSpec, parse_workload
from sim.units import DTYPE_BYTES


class PipelineSpec(Spec):
    """How micro-batches flow through pipeline stages (see sim.engine.pipeline)."""

    schedule: str = "continuous"
    microbatches: int | None = Field(
        default=None,
        gt=0,
        description="fill-drain: micro-batches per step; continuous: "
        "request groups in flight (default: pp)",
    )
    prefill_microbatches: int | None = Field(
        default=None, gt=0, description="hybrid: micro-batches of a prefill step (default 2·pp)"
    )
    decode_microbatches: int | None = Field(
        default=None, gt=0, description="hybrid: request groups decoding in turn (default pp)"
    )
    layer_split: Literal["even", "balanced"] = Field(
        default="even",
        description="layers per stage: as even as possible, or balanced by cost (the first "
        "and last stages also hold the embedding and the LM head); "
        "parallel.layers_per_stage overrides both",
    )

    @field_validator("schedule")
    @classmethod
    def _known(cls, value: str) -> str:
        return SCHEDULES.check(value)


class ExpertsSpec(Spec):
    """How a mixture of experts' tokens spread over its experts (sim.cost.experts)."""

    skew: float = Field(
        default=0.0,
        ge=0,
        description="Zipf exponent of expert popularity (0: every expert equally popular); "
        "expert 0 is the most popular, and experts sit on devices in id order",
    )
    histogram: tuple[float, ...] | None = Field(
        default=None,
        description="measured tokens (or shares) per expert, in expert id order; overrides skew",
    )
    redundant: int = Field(
        default=0,
        ge=0,
        description="EPLB: extra copies of the hottest experts; the copies split their "
        "load and every expert is placed to balance the devices",
    )
    dispatch_dtype: str | None = Field(
        default=None,
        description="dtype of the tokens the dispatch all-to-all sends (DeepEP: fp8); the "
        "combine returns them in the activation dtype; default: the activation dtype",
    )

    @field_validator("dispatch_dtype")
    @classmethod
    def _dtype(cls, value: str | None) -> str | None:
        if value is not None and value not in DTYPE_BYTES:
            raise ValueError(f"unknown dtype {value!r}; valid: {', '.join(DTYPE_BYTES)}")
        return value

    @field_validator("histogram")
    @classmethod
    def _positive(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is not None and (min(value, default=0.0) < 0 or sum(value) <= 0):
            raise ValueError("expected non-negative counts, at least one of them positive")
        return value


class ParallelSpec(Spec):
    tp: int = Field(default=1, gt=0)
    ep: int = Field(
        default=1,
        gt=0,
        description="expert-parallel degree: the experts of a MoE layer spread over ep "
        "groups of the stage's tp × dp_attention devices (each expert split over the "
        "group's devices), tokens dispatched and combined by all-to-alls",
    )
    dp_attention: int = Field(
        default=1,
        gt=0,
        description="attention data-parallel ranks per stage (DeepSeek, SGLang): each rank "
        "of tp devices runs attention for its share of the sequences; the MoE layers run "
        "over all tp × dp_attention devices",
    )
    experts: ExpertsSpec = ExpertsSpec()
    two_batch_overlap: bool = Field(
        default=False,
        description="split each step into two micro-batches so that one computes while "
        "the other's all-to-alls run (SGLang, DeepSeek)",
    )
    pp: int = Field(default=1, gt=0)
    replicas: int = Field(default=1, gt=0)
    layers_per_stage: tuple[int, ...] | None = None
    pipeline: PipelineSpec = PipelineSpec()
    tp_layout: str = Field(
        default="1d-weight-stationary",
        description="how a TP group splits each layer (Pope et al.): 1d-weight-stationary, "
        "2d-weight-stationary or weight-gathered",
    )
    attention: Literal["heads", "batch"] = Field(
        default="heads",
        description="split attention over the TP group by heads, or by batch (whole "
        "sequences per device: for multiquery models)",
    )

    @property
    def stage_devices(self) -> int:
        """Devices of one pipeline stage: its attention ranks of tp devices each."""
        return self.tp * self.dp_attention

    @property
    def devices_per_replica(self) -> int:
        return self.stage_devices * self.pp


class OutputSpec(Spec):
    dir: str | None = None
    format: Literal["parquet", "csv"] = "parquet"
    records: bool = Field(default=True, description="write per-request/iteration records")
    trace: bool = Field(default=False, description="write a Chrome/Perfetto trace JSON")


class PoolSpec(Spec):
    """One pool of a disaggregated deployment: its replicas, their parallelism, and the
    cluster (device type) they run on — by default the scenario's, after the pool
    before it."""

    replicas: int = Field(default=1, gt=0)
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    cluster: ClusterSpec | None = None

    @property
    def devices(self) -> int:
        return self.replicas * self.tp * self.pp


class DisaggregationSpec(Spec):
    """Prefill and decode on separate pools (Splitwise, DistServe): a request prefills on
    a prefill replica, its KV cache crosses the links to a decode replica — holding
    them, so it contends with other traffic — and decodes there."""

    prefill: PoolSpec
    decode: PoolSpec
    transfer: Literal["after-prefill", "layerwise"] = Field(
        default="after-prefill",
        description="send the KV when the prefill ends, or layer by layer while it runs "
        "(only the last layer's share is then left to send after it)",
    )
    decode_router: str = Field(default="least-kv", description="which decode replica")

    @field_validator("decode_router")
    @classmethod
    def _router(cls, value: str) -> str:
        return _known_router(value)


class CompareSpec(Spec):
    """The comparison `llmsim compare` runs when given no --vary of its own."""

    vary: tuple[str, ...] = Field(
        default=(), description="KEY=V1,V2,... or KEY1:KEY2=A1:A2,B1:B2 (varied together)"
    )
    window_s: tuple[float, float] | None = Field(
        default=None, description="the time window the Gantt charts show"
    )


class EngineSpec(Spec):
    leap: bool = Field(
        default=True,
        description="run quiet stretches of identical decode steps as one event "
        "(exact: same results as stepping one iteration at a time)",
    )
    until_s: float | None = Field(default=None, gt=0, description="stop the clock here")
    cost: Literal["auto", "roofline", "calibrated"] = Field(
        default="auto",
        description="op pricing: the device's calibration profile when it has one (auto), "
        "always the roofline, or require a profile",
    )


class Scenario(Spec):
    name: str = "scenario"
    description: str = ""
    seed: int = Field(default=0, ge=0)
    cluster: ClusterSpec
    model: ModelSpec
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    precision: PrecisionSpec = PrecisionSpec()
    parallel: ParallelSpec = ParallelSpec()
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    router: RouterSpec = RouterSpec()
    workload: WorkloadSpec
    slo: SLOSpec = SLOSpec()
    output: OutputSpec = OutputSpec()
    engine: EngineSpec = EngineSpec()
    compare: CompareSpec | None = None
    disaggregation: DisaggregationSpec | None = None
    offload: OffloadSpec | None = None
    speculative: SpeculativeSpec | None = None

    _file: str | None = PrivateAttr(default=None)
    _base_dir: Path | None = PrivateAttr(default=None)

    @property
    def file(self) -> str | None:
        return self._file

    @property
    def base_dir(self) -> Path:
        return self._base_dir or Path.cwd()

    def resolved_dict(self) -> dict[str, Any]:
        """Everything, defaults filled in and references inlined (YAML-ready)."""
        data: dict[str, Any] = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return data

    def error(self, message: str, key: str) -> LlmsimError:
        return LlmsimError(message, file=self._file, key=key)


# --------------------------------------------------------------------------- loading


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply `a.b.c=value` (value parsed as YAML) to the raw scenario mapping."""
    if "=" not in assignment:
        raise LlmsimError(f"--set expects key.path=value, got {shown(assignment)}")
    path, raw = assignment.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise LlmsimError(f"--set expects key.path=value, got {shown(assignment)}")
    try:
        value = yamlio.load_yaml_text(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    except LlmsimError as exc:  # a duplicate key or an alias bomb in the value
        key = ".".join([*keys, *([exc.key] if exc.key else [])])
        raise LlmsimError(f"{exc.message} (in --set)", key=clipped(key)) from None
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        if not isinstance(node, dict):
            raise LlmsimError("cannot set inside a non-mapping", key=".".join(keys[:i]))
        nxt = node.get(key)
        if nxt is None or (isinstance(nxt, str) and key in ("cluster", "model", "runtime")):
            nxt = {} if nxt is None else _expand_ref(key, nxt)
            node[key] = nxt
        node = nxt
    if not isinstance(node, dict):
        raise LlmsimError("cannot set inside a non-mapping", key=".".join(keys[:-1]))
    node[keys[-1]] = value


def _expand_ref(key: str, name: str) -> dict[str, Any]:
    """A catalog reference as an inline mapping (so `--set model.n_layers=2` works)."""
    if key == "model":
        return catalog.load_model(name).model_dump(by_alias=True)
    if key == "runtime":
        return catalog.load_runtime(name).model_dump(by_alias=True)
    return catalog.cluster_from_ref(name).model_dump(by_alias=True)


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, mapping by mapping."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merged(out[key], value)
        else:
            out[key] = value
    return out


def _in_scenario(exc: LlmsimError, file: str | None, key: str) -> LlmsimError:
    """An error met resolving the scenario's `key` (a model or cluster reference). One
    inside a catalog file (or a model's config.json) names that file and its key, not
    the scenario; any other is placed at `key` of the scenario (a key relative to the
    reference, such as `node.device`, goes under it)."""
    if exc.file and exc.file != file:
        return LlmsimError(exc.message, file=exc.file, key=exc.key)
    sub = exc.key
    if sub and not (sub == key or sub.startswith(f"{key}.")):
        sub = f"{key}.{sub}"
    return LlmsimError(exc.message, file=file, key=sub or key)


def _resolve_refs(data: dict[str, Any], file: str | None, base_dir: Path) -> dict[str, Any]:
    out = dict(data)
    for key in ("cluster", "model"):
        if key not in out:
            raise LlmsimError("required key is missing", file=file, key=key)
    model = out["model"]
    try:
        if isinstance(model, str):
            path = base_dir / model
            local = path.suffix in (".yaml", ".json") and catalog.is_file(path)
            out["model"] = catalog.load_model(str(path) if local else model).model_dump(
                by_alias=True
            )
    except LlmsimError as exc:
        raise _in_scenario(exc, file, "model") from None
    runtime = out.get("runtime", "bare")
    try:
        if isinstance(runtime, str):
            out["runtime"] = catalog.load_runtime(runtime).model_dump(by_alias=True)
        elif isinstance(runtime, dict) and "base" in runtime:
            # an inline runtime may start from a catalog one: {base: vllm-v1, host: ...}
            base = catalog.load_runtime(str(runtime["base"])).model_dump(by_alias=True)
            rest = {k: v for k, v in runtime.items() if k != "base"}
            out["runtime"] = _merged(base, rest)
    except LlmsimError as exc:
        raise _in_scenario(exc, file, "runtime") from None
    cluster = out["cluster"]
    try:
        if isinstance(cluster, str):
            spec = catalog.cluster_from_ref(cluster)
        elif isinstance(cluster, dict):
            spec = catalog.parse_spec(ClusterSpec, cluster, file or "", "cluster")
        else:
            raise LlmsimError(
                f"expected a cluster name or mapping, got {shown(cluster)}", key="cluster"
            )
        out["cluster"] = catalog.resolve_cluster(spec).model_dump(by_alias=True)
    except LlmsimError as exc:
        raise _in_scenario(exc, file, "cluster") from None
    dis = out.get("disaggregation")
    if isinstance(dis, dict):
        dis = dict(dis)
        for role in ("prefill", "decode"):
            pool = dis.get(role)
            if not isinstance(pool, dict):
                continue
            pool_ref = pool.get("cluster")
            if isinstance(pool_ref, str | dict):
                key = f"disaggregation.{role}.cluster"
                try:
                    spec = (
                        catalog.cluster_from_ref(pool_ref)
                        if isinstance(pool_ref, str)
                        else catalog.parse_spec(ClusterSpec, pool_ref, file or "", key)
                    )
                    spec = catalog.resolve_cluster(spec)
                except LlmsimError as exc:
                    raise _in_scenario(exc, file, key) from None
                dis[role] = {**pool, "cluster": spec.model_dump(by_alias=True)}
        out["disaggregation"] = dis
    speculative = out.get("speculative")
    if isinstance(speculative, dict) and isinstance(speculative.get("draft_model"), str):
        try:
            draft = catalog.load_model(speculative["draft_model"]).model_dump(by_alias=True)
        except LlmsimError as exc:
            raise _in_scenario(exc, file, "speculative.draft_model") from None
        out["speculative"] = {**speculative, "draft_model": draft}
    if "workload" not in out:
        raise LlmsimError("required key is missing", file=file, key="workload")
    out["workload"] = parse_workload(out["workload"], file, base_dir)
    return out


def read_scenario(
    source: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()
) -> Scenario:
    """Read, override, resolve and validate a scenario (a path or a raw mapping) against
    its schema. Whether the deployment it describes can be built (parallelism against
    the model and the cluster) is `sim.plan.check_scenario`'s question; `sim.plan.
    load_scenario` asks both."""
    if isinstance(source, dict):
        data, file, base_dir = copy.deepcopy(source), None, Path.cwd()
    else:
        path = Path(source)
        if not (catalog.is_file(path) or catalog.is_dir(path)):
            try:
                path = catalog.find("scenario", str(source))
            except catalog.NotInCatalog:
                raise LlmsimError("file not found", file=clipped(str(source))) from None
        raw = yamlio.read_yaml(path)
        if not isinstance(raw, dict):
            raise LlmsimError("a scenario is a YAML mapping", file=str(path))
        data, file, base_dir = raw, str(path), path.resolve().parent
    for assignment in overrides:
        try:
            apply_override(data, assignment)
        except LlmsimError as exc:
            raise exc.at(file=file) from None
    data = _resolve_refs(data, file, base_dir)
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, file, Scenario) from None
    except LlmsimError as exc:
        raise exc.at(file=file) from None
    scenario._file = file
    scenario._base_dir = base_dir
    return scenario
