"""sim.spec.hf_config: Hugging Face config.json files read as ModelSpecs; the models catalog."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sim.errors import LlmsimError
from sim.spec.catalog import clear_cache, entries, load_model
from sim.spec.hf_config import model_from_hf_config
from sim.spec.model import ModelSpec
from sim.spec.yamlio import read_yaml

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION = ROOT.parent / "shared" / "data" / "calibration" / "vidur" / "profiling" / "compute"

# Trimmed copies of the published config.json files (the keys the converter reads and a
# few it must ignore).
LLAMA_2_7B: dict[str, Any] = {
    "_name_or_path": "meta-llama/Llama-2-7b-hf",
    "architectures": ["LlamaForCausalLM"],
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 11008,
    "max_position_embeddings": 4096,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "torch_dtype": "float16",
    "vocab_size": 32000,
}
MISTRAL_7B: dict[str, Any] = {
    "architectures": ["MistralForCausalLM"],
    "hidden_act": "silu",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mistral",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "rms_norm_eps": 1e-05,
    "rope_theta": 10000.0,
    "sliding_window": 4096,
    "tie_word_embeddings": False,
    "vocab_size": 32000,
}
MIXTRAL_8X7B: dict[str, Any] = {
    "architectures": ["MixtralForCausalLM"],
    "hidden_act": "silu",
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "model_type": "mixtral",
    "num_attention_heads": 32,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "output_router_logits": False,
    "rms_norm_eps": 1e-05,
    "rope_theta": 1e6,
    "router_aux_loss_coef": 0.02,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "vocab_size": 32000,
}
OPT_13B: dict[str, Any] = {
    "_name_or_path": "facebook/opt-13b",
    "activation_function": "relu",
    "architectures": ["OPTForCausalLM"],
    "do_layer_norm_before": True,
    "ffn_dim": 20480,
    "hidden_size": 5120,
    "max_position_embeddings": 2048,
    "model_type": "opt",
    "num_attention_heads": 40,
    "num_hidden_layers": 40,
    "vocab_size": 50272,
    "word_embed_proj_dim": 5120,
}
QWEN2_7B: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_act": "silu",
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "max_position_embeddings": 131072,
    "max_window_layers": 28,
    "model_type": "qwen2",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "sliding_window": 131072,
    "tie_word_embeddings": False,
    "use_sliding_window": False,
    "vocab_size": 152064,
}
GPT2: dict[str, Any] = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_ctx": 1024,
    "n_embd": 768,
    "n_head": 12,
    "n_inner": None,
    "n_layer": 12,
    "n_positions": 1024,
    "vocab_size": 50257,
}
PHI_2: dict[str, Any] = {
    "_name_or_path": "microsoft/phi-2",
    "architectures": ["PhiForCausalLM"],
    "hidden_act": "gelu_new",
    "hidden_size": 2560,
    "intermediate_size": 10240,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 2048,
    "model_type": "phi",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 32,
    "partial_rotary_factor": 0.4,
    "qk_layernorm": False,
    "tie_word_embeddings": False,
    "vocab_size": 51200,
}
BERT_BASE: dict[str, Any] = {
    "architectures": ["BertForMaskedLM"],
    "hidden_act": "gelu",
    "hidden_size": 768,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-12,
    "max_position_embeddings": 512,
    "model_type": "bert",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "type_vocab_size": 2,
    "vocab_size": 30522,
}

# The fields a config.json and a catalog entry must agree on (not names or provenance).
ARCH_FIELDS = sorted(
    set(ModelSpec.model_fields) - {"name", "aliases", "family", "description", "sources"}
)


def write_config(folder: Path, config: dict[str, Any] | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
    return path


def same_architecture(a: ModelSpec, b: ModelSpec) -> bool:
    return all(getattr(a, f) == getattr(b, f) for f in ARCH_FIELDS)


@pytest.fixture(autouse=True)
def _fresh_catalog():
    clear_cache()
    yield
    clear_cache()


# ---------------------------------------------------------------- mapping


def test_llama_2_7b(tmp_path: Path) -> None:
    spec = model_from_hf_config(write_config(tmp_path / "Llama-2-7b-hf", LLAMA_2_7B))
    assert spec.name == "llama-2-7b-hf"
    assert spec.aliases == ("meta-llama/Llama-2-7b-hf",)
    assert spec.family == "llama"
    assert (spec.n_layers, spec.d_model, spec.n_heads, spec.d_ff) == (32, 4096, 32, 11008)
    assert spec.kv_heads == 32 and spec.attention_kind == "MHA" and spec.head_dim == 128
    assert (spec.mlp, spec.activation, spec.norm) == ("gated", "silu", "rmsnorm")
    assert not spec.bias and not spec.has_qkv_bias
    assert (spec.vocab_size, spec.max_seq_len) == (32000, 4096)
    assert spec.position == "rotary" and not spec.parallel_block
    assert not spec.tied_embeddings and not spec.encoder_only
    assert spec.sliding_window is None and spec.moe is None
    assert str(tmp_path) in spec.sources["architecture"]


def test_mistral_keeps_its_sliding_window(tmp_path: Path) -> None:
    spec = model_from_hf_config(write_config(tmp_path / "mistral", MISTRAL_7B))
    assert spec.sliding_window == 4096
    assert spec.kv_heads == 8 and spec.attention_kind == "GQA"
    assert spec.d_ff == 14336 and spec.max_seq_len == 32768


def test_a_disabled_sliding_window_is_dropped(tmp_path: Path) -> None:
    spec = model_from_hf_config(write_config(tmp_path / "qwen2", QWEN2_7B))
    assert spec.sliding_window is None
    assert spec.has_qkv_bias and not spec.bias
    assert (spec.kv_heads, spec.vocab_size, spec.max_seq_len) == (4, 152064, 131072)


def test_mixtral_experts(tmp_path: Path) -> None:
    spec = model_from_hf_config(write_config(tmp_path / "mixtral", MIXTRAL_8X7B))
    assert spec.moe is not None
    assert (spec.moe.n_experts, spec.moe.top_k, spec.moe.shared_experts) == (8, 2, 0)
    assert spec.d_ff_expert == 14336
    assert spec.sliding_window is None  # null in the config


def test_moe_expert_width_and_shared_experts(tmp_path: Path) -> None:
    config = {**MIXTRAL_8X7B, "moe_intermediate_size": 1408, "n_shared_experts": 2}
    spec = model_from_hf_config(write_config(tmp_path / "moe", config))
    assert spec.moe is not None
    assert spec.d_ff_expert == 1408 and spec.moe.shared_experts == 2


def test_opt(tmp_path: Path) -> None:
    spec = model_from_hf_config(write_config(tmp_path / "opt-13b", OPT_13B))
    assert (spec.n_layers, spec.d_model, spec.n_heads, spec.d_ff) == (40, 5120, 40, 20480)
    assert (spec.mlp, spec.activation, spec.norm) == ("plain", "relu", "layernorm")
    assert spec.bias and spec.has_qkv_bias
    assert spec.position == "learned" and spec.tied_embeddings  # the OPTConfig defaults
    assert (spec.vocab_size, spec.max_seq_len) == (50272, 2048)


def test_gpt2_defaults_d_ff_to_four_times_d_model(tmp_path: Path) -> None:
    spec = model_from_hf_config(write_config(tmp_path / "gpt2", GPT2))
    assert (spec.n_layers, spec.d_model, spec.n_heads) == (12, 768, 12)
    assert spec.d_ff == 4 * 768 and spec.activation == "gelu"
    assert spec.max_seq_len == 1024 and spec.tied_embeddings


def test_phi_and_bert(tmp_path: Path) -> None:
    phi = model_from_hf_config(write_config(tmp_path / "phi-2", PHI_2))
    assert phi.parallel_block and phi.bias and phi.mlp == "plain" and phi.norm == "layernorm"
    bert = model_from_hf_config(write_config(tmp_path / "bert", BERT_BASE))
    assert bert.encoder_only and bert.position == "learned" and bert.max_seq_len == 512


def test_model_type_may_come_from_architectures(tmp_path: Path) -> None:
    config = {k: v for k, v in LLAMA_2_7B.items() if k != "model_type"}
    assert model_from_hf_config(write_config(tmp_path / "m", config)).family == "llama"


def test_explicit_head_dim(tmp_path: Path) -> None:
    config = {**MISTRAL_7B, "hidden_size": 5120, "head_dim": 128}  # 32 * 128 != 5120
    spec = model_from_hf_config(write_config(tmp_path / "m", config))
    assert spec.head_dim == 128 and spec.q_dim == 4096


def test_name_falls_back_to_name_or_path_in_a_hub_cache(tmp_path: Path) -> None:
    snapshot = tmp_path / "snapshots" / ("0123456789abcdef" * 3)[:40]
    spec = model_from_hf_config(write_config(snapshot, LLAMA_2_7B))
    assert spec.name == "meta-llama/llama-2-7b-hf" and spec.aliases == ()


# ---------------------------------------------------------------- through the catalog


def test_load_model_reads_a_config_file_and_a_directory(tmp_path: Path) -> None:
    path = write_config(tmp_path / "Llama-2-7b-hf", LLAMA_2_7B)
    by_file = load_model(str(path))
    by_dir = load_model(str(path.parent))
    assert by_file == by_dir
    assert by_file.name == "llama-2-7b-hf" and by_file.d_ff == 11008


@pytest.mark.parametrize(
    ("config", "catalog_name"),
    [
        (LLAMA_2_7B, "llama-2-7b"),
        (MISTRAL_7B, "mistral-7b"),
        (MIXTRAL_8X7B, "mixtral-8x7b"),
        (OPT_13B, "opt-13b"),
        (QWEN2_7B, "qwen2-7b"),
        (PHI_2, "phi-2"),
        (BERT_BASE, "bert-base"),
    ],
)
def test_a_config_json_agrees_with_its_catalog_entry(
    tmp_path: Path, config: dict[str, Any], catalog_name: str
) -> None:
    from_json = load_model(str(write_config(tmp_path / catalog_name, config)))
    from_yaml = load_model(catalog_name)
    diffs = {
        f: (getattr(from_json, f), getattr(from_yaml, f))
        for f in ARCH_FIELDS
        if getattr(from_json, f) != getattr(from_yaml, f)
    }
    assert not diffs


# ---------------------------------------------------------------- errors


def test_missing_num_hidden_layers_names_the_file_and_key(tmp_path: Path) -> None:
    config = {k: v for k, v in LLAMA_2_7B.items() if k != "num_hidden_layers"}
    path = write_config(tmp_path / "broken", config)
    with pytest.raises(LlmsimError) as info:
        load_model(str(path))
    assert info.value.file == str(path)
    assert info.value.key == "num_hidden_layers"
    assert "missing" in info.value.message
    assert str(info.value).startswith(f"{path}: num_hidden_layers: ")


def test_invalid_json(tmp_path: Path) -> None:
    path = write_config(tmp_path / "bad", '{"model_type": "llama",\n  "hidden_size": }')
    with pytest.raises(LlmsimError) as info:
        model_from_hf_config(path)
    assert info.value.file == str(path)
    assert "line 2" in info.value.message and "malformed JSON" in info.value.message


def test_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(LlmsimError, match="expected a JSON object"):
        model_from_hf_config(write_config(tmp_path / "list", "[1, 2]"))


def test_a_directory_without_config_json(tmp_path: Path) -> None:
    with pytest.raises(LlmsimError, match="file not found") as info:
        model_from_hf_config(tmp_path)
    assert info.value.file == str(tmp_path / "config.json")


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        ({"num_attention_heads": "32"}, "num_attention_heads", "positive integer"),
        ({"hidden_size": -4096}, "hidden_size", "positive integer"),
        ({"num_key_value_heads": 3}, "num_key_value_heads", "must divide"),
        ({"num_attention_heads": 3}, "hidden_size", "not a multiple"),
        ({"model_type": "mamba"}, "model_type", "unsupported model_type"),
        ({"hidden_act": "softplus"}, "hidden_act", "unsupported activation"),
        ({"tie_word_embeddings": "no"}, "tie_word_embeddings", "true or false"),
        ({"intermediate_size": None}, "intermediate_size", "missing"),
        ({"max_position_embeddings": None}, "max_position_embeddings", "missing"),
        ({"num_local_experts": 4, "num_experts_per_tok": 8}, "num_experts_per_tok", "top_k"),
        ({"num_local_experts": 4}, "num_experts_per_tok", "missing"),
    ],
)
def test_bad_values_name_their_key(
    tmp_path: Path, change: dict[str, Any], key: str, words: str
) -> None:
    path = write_config(tmp_path / "bad", {**LLAMA_2_7B, **change})
    with pytest.raises(LlmsimError) as info:
        model_from_hf_config(path)
    assert (info.value.file, info.value.key) == (str(path), key)
    assert words in info.value.message


def test_no_model_type_and_no_known_architecture(tmp_path: Path) -> None:
    config = {k: v for k, v in LLAMA_2_7B.items() if k not in ("model_type", "architectures")}
    with pytest.raises(LlmsimError) as info:
        model_from_hf_config(write_config(tmp_path / "m", config))
    assert info.value.key == "model_type"


JUNK: list[Any] = [None, "x", -1, 0, 1.5, True, [], [1], {}, {"a": 1}]


@pytest.mark.parametrize("junk", JUNK, ids=repr)
def test_junk_in_any_key_is_an_llmsim_error_or_ignored(tmp_path: Path, junk: Any) -> None:
    """Never a KeyError, TypeError or ValidationError, whichever key holds garbage."""
    for base in (LLAMA_2_7B, MIXTRAL_8X7B, OPT_13B, GPT2):
        for key in base:
            path = write_config(tmp_path / key, {**base, key: junk})
            try:
                model_from_hf_config(path)
            except LlmsimError as err:
                assert err.file == str(path)


# ---------------------------------------------------------------- the shipped catalog

MODELS = entries("model")


def test_the_catalog_has_models() -> None:
    names = {e.name for e in MODELS}
    assert {"llama-2-7b", "llama-3.1-405b", "gpt3-175b", "mixtral-8x7b", "bert-base"} <= names


@pytest.mark.parametrize("entry", MODELS, ids=lambda e: e.name)
def test_every_catalog_model_loads_and_its_aliases_resolve(entry: Any) -> None:
    spec = load_model(entry.name)
    assert spec.name == entry.path.stem == spec.name.lower()
    assert spec.sources, "every model says where its numbers come from"
    assert load_model(str(entry.path)) == spec
    for alias in spec.aliases:
        assert load_model(alias) == spec
        assert load_model(alias.lower()) == spec


def test_names_and_aliases_are_unique_across_files() -> None:
    seen: dict[str, str] = {}
    for entry in MODELS:
        data = read_yaml(entry.path)
        for key in (data["name"], *data.get("aliases", ())):
            assert key.lower() not in seen, f"{key} in {entry.path.name} and {seen[key.lower()]}"
            seen[key.lower()] = entry.path.name


def test_the_seed_shapes() -> None:
    """Shapes the project's seeds and the GPT-3 paper use (13B: d 5140, 40 heads of 128)."""
    gpt3_13b = load_model("gpt3-13b")
    assert (gpt3_13b.d_model, gpt3_13b.n_heads, gpt3_13b.head_dim) == (5140, 40, 128)
    gpt3_large = load_model("gpt3-760m")
    assert (gpt3_large.d_model, gpt3_large.n_heads, gpt3_large.head_dim) == (1536, 16, 96)
    assert load_model("llama-30b") == load_model("llama-33b")
    assert load_model("palm-540b").attention_kind == "MQA"


# ---------------------------------------------------------------- against the calibration data

PROFILED = sorted(CALIBRATION.glob("*/*/*/mlp.csv")) if CALIBRATION.is_dir() else []
# Where the profiler's vocab_size is not the checkpoint's: Vidur pads LLaMA vocabularies to
# 32768, and lists Qwen2-7B's tokenizer size (151936) rather than its 152064 embedding rows.
VOCAB_EXCEPTIONS = {
    "meta-llama/Llama-2-7b-hf": 32768,
    "codellama/CodeLlama-34b-Instruct-hf": 32768,
    "Qwen/Qwen-2-7B": 151936,
}


@pytest.mark.skipif(not PROFILED, reason=f"calibration data not found at {CALIBRATION}")
@pytest.mark.parametrize("csv", PROFILED, ids=lambda p: "/".join(p.parts[-4:-1]))
def test_catalog_agrees_with_the_profiled_shapes(csv: Path) -> None:
    import pandas as pd

    row = pd.read_csv(csv, nrows=1).iloc[0]
    hf_id = "/".join(csv.parts[-3:-1])
    spec = load_model(hf_id)
    assert int(row["n_head"]) == spec.n_heads
    assert int(row["n_kv_head"]) == spec.kv_heads
    assert int(row["n_embd"]) == spec.d_model
    assert int(row["n_expanded_embd"]) == spec.d_ff
    assert bool(row["use_gated_mlp"]) == (spec.mlp == "gated")
    assert int(row["vocab_size"]) == VOCAB_EXCEPTIONS.get(hf_id, spec.vocab_size)


# ---------------------------------------------------------------- MoE and MLA families

# Trimmed copies of deepseek-ai/DeepSeek-V3/config.json, Qwen/Qwen3-30B-A3B/config.json
# and Qwen/Qwen1.5-MoE-A2.7B/config.json (recalled).
DEEPSEEK_V3: dict[str, Any] = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "attention_bias": False,
    "first_k_dense_replace": 3,
    "hidden_act": "silu",
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "kv_lora_rank": 512,
    "max_position_embeddings": 163840,
    "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048,
    "moe_layer_freq": 1,
    "n_group": 8,
    "n_routed_experts": 256,
    "n_shared_experts": 1,
    "num_attention_heads": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 61,
    "num_key_value_heads": 128,
    "num_nextn_predict_layers": 1,
    "q_lora_rank": 1536,
    "qk_nope_head_dim": 128,
    "qk_rope_head_dim": 64,
    "quantization_config": {"fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]},
    "rms_norm_eps": 1e-06,
    "tie_word_embeddings": False,
    "topk_group": 4,
    "v_head_dim": 128,
    "vocab_size": 129280,
}
QWEN3_30B_A3B: dict[str, Any] = {
    "architectures": ["Qwen3MoeForCausalLM"],
    "attention_bias": False,
    "decoder_sparse_step": 1,
    "head_dim": 128,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "intermediate_size": 6144,
    "max_position_embeddings": 40960,
    "mlp_only_layers": [],
    "model_type": "qwen3_moe",
    "moe_intermediate_size": 768,
    "num_attention_heads": 32,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 48,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "use_sliding_window": False,
    "vocab_size": 151936,
}
QWEN15_MOE: dict[str, Any] = {
    "architectures": ["Qwen2MoeForCausalLM"],
    "decoder_sparse_step": 1,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "max_position_embeddings": 8192,
    "mlp_only_layers": [],
    "model_type": "qwen2_moe",
    "moe_intermediate_size": 1408,
    "num_attention_heads": 16,
    "num_experts": 60,
    "num_experts_per_tok": 4,
    "num_hidden_layers": 24,
    "num_key_value_heads": 16,
    "rms_norm_eps": 1e-06,
    "shared_expert_intermediate_size": 5632,
    "sliding_window": 32768,
    "tie_word_embeddings": False,
    "use_sliding_window": False,
    "vocab_size": 151936,
}


@pytest.mark.parametrize(
    ("config", "catalog_name"), [(DEEPSEEK_V3, "deepseek-v3"), (QWEN3_30B_A3B, "qwen3-30b-a3b")]
)
def test_moe_configs_agree_with_their_catalog_entries(
    tmp_path: Path, config: dict[str, Any], catalog_name: str
) -> None:
    from_json = load_model(str(write_config(tmp_path / catalog_name, config)))
    from_yaml = load_model(catalog_name)
    diffs = {
        f: (getattr(from_json, f), getattr(from_yaml, f))
        for f in ARCH_FIELDS
        if getattr(from_json, f) != getattr(from_yaml, f)
    }
    assert not diffs


def test_deepseek_v3_config_gives_the_published_figures(tmp_path: Path) -> None:
    from sim.plan.analyze import analyze

    m = model_from_hf_config(write_config(tmp_path / "deepseek-v3", DEEPSEEK_V3))
    assert m.mla is not None and m.mla.latent_dim == 576
    a = analyze(m, "h200", tp=8)
    assert a.params / 1e9 == pytest.approx(671.0, rel=5e-3)
    assert a.kv_bytes_per_token == 70_272


def test_deepseek_v2_lite_has_a_full_rank_query(tmp_path: Path) -> None:
    lite = {**DEEPSEEK_V3, "model_type": "deepseek_v2", "q_lora_rank": None}
    m = model_from_hf_config(write_config(tmp_path / "lite", lite))
    assert m.mla is not None and m.mla.q_lora_rank is None


def test_qwen2_moe_shared_expert_and_published_totals(tmp_path: Path) -> None:
    from sim.arith.params import active_params, total_params

    m = model_from_hf_config(write_config(tmp_path / "qwen1.5-moe-a2.7b", QWEN15_MOE))
    assert m.moe is not None
    assert (m.moe.shared_experts, m.d_ff_shared, m.has_qkv_bias) == (1, 5632, True)
    # Qwen blog 'Qwen1.5-MoE: Matching 7B Model Performance with 1/3 Activated Parameters'
    # (March 2024): 14.3B parameters in total, 2.7B activated
    assert total_params(m) / 1e9 == pytest.approx(14.3, rel=2e-3)
    assert active_params(m) / 1e9 == pytest.approx(2.7, rel=5e-3)


@pytest.mark.parametrize(
    ("model_type", "missing"),
    [("gemma2", "one attention window"), ("gemma3", "one attention window"), ("llama4", "chunk")],
)
def test_layerwise_attention_families_are_refused(
    tmp_path: Path, model_type: str, missing: str
) -> None:
    with pytest.raises(LlmsimError, match=missing) as info:
        model_from_hf_config(write_config(tmp_path / "m", {**LLAMA_2_7B, "model_type": model_type}))
    assert info.value.key == "model_type" and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"), [("decoder_sparse_step", 2), ("mlp_only_layers", [0, 1])]
)
def test_qwen_moe_layer_patterns_it_cannot_place_are_refused(
    tmp_path: Path, key: str, value: Any
) -> None:
    with pytest.raises(LlmsimError) as info:
        model_from_hf_config(write_config(tmp_path / "m", {**QWEN3_30B_A3B, key: value}))
    assert info.value.key == key


@pytest.mark.parametrize("junk", JUNK, ids=repr)
def test_junk_in_moe_and_mla_configs(tmp_path: Path, junk: Any) -> None:
    for base in (DEEPSEEK_V3, QWEN3_30B_A3B, QWEN15_MOE):
        for key in base:
            path = write_config(tmp_path / key, {**base, key: junk})
            try:
                model_from_hf_config(path)
            except LlmsimError as err:
                assert err.file == str(path)
