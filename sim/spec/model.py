"""A model architecture as data: the numbers a transformer's cost depends on.

Decoder-only transformers (GPT, OPT, LLaMA, Mistral, Mixtral, PaLM, Qwen, ...) and
encoder-only ones (BERT) fit one schema: layers of attention (MHA, GQA or MQA; with an
optional sliding window) and an MLP (plain two-matrix or gated three-matrix; dense or
a mixture of experts). `n_heads * d_head` need not equal `d_model` (GPT-3 13B has
d_model 5140 with 40 heads of 128).
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

    @model_validator(mode="after")
    def _k(self) -> MoESpec:
        if self.top_k > self.n_experts:
            raise ValueError(f"top_k={self.top_k} exceeds n_experts={self.n_experts}")
        return self


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
        return self

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
