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
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from sim.arith.ops import Precision, check_tp
from sim.errors import LlmsimError, pydantic_error
from sim.spec import catalog
from sim.spec.base import Spec
from sim.spec.hardware import ClusterSpec
from sim.spec.model import ModelSpec
from sim.spec.offload import OffloadSpec
from sim.spec.slo import SLOSpec
from sim.spec.workload import WorkloadSpec, parse_workload
from sim.units import DTYPE_BYTES


class PrecisionSpec(Spec):
    weights: str = "bf16"
    activations: str = "bf16"
    kv: str | None = Field(default=None, description="defaults to the activation dtype")
    group_size: int = Field(
        default=64, gt=0, description="int8/int4: values per fp16 scale and zero (group-wise)"
    )

    @field_validator("weights", "activations", "kv")
    @classmethod
    def _dtype(cls, value: str | None) -> str | None:
        if value is not None and value not in DTYPE_BYTES:
            raise ValueError(f"unknown dtype {value!r}; valid: {', '.join(DTYPE_BYTES)}")
        return value

    def build(self) -> Precision:
        return Precision(
            self.weights, self.activations, self.kv or self.activations, self.group_size
        )


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
        from sim.engine.pipeline import SCHEDULES

        if value not in SCHEDULES:
            raise ValueError(
                f"unknown schedule {value!r}; valid schedules: {', '.join(sorted(SCHEDULES))}"
            )
        return value

    def build(self, pp: int) -> Any:
        from sim.engine.pipeline import SCHEDULES

        return SCHEDULES[self.schedule](
            pp, self.microbatches, self.prefill_microbatches, self.decode_microbatches
        )


class ParallelSpec(Spec):
    tp: int = Field(default=1, gt=0)
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
    def devices_per_replica(self) -> int:
        return self.tp * self.pp


class SchedulerSpec(Spec):
    """`policy` picks a batching policy from the registry; the other keys are that
    policy's parameters, validated by the policy's own schema."""

    policy: str = "vllm"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if isinstance(data, dict) and "params" not in data:
            rest = {k: v for k, v in data.items() if k != "policy"}
            return {"policy": data.get("policy", "vllm"), "params": rest}
        return data

    @model_validator(mode="after")
    def _validate_params(self) -> SchedulerSpec:
        from sim.engine.policies.base import POLICIES

        if self.policy not in POLICIES:
            raise ValueError(
                f"unknown policy {self.policy!r}; valid policies: {', '.join(sorted(POLICIES))}"
            )
        params = POLICIES[self.policy].Params.model_validate(self.params)
        object.__setattr__(self, "params", params.model_dump(by_alias=True))
        return self

    def policy_params(self) -> Any:
        from sim.engine.policies.base import POLICIES

        return POLICIES[self.policy].Params.model_validate(self.params)


def _known_router(value: str) -> str:
    from sim.engine.router import ROUTERS

    if value not in ROUTERS:
        raise ValueError(f"unknown router {value!r}; valid routers: {', '.join(ROUTERS)}")
    return value


class RouterSpec(Spec):
    policy: str = "round-robin"

    @field_validator("policy")
    @classmethod
    def _known(cls, value: str) -> str:
        return _known_router(value)


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
    precision: PrecisionSpec = PrecisionSpec()
    parallel: ParallelSpec = ParallelSpec()
    scheduler: SchedulerSpec = SchedulerSpec()
    router: RouterSpec = RouterSpec()
    workload: WorkloadSpec
    slo: SLOSpec = SLOSpec()
    output: OutputSpec = OutputSpec()
    engine: EngineSpec = EngineSpec()
    compare: CompareSpec | None = None
    disaggregation: DisaggregationSpec | None = None
    offload: OffloadSpec | None = None

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
        raise LlmsimError(f"--set expects key.path=value, got {assignment!r}")
    path, raw = assignment.split("=", 1)
    keys = [k for k in path.strip().split(".") if k]
    if not keys:
        raise LlmsimError(f"--set expects key.path=value, got {assignment!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node: Any = data
    for i, key in enumerate(keys[:-1]):
        if not isinstance(node, dict):
            raise LlmsimError("cannot set inside a non-mapping", key=".".join(keys[:i]))
        nxt = node.get(key)
        if nxt is None or (isinstance(nxt, str) and key in ("cluster", "model")):
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
    return catalog.cluster_from_ref(name).model_dump(by_alias=True)


def _resolve_refs(data: dict[str, Any], file: str | None, base_dir: Path) -> dict[str, Any]:
    out = dict(data)
    for key in ("cluster", "model"):
        if key not in out:
            raise LlmsimError("required key is missing", file=file, key=key)
    model = out["model"]
    try:
        if isinstance(model, str):
            path = base_dir / model
            ref = str(path) if path.suffix in (".yaml", ".json") and path.exists() else model
            out["model"] = catalog.load_model(ref).model_dump(by_alias=True)
    except LlmsimError as exc:
        raise LlmsimError(exc.message, file=file, key="model") from None
    cluster = out["cluster"]
    try:
        if isinstance(cluster, str):
            spec = catalog.cluster_from_ref(cluster)
        elif isinstance(cluster, dict):
            spec = catalog.parse_spec(ClusterSpec, cluster, file or "", "cluster")
        else:
            raise LlmsimError("expected a cluster name or mapping", key="cluster")
        out["cluster"] = catalog.resolve_cluster(spec).model_dump(by_alias=True)
    except LlmsimError as exc:
        key = exc.key if exc.key and exc.key.startswith("cluster") else "cluster"
        raise LlmsimError(exc.message, file=file, key=key) from None
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
                    raise LlmsimError(exc.message, file=file, key=exc.key or key) from None
                dis[role] = {**pool, "cluster": spec.model_dump(by_alias=True)}
        out["disaggregation"] = dis
    if "workload" not in out:
        raise LlmsimError("required key is missing", file=file, key="workload")
    out["workload"] = parse_workload(out["workload"], file, base_dir)
    return out


def load_scenario(
    source: str | Path | dict[str, Any], overrides: list[str] | tuple[str, ...] = ()
) -> Scenario:
    """Read, override, resolve and validate a scenario (a path or a raw mapping)."""
    if isinstance(source, dict):
        data, file, base_dir = copy.deepcopy(source), None, Path.cwd()
    else:
        path = Path(source)
        if not path.exists():
            try:
                path = catalog.find("scenario", str(source))
            except LlmsimError:
                raise LlmsimError("file not found", file=str(source)) from None
        raw = catalog.read_yaml(path)
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
        raise pydantic_error(exc, file) from None
    except LlmsimError as exc:
        raise exc.at(file=file) from None
    scenario._file = file
    scenario._base_dir = base_dir
    check_scenario(scenario)
    return scenario


def check_scenario(s: Scenario) -> None:
    """Combinations no single field can judge: parallelism against the model and the
    cluster. Memory fit is checked when the replicas are built (it needs the cost of
    the activations), with the same kind of error."""
    from sim.cost.layouts import check_layout

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
    from sim.cost.topology import n_devices

    if s.disaggregation is not None:
        _check_pools(s, s.disaggregation)
        return
    if s.offload is not None:
        _check_offload(s, s.offload)
    have = n_devices(s.cluster)
    need = par.replicas * par.devices_per_replica
    if need > have:
        raise s.error(
            f"replicas × tp × pp = {par.replicas} × {par.tp} × {par.pp} = {need} devices, "
            f"but cluster {s.cluster.name} has {have}",
            "parallel",
        )


def _check_pools(s: Scenario, dis: DisaggregationSpec) -> None:
    from sim.cost.topology import n_devices

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
