"""A Hugging Face `config.json` read as a `ModelSpec`.

`model_from_hf_config(path)` maps the field names of the common `transformers` config
classes onto the schema in `sim.spec.model`:

| ModelSpec      | config.json keys, first present wins                                   |
|----------------|------------------------------------------------------------------------|
| n_layers       | num_hidden_layers, n_layer, num_layers                                 |
| d_model        | hidden_size, n_embd, d_model                                           |
| n_heads        | num_attention_heads, n_head, num_heads                                 |
| n_kv_heads     | num_key_value_heads, num_kv_heads (Falcon: multi_query -> 1)           |
| d_head         | head_dim                                                               |
| d_ff           | intermediate_size, ffn_dim, n_inner, ffn_hidden_size                   |
| vocab_size     | vocab_size                                                             |
| max_seq_len    | max_position_embeddings, n_positions, seq_length, n_ctx                |
| sliding_window | sliding_window (unless use_sliding_window is false)                    |
| moe            | num_local_experts / num_experts / n_routed_experts, num_experts_per_tok,|
|                | moe_intermediate_size, n_shared_experts (DeepSeek),                    |
|                | shared_expert_intermediate_size (Qwen2-MoE: one shared expert),        |
|                | first_k_dense_replace, moe_layer_freq (DeepSeek)                       |
| mla            | kv_lora_rank, q_lora_rank, qk_nope_head_dim, qk_rope_head_dim,         |
|                | v_head_dim (DeepSeek-V2/V3; d_head is then qk_nope + qk_rope)          |
| tied_embeddings| tie_word_embeddings                                                    |
| activation     | hidden_act, activation_function, hidden_activation                     |
| norm           | rmsnorm when rms_norm_eps is present, else the family's norm           |

What a config.json does not say is taken from its `model_type` (or, failing that, its
`architectures` entry): whether the MLP is gated, the norm, biases, the position
encoding, parallel attention+MLP blocks, the default for tied embeddings (the
`transformers` class default), and whether it is an encoder. Supported families: llama,
mistral, mixtral, qwen2, qwen2_moe, qwen3, qwen3_moe, deepseek_v2, deepseek_v3, internlm,
opt, gpt2, gpt_neox, phi, falcon and bert. Refused, with what the op model lacks: gemma2
and gemma3 (sliding-window and global attention alternate by layer; one window serves
every layer here) and llama4 (chunked local attention on 3 of 4 layers, NoPE on the
4th). Assumptions:

- DeepSeek's multi-token-prediction module (`num_nextn_predict_layers`) is not counted:
  it is not run when serving without speculative decoding (the 671B of DeepSeek-V3
  exclude its 14B). Router biases (`e_score_correction_bias`), Qwen2-MoE's shared-expert
  gate (d_model → 1) and Qwen3's per-head q/k norms are not counted (under 0.001%).
- Qwen-MoE layers are MoE when `decoder_sparse_step` is 1 and `mlp_only_layers` empty;
  other patterns are refused (the schema has DeepSeek's `first_k_dense_replace` /
  `moe_layer_freq` rule only).

- Gated MLPs (LLaMA-style) have three matrices of width `d_ff`; plain ones have two.
- A missing d_ff on GPT-2 / Falcon means 4 * d_model, the class default.
- Biases a family puts only on some projections are rounded to the schema's two
  switches: InternLM `bias` and LLaMA `attention_bias` set `qkv_bias`; the O-projection
  bias they also add is not counted.
- Rotary details (partial rotary, rope scaling, theta) do not change the cost and are
  ignored, as are dropout, initialisation and token ids.
- `n_kv_heads` equal to `n_heads` and `head_dim` equal to `d_model / n_heads` are left
  unset (the schema's defaults), so a config.json and its catalog YAML compare equal.
- The name is the config's directory name, lower-cased (`_name_or_path` when the directory
  is a hub-cache commit hash); `_name_or_path` also becomes an alias.

Every problem is an `LlmsimError` naming the file and the config key; no KeyError,
TypeError or pydantic ValidationError escapes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from sim.errors import LlmsimError
from sim.spec.base import shown, validation_error
from sim.spec.model import ModelSpec

Activation = Literal["gelu", "relu", "silu"]
Position = Literal["rotary", "learned", "alibi"]


@dataclass(frozen=True)
class _Family:
    """What a model_type implies that its config.json leaves unsaid."""

    mlp: Literal["gated", "plain"]
    activation: Activation
    norm: Literal["layernorm", "rmsnorm"]
    bias: bool
    position: Position
    tied: bool  # the transformers config class default for tie_word_embeddings
    qkv_bias: bool | None = None
    parallel_block: bool = False
    encoder_only: bool = False
    d_ff_default_4x: bool = False


_LLAMA = _Family("gated", "silu", "rmsnorm", False, "rotary", tied=False)
_QWEN2 = _Family("gated", "silu", "rmsnorm", False, "rotary", tied=False, qkv_bias=True)
FAMILIES: dict[str, _Family] = {
    "llama": _LLAMA,
    "mistral": _LLAMA,
    "mixtral": _LLAMA,
    "internlm": _LLAMA,
    "deepseek_v2": _LLAMA,
    "deepseek_v3": _LLAMA,
    "qwen3": _LLAMA,
    "qwen3_moe": _LLAMA,
    "qwen2": _QWEN2,
    "qwen2_moe": _QWEN2,
    "opt": _Family("plain", "relu", "layernorm", True, "learned", tied=True),
    "gpt2": _Family("plain", "gelu", "layernorm", True, "learned", tied=True, d_ff_default_4x=True),
    "gpt_neox": _Family(
        "plain", "gelu", "layernorm", True, "rotary", tied=False, parallel_block=True
    ),
    "phi": _Family("plain", "gelu", "layernorm", True, "rotary", tied=False, parallel_block=True),
    "falcon": _Family(
        "plain",
        "gelu",
        "layernorm",
        False,
        "rotary",
        tied=True,
        parallel_block=True,
        d_ff_default_4x=True,
    ),
    "bert": _Family("plain", "gelu", "layernorm", True, "learned", tied=True, encoder_only=True),
}

# Families whose layers differ in attention: one line says what the op model lacks.
UNREPRESENTABLE: dict[str, str] = {
    "gemma2": (
        "sliding-window and global attention alternate layer by layer (sliding_window on "
        "every other layer); the op model has one attention window for all layers"
    ),
    "gemma3": (
        "sliding-window and global attention alternate layer by layer (5 local to 1 "
        "global); the op model has one attention window for all layers"
    ),
    "llama4": (
        "chunked local attention (attention_chunk_size) on 3 of every 4 layers and no "
        "rotary on the 4th; the op model has one attention kind for all layers"
    ),
}

_ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "DeepseekV2ForCausalLM": "deepseek_v2",
    "DeepseekV3ForCausalLM": "deepseek_v3",
    "Qwen2MoeForCausalLM": "qwen2_moe",
    "Qwen3ForCausalLM": "qwen3",
    "Qwen3MoeForCausalLM": "qwen3_moe",
    "MistralForCausalLM": "mistral",
    "MixtralForCausalLM": "mixtral",
    "InternLMForCausalLM": "internlm",
    "Qwen2ForCausalLM": "qwen2",
    "OPTForCausalLM": "opt",
    "GPT2LMHeadModel": "gpt2",
    "GPTNeoXForCausalLM": "gpt_neox",
    "PhiForCausalLM": "phi",
    "FalconForCausalLM": "falcon",
    "BertModel": "bert",
    "BertForMaskedLM": "bert",
    "BertForPreTraining": "bert",
}

_ACTIVATIONS: dict[str, Activation] = {
    "silu": "silu",
    "swish": "silu",
    "relu": "relu",
    "gelu": "gelu",
    "gelu_new": "gelu",
    "gelu_fast": "gelu",
    "gelu_python": "gelu",
    "gelu_pytorch_tanh": "gelu",
    "gelu_accurate": "gelu",
    "quick_gelu": "gelu",
}

_N_LAYERS = ("num_hidden_layers", "n_layer", "num_layers")
_D_MODEL = ("hidden_size", "n_embd", "d_model")
_N_HEADS = ("num_attention_heads", "n_head", "num_heads")
_N_KV_HEADS = ("num_key_value_heads", "num_kv_heads")
_D_FF = ("intermediate_size", "ffn_dim", "n_inner", "ffn_hidden_size")
_MAX_SEQ = ("max_position_embeddings", "n_positions", "seq_length", "n_ctx")
_N_EXPERTS = ("num_local_experts", "num_experts", "n_routed_experts")
_MLA_KEYS = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
_ACT_KEYS = ("hidden_act", "activation_function", "hidden_activation")
_COMMIT = re.compile(r"[0-9a-f]{40}")


class _Config:
    """A config.json mapping whose lookups raise LlmsimError naming the file and key."""

    def __init__(self, data: dict[str, Any], file: str):
        self.data = data
        self.file = file

    def error(self, message: str, key: str | None) -> LlmsimError:
        return LlmsimError(message, file=self.file, key=key)

    def first(self, keys: tuple[str, ...]) -> tuple[str, Any] | None:
        """The first of `keys` present with a non-null value."""
        for key in keys:
            if self.data.get(key) is not None:
                return key, self.data[key]
        return None

    def int_(self, keys: tuple[str, ...], default: int | None = None) -> tuple[str, int | None]:
        """A positive integer under the first present key; `default` when none is."""
        found = self.first(keys)
        if found is None:
            return keys[0], default
        key, value = found
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.error(f"expected a positive integer, got {shown(value)}", key)
        return key, value

    def required_int(self, keys: tuple[str, ...]) -> tuple[str, int]:
        key, value = self.int_(keys)
        if value is None:
            others = f" (nor {', '.join(keys[1:])})" if len(keys) > 1 else ""
            raise self.error(f"required key is missing{others}", keys[0])
        return key, value

    def bool_(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(f"expected true or false, got {shown(value)}", key)
        return value


def _read(path: Path) -> dict[str, Any]:
    file = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise LlmsimError("file not found", file=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LlmsimError(f"cannot read file: {exc}", file=file) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LlmsimError(f"line {exc.lineno}: malformed JSON: {exc.msg}", file=file) from None
    if not isinstance(data, dict):
        raise LlmsimError(f"expected a JSON object, got {type(data).__name__}", file=file)
    return data


def _family(cfg: _Config) -> tuple[str, _Family]:
    model_type = cfg.data.get("model_type")
    if model_type is None:
        archs = cfg.data.get("architectures")
        if isinstance(archs, list):
            known = [_ARCHITECTURES[a] for a in archs if isinstance(a, str) and a in _ARCHITECTURES]
            model_type = known[0] if known else None
        if model_type is None:
            raise cfg.error(
                "required key is missing (and no known `architectures` entry); "
                f"supported: {', '.join(sorted(FAMILIES))}",
                "model_type",
            )
    if isinstance(model_type, str) and model_type in UNREPRESENTABLE:
        raise cfg.error(
            f"model_type {model_type!r} cannot be represented: {UNREPRESENTABLE[model_type]}",
            "model_type",
        )
    if not isinstance(model_type, str) or model_type not in FAMILIES:
        raise cfg.error(
            f"unsupported model_type {shown(model_type)}; supported: {', '.join(sorted(FAMILIES))}",
            "model_type",
        )
    return model_type, FAMILIES[model_type]


def _activation(cfg: _Config, family: _Family) -> Activation:
    found = cfg.first(_ACT_KEYS)
    if found is None:
        return family.activation
    key, value = found
    if not isinstance(value, str) or value.lower() not in _ACTIVATIONS:
        raise cfg.error(
            f"unsupported activation {shown(value)}; supported: {', '.join(sorted(_ACTIVATIONS))}",
            key,
        )
    return _ACTIVATIONS[value.lower()]


def _kv_heads(cfg: _Config, model_type: str, n_heads: int) -> tuple[str, int | None]:
    if model_type == "falcon":
        if cfg.bool_("new_decoder_architecture", False):
            return cfg.int_(("num_kv_heads",), default=n_heads)
        return "multi_query", 1 if cfg.bool_("multi_query", True) else None
    return cfg.int_(_N_KV_HEADS)


def _d_ff(cfg: _Config, family: _Family, d_model: int) -> tuple[str, int]:
    if family.d_ff_default_4x:
        key, value = cfg.int_(_D_FF, default=4 * d_model)
        return key, value if value is not None else 4 * d_model
    return cfg.required_int(_D_FF)


def _biases(cfg: _Config, model_type: str, family: _Family) -> tuple[bool, bool | None]:
    bias, qkv_bias = family.bias, family.qkv_bias
    if model_type in ("llama", "mistral", "mixtral", "qwen3", "qwen3_moe"):
        if cfg.bool_("attention_bias", False):
            qkv_bias = True
        if cfg.bool_("mlp_bias", False):
            bias = True
            qkv_bias = cfg.bool_("attention_bias", False)
    elif model_type == "internlm":
        qkv_bias = cfg.bool_("bias", True)
    elif model_type == "opt":
        bias = cfg.bool_("enable_bias", True)
    elif model_type == "falcon":
        bias = cfg.bool_("bias", False)
    return bias, qkv_bias


def _moe(cfg: _Config, model_type: str, take: Any, used: dict[str, str]) -> dict[str, Any] | None:
    """The `moe:` block: experts, top-k, widths, shared experts and dense layers."""
    experts_key, n_experts = cfg.int_(_N_EXPERTS)
    if n_experts is None or n_experts <= 1:
        return None
    used["moe.n_experts"] = experts_key
    used["moe"] = "num_experts_per_tok"  # the only cross-field check: top_k <= n_experts
    top_k = take("moe.top_k", cfg.required_int(("num_experts_per_tok",)))
    moe: dict[str, Any] = {"n_experts": n_experts, "top_k": top_k}
    d_ff_expert = take("moe.d_ff_expert", cfg.int_(("moe_intermediate_size",)))
    if d_ff_expert is not None:
        moe["d_ff_expert"] = d_ff_expert
    shared_key, shared = cfg.int_(("n_shared_experts",))
    if shared is not None:
        used["moe.shared_experts"] = shared_key
        moe["shared_experts"] = shared
    shared_ff_key, shared_ff = cfg.int_(("shared_expert_intermediate_size",))
    if shared_ff is not None:  # Qwen2-MoE: one shared expert of this width
        used["moe.d_ff_shared"] = shared_ff_key
        moe["shared_experts"] = moe.get("shared_experts", 1)
        moe["d_ff_shared"] = shared_ff
    first = cfg.data.get("first_k_dense_replace")
    if first is not None:
        if isinstance(first, bool) or not isinstance(first, int) or first < 0:
            raise cfg.error(
                f"expected a non-negative integer, got {shown(first)}", "first_k_dense_replace"
            )
        used["moe.first_dense_layers"] = "first_k_dense_replace"
        moe["first_dense_layers"] = first
    freq = take("moe.layer_freq", cfg.int_(("moe_layer_freq",)))
    if freq is not None:
        moe["layer_freq"] = freq
    if model_type in ("qwen2_moe", "qwen3_moe"):
        step = cfg.data.get("decoder_sparse_step", 1)
        only = cfg.data.get("mlp_only_layers") or []
        if step != 1:
            raise cfg.error(
                f"decoder_sparse_step {shown(step)} cannot be represented: the op model places "
                "dense layers first (first_k_dense_replace) or every moe_layer_freq-th",
                "decoder_sparse_step",
            )
        if only:
            raise cfg.error(
                f"dense layers {shown(only)} cannot be represented: the op model places dense "
                "layers first (first_k_dense_replace)",
                "mlp_only_layers",
            )
    return moe


def _mla(cfg: _Config, take: Any) -> dict[str, Any] | None:
    """The `mla:` block of a DeepSeek-V2/V3 config (None without kv_lora_rank)."""
    if cfg.data.get("kv_lora_rank") is None:
        return None
    mla: dict[str, Any] = {}
    for key in _MLA_KEYS:
        mla[key] = take(f"mla.{key}", cfg.required_int((key,)))
    q_lora = take("mla.q_lora_rank", cfg.int_(("q_lora_rank",)))
    if q_lora is not None:
        mla["q_lora_rank"] = q_lora
    return mla


def _name(path: Path, cfg: _Config) -> tuple[str, tuple[str, ...]]:
    hub_id = cfg.data.get("_name_or_path")
    hub_id = hub_id if isinstance(hub_id, str) and hub_id else None
    folder = path.resolve().parent.name
    if folder and not _COMMIT.fullmatch(folder):
        name = folder
    elif hub_id:
        name = hub_id
    else:
        name = path.stem
    name = name.lower()
    aliases = (hub_id,) if hub_id and hub_id.lower() != name else ()
    return name, aliases


def model_from_hf_config(path: Path) -> ModelSpec:
    """The ModelSpec of a Hugging Face `config.json` (or a directory holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    file = str(path)
    cfg = _Config(_read(path), file)
    model_type, family = _family(cfg)

    used: dict[str, str] = {}  # ModelSpec field -> the config key it came from

    def take(field: str, key_value: tuple[str, Any]) -> Any:
        used[field] = key_value[0]
        return key_value[1]

    n_layers = take("n_layers", cfg.required_int(_N_LAYERS))
    d_model = take("d_model", cfg.required_int(_D_MODEL))
    n_heads = take("n_heads", cfg.required_int(_N_HEADS))
    n_kv_heads = take("n_kv_heads", _kv_heads(cfg, model_type, n_heads))
    d_head = take("d_head", cfg.int_(("head_dim",)))
    d_ff = take("d_ff", _d_ff(cfg, family, d_model))
    vocab_size = take("vocab_size", cfg.required_int(("vocab_size",)))
    max_seq_len = take("max_seq_len", cfg.required_int(_MAX_SEQ))

    if d_head is None and d_model % n_heads:
        raise cfg.error(
            f"{d_model} is not a multiple of {used['n_heads']}={n_heads} and no head_dim is given",
            used["d_model"],
        )
    if n_kv_heads is not None and (n_kv_heads > n_heads or n_heads % n_kv_heads):
        raise cfg.error(
            f"{n_kv_heads} key/value heads must divide {used['n_heads']}={n_heads}",
            used["n_kv_heads"],
        )

    # Written out only where they differ from the schema defaults, as the catalog does.
    if n_kv_heads == n_heads:
        n_kv_heads = None
    if d_head is not None and d_head * n_heads == d_model:
        d_head = None

    sliding_window = None
    if cfg.bool_("use_sliding_window", True):
        sliding_window = take("sliding_window", cfg.int_(("sliding_window",)))

    moe = _moe(cfg, model_type, take, used)
    mla = _mla(cfg, take)
    if mla is not None:
        d_head = mla["qk_nope_head_dim"] + mla["qk_rope_head_dim"]  # the per-head Q/K width
        used["d_head"] = "qk_nope_head_dim"

    bias, qkv_bias = _biases(cfg, model_type, family)
    position: Position = family.position
    if model_type == "falcon" and cfg.bool_("alibi", False):
        position = "alibi"
    parallel_block = family.parallel_block
    if model_type == "gpt_neox":
        parallel_block = cfg.bool_("use_parallel_residual", True)
    elif model_type == "falcon":
        parallel_block = cfg.bool_("parallel_attn", True)
    norm = "rmsnorm" if "rms_norm_eps" in cfg.data else family.norm

    name, aliases = _name(path, cfg)
    data: dict[str, Any] = {
        "name": name,
        "aliases": aliases,
        "family": model_type,
        "description": f"read from {file}",
        "n_layers": n_layers,
        "d_model": d_model,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "d_head": d_head,
        "d_ff": d_ff,
        "mlp": family.mlp,
        "activation": _activation(cfg, family),
        "norm": norm,
        "bias": bias,
        "qkv_bias": qkv_bias,
        "vocab_size": vocab_size,
        "max_seq_len": max_seq_len,
        "position": position,
        "parallel_block": parallel_block,
        "tied_embeddings": cfg.bool_("tie_word_embeddings", family.tied),
        "sliding_window": sliding_window,
        "moe": moe,
        "mla": mla,
        "encoder_only": family.encoder_only,
        "sources": {"architecture": f"Hugging Face config.json at {file}"},
    }
    try:
        return ModelSpec.model_validate(data)
    except ValidationError as exc:
        err = validation_error(exc, file, ModelSpec)
        key = used.get(err.key or "", err.key)
        raise LlmsimError(err.message, file=file, key=key) from None
