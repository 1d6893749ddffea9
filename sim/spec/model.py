"""A model architecture as data: the numbers a transformer's cost depends on.

Decoder-only transformers (GPT, OPT, LLaMA, Mistral, Mixtral, PaLM, Qwen, DeepSeek, ...)
and encoder-only ones (BERT) fit one schema: layers of attention (MHA, GQA or MQA; with
an optional sliding window; or DeepSeek's multi-head latent attention, `mla`) and an MLP
(plain two-matrix or gated three-matrix; dense or a mixture of experts). `n_heads *
d_head` need not equal `d_model` (GPT-3 13B has d_model 5140 with 40 heads of 128).

A mixture of experts may keep some layers dense: the first `moe.first_dense_layers`
(DeepSeek's `first_k_dense_replace`), and of the rest only every `moe.layer_freq`-th is
MoE (`moe_layer_freq`); dense layers use `d_ff`, experts `moe.d_ff_expert`. Every layer
has the same attention and the same window: models whose layers differ in attention
(Gemma's alternating sliding/global layers, Llama 4's chunked layers) do not fit.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from sim.spec.base import Spec


class MoESpec(Spec):
    n_experts: int = Field(gt=1)
    top_k: int = Field(gt=0)
    d_ff_expert: int | None = Field(default=None, gt=0, description="defaults to d_ff")
    shared_experts: int = Field(default=0, ge=0)
    d_ff_shared: int | None = Field(
        default=None,
        gt=0,
        description="all shared experts together; defaults to shared_experts × d_ff_expert",
    )
    first_dense_layers: int = Field(
        default=0, ge=0, description="leading layers with a dense MLP (first_k_dense_replace)"
    )
    layer_freq: int = Field(
        default=1, gt=0, description="after those, every layer_freq-th layer is MoE"
    )
    capacity_factor: float | None = Field(
        default=None,
        gt=0,
        description=(
            "None: dropless (grouped GEMM over the tokens each expert gets). Else every expert "
            "runs a fixed [capacity × d] GEMM, capacity = capacity_factor · tokens · top_k / "
            "n_experts (GShard/Switch dispatch; tokens beyond it dropped)"
        ),
    )

    @model_validator(mode="after")
    def _k(self) -> MoESpec:
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k={self.top_k} exceeds n_experts={self.n_experts}")
        if self.d_ff_shared is not None and not self.shared_experts:
            raise ValueError("d_ff_shared needs shared_experts ≥ 1")
        return self


class MLASpec(Spec):
    """DeepSeek-V2/V3 multi-head latent attention: K and V are cached as one
    `kv_lora_rank` latent plus a `qk_rope_head_dim` rotary key shared by all heads; each
    head's query/key is `qk_nope_head_dim + qk_rope_head_dim` wide and its value
    `v_head_dim`; queries pass through a `q_lora_rank` bottleneck (None: a full-rank
    Q projection, DeepSeek-V2-Lite)."""

    kv_lora_rank: int = Field(gt=0)
    q_lora_rank: int | None = Field(default=None, gt=0)
    qk_nope_head_dim: int = Field(gt=0)
    qk_rope_head_dim: int = Field(gt=0)
    v_head_dim: int = Field(gt=0)

    @model_validator(mode="after")
    def _even(self) -> MLASpec:
        # The attention ops carry one head_dim for QKᵀ and PV together: their mean.
        if (self.qk_head_dim + self.v_head_dim) % 2 or self.qk_rope_head_dim % 2:
            raise ValueError(
                "qk_nope_head_dim + qk_rope_head_dim + v_head_dim and qk_rope_head_dim must be even"
            )
        return self

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def latent_dim(self) -> int:
        """Cached values per token per layer: the latent and the shared rotary key."""
        return self.kv_lora_rank + self.qk_rope_head_dim


class ModelSpec(Spec):
    name: str
    aliases: tuple[str, ...] = ()
    family: str = ""
    description: str = ""
    n_layers: int = Field(gt=0)
    d_model: int = Field(gt=0)
    n_heads: int = Field(gt=0)
    n_kv_heads: int | None = Field(default=None, gt=0, description="defaults to n_heads (MHA)")
    d_head: int | None = Field(default=None, gt=0, description="defaults to d_model / n_heads")
    d_ff: int = Field(gt=0)
    mlp: Literal["gated", "plain"] = "plain"
    activation: Literal["gelu", "relu", "silu", "swiglu", "geglu"] = "gelu"
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    bias: bool = Field(default=False, description="biases on every linear layer")
    qkv_bias: bool | None = Field(default=None, description="overrides `bias` for Q, K, V")
    vocab_size: int = Field(gt=0)
    max_seq_len: int = Field(gt=0)
    position: Literal["rotary", "learned", "alibi", "relative", "none"] = "rotary"
    parallel_block: bool = Field(
        default=False, description="attention and MLP read the same input (GPT-J, PaLM)"
    )
    tied_embeddings: bool = False
    sliding_window: int | None = Field(default=None, gt=0)
    moe: MoESpec | None = None
    mla: MLASpec | None = None
    encoder_only: bool = False
    sources: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shapes(self) -> ModelSpec:
        if self.d_head is None and self.d_model % self.n_heads:
            raise ValueError(
                f"d_model={self.d_model} is not a multiple of n_heads={self.n_heads}; give d_head"
            )
        kv = self.kv_heads
        if kv > self.n_heads or self.n_heads % kv:
            raise ValueError(f"n_kv_heads={kv} must divide n_heads={self.n_heads}")
        if self.moe is not None and self.n_moe_layers == 0:
            raise ValueError(
                f"moe.first_dense_layers={self.moe.first_dense_layers} and "
                f"moe.layer_freq={self.moe.layer_freq} leave no MoE layer of {self.n_layers}"
            )
        return self

    @property
    def n_moe_layers(self) -> int:
        """Layers whose MLP is a mixture of experts (0 for a dense model): layer i
        (0-based) is MoE when i ≥ first_dense_layers and i % layer_freq == 0, as
        DeepSeek's modelling code decides."""
        if self.moe is None:
            return 0
        first, freq = self.moe.first_dense_layers, self.moe.layer_freq
        return sum(1 for i in range(first, self.n_layers) if i % freq == 0)

    @property
    def n_dense_layers(self) -> int:
        return self.n_layers - self.n_moe_layers

    @property
    def d_ff_shared(self) -> int:
        """Width of the shared experts together (0 without any)."""
        if self.moe is None or not self.moe.shared_experts:
            return 0
        if self.moe.d_ff_shared is not None:
            return self.moe.d_ff_shared
        return self.moe.shared_experts * self.d_ff_expert

    @property
    def kv_values_per_token(self) -> int:
        """Cached values per token per layer: K and V of every K/V head, or MLA's latent
        and rotary key."""
        if self.mla is not None:
            return self.mla.latent_dim
        return 2 * self.kv_dim

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def has_qkv_bias(self) -> bool:
        return self.bias if self.qkv_bias is None else self.qkv_bias

    @property
    def d_ff_expert(self) -> int:
        if self.moe and self.moe.d_ff_expert:
            return self.moe.d_ff_expert
        return self.d_ff

    def kv_tokens_kept(self, context: int) -> int:
        """Tokens of KV a sequence keeps: the whole context, or the sliding window."""
        return context if self.sliding_window is None else min(context, self.sliding_window)

    @property
    def attention_kind(self) -> str:
        if self.kv_heads == self.n_heads:
            return "MHA"
        return "MQA" if self.kv_heads == 1 else "GQA"
