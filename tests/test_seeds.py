"""Every worked number in shared/seeds/, reproduced by llmsim's arithmetic.

Each test names the seed file and line. Where a seed's printed figure disagrees with
its own formula, the test asserts the formula's value and says what was printed.
Seeds: 000 = "A simple blog of large model inference"; 001 = "Where do LLMs spend
their FLOPs" (OneFlow translation); 002 = notes on Pope et al., "Efficiently Scaling
Transformer Inference"; 003 = "DeepSpeed Inference, ByteTransformer, and FlexGen"
slides; 004 = ZOMI, "大模型推理显存分析" slides.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from sim.arith.memory import kv_bytes_peak, kv_bytes_per_token
from sim.arith.ops import Op, Work, layer_plan, op_bytes, op_flops
from sim.arith.params import (
    attention_params,
    flops_per_token,
    layer_params,
    mlp_params,
    non_embedding_params,
    total_params,
)
from sim.arith.precision import Precision
from sim.cost.roofline import RooflineKernel
from sim.plan.analyze import analyze
from sim.spec.catalog import load_device, load_model
from sim.spec.model import ModelSpec

GiB = 2**30


def gpt_block(name: str, layers: int, d: int, heads: int, d_head: int | None = None) -> ModelSpec:
    """A GPT-style block as the seeds count it: MHA with biases, LayerNorm, FFN 4d."""
    return ModelSpec(
        name=name,
        n_layers=layers,
        d_model=d,
        n_heads=heads,
        d_head=d_head,
        d_ff=4 * d,
        mlp="plain",
        norm="layernorm",
        bias=True,
        vocab_size=50257,
        max_seq_len=2048,
    )


# --------------------------------------------------------------------------- seed 003


def test_seed003_line38_params_per_layer_12d2_plus_13d():
    # 003:30-38: Q,K,V,O [d,d] + their biases, two LayerNorms, W1 [d,4d], W2 [4d,d].
    for d in (768, 1024, 1536, 12288):
        assert layer_params(gpt_block("x", 1, d, 16)) == 12 * d * d + 13 * d


# 003:51-57, the table: (model, layers, d, heads, printed params, printed GB (fp32, GiB)).
TABLE_003 = [
    ("bert-base", 12, 768, 12, 84.94e6, 0.3164),
    ("bert-large", 24, 1024, 16, 302.00e6, 1.1250),
    ("gpt3-small", 12, 768, 12, 84.94e6, 0.3164),
    ("gpt3-medium", 24, 1024, 16, 302.00e6, 1.1250),
    ("gpt3-large", 24, 1536, 16, 679.50e6, 2.5313),
    # 40 heads of 128 are 5120 wide; the table's 12d²+13d needs attention d=5140 wide,
    # so the block is built with 20 heads of 257.
    ("gpt3-13b", 40, 5140, 20, 12.68e9, 47.2421),
    ("gpt3-175b", 96, 12288, 96, 173.95e9, 648.0006),
]


@pytest.mark.parametrize(("name", "layers", "d", "heads", "printed", "printed_gb"), TABLE_003)
def test_seed003_table_params_and_fp32_storage(name, layers, d, heads, printed, printed_gb):
    # 003:61 #params = n_layers·(12d² + 13d); 003:63 storage = #params·4/1024³.
    params = non_embedding_params(gpt_block(name, layers, d, heads))
    assert params == layers * (12 * d * d + 13 * d)
    gib = params * 4 / GiB
    # The formula lands within 0.2% of every printed row; rows printed from other
    # arithmetic (BERT-base/GPT-3-small print 84.94M where the formula gives 85.05M;
    # BERT-large 302.00M vs 302.31M; GPT-3 large 679.50M vs 679.96M) are off by that.
    assert params == pytest.approx(printed, rel=2e-3)
    assert gib == pytest.approx(printed_gb, rel=2e-3)


def test_seed003_table_exact_formula_values():
    # The formula's values where the seed rounded or mis-printed (see the test above).
    assert non_embedding_params(gpt_block("b", 12, 768, 12)) == 85_054_464  # printed 84.94M
    assert non_embedding_params(gpt_block("l", 24, 1024, 16)) == 302_309_376  # printed 302.00M
    assert non_embedding_params(gpt_block("g", 24, 1536, 16)) == 679_956_480  # printed 679.50M
    assert non_embedding_params(gpt_block("13", 40, 5140, 20)) == 12_684_080_800  # 12.68B
    p175 = non_embedding_params(gpt_block("175", 96, 12288, 96))
    assert p175 == 173_961_510_912  # printed 173.95B: truncated, not rounded (173.96B)
    # printed 648.0006 GB; the formula gives 648.0571 GiB (the printed digits after the
    # point do not follow from 173.95B either: 173.95e9·4/1024³ = 648.0142).
    assert p175 * 4 / GiB == 648.05712890625


def test_seed003_gpt3_catalog_models_match_the_table():
    # The catalog's GPT-3 175B is the table's row; embeddings are extra.
    m = load_model("gpt3-175b")
    assert non_embedding_params(m) == 173_961_510_912
    assert total_params(m) > non_embedding_params(m)
    # GPT-3 13B in the catalog is the paper's d_model=5140 with 40 heads of 128 (5120
    # wide attention), so its attention has 4·5140·5120 weights, not 4·5140²; the
    # table's 12d²+13d assumes heads·d_head = d.
    m13 = load_model("gpt3-13b")
    assert m13.q_dim == 5120 and m13.d_model == 5140
    assert non_embedding_params(m13) == pytest.approx(12.68e9, rel=2e-3)


def test_seed003_line324_flexgen_kv_move_bytes_b_s_d_4():
    # 003:324 "The size of move KV cache is b × s × d × 4" per layer (fp16 K and V).
    m = load_model("opt-175b")
    b, s = 32, 512
    per_layer = kv_bytes_per_token(m, "fp16") / m.n_layers * b * s
    assert per_layer == b * s * m.d_model * 4


# --------------------------------------------------------------------------- seed 000


def test_seed000_line29_mha_weights_4h2_and_line35_ffn_2h1h2():
    m = load_model("opt-175b")  # OPT: MHA, plain FFN with h2 = 4·h1 (000:81)
    h1, h2 = m.d_model, m.d_ff
    assert (h1, h2, m.n_layers) == (12288, 49152, 96)
    # Weights without biases: n_bytes·4h1² (attention) and n_bytes·2h1h2 (FFN).
    assert attention_params(m) - (4 * h1 if m.bias else 0) == 4 * h1 * h1
    assert mlp_params(m) - (h2 + h1 if m.bias else 0) == 2 * h1 * h2


def test_seed000_line47_matmul_flops():
    # 000:47 a matrix-vector product is 2mn FLOPs, a matrix-matrix product 2mnp.
    m_, n_, p_ = 64, 4096, 11008
    gemm = Op("x", "gemm", n=p_, k=n_)
    assert op_flops(gemm, Work(tokens=m_)) == 2 * m_ * n_ * p_
    assert op_flops(gemm, Work(tokens=1)) == 2 * n_ * p_


def test_seed000_line49_kv_projection_memory_and_flops():
    # 000:49 K and V weights: n_bytes·2·l·h1²; computing K,V for n tokens: n·2·2·l·h1².
    m = load_model("opt-175b")
    h, l_ = m.d_model, m.n_layers
    tokens = 100
    split = flops_per_token(m)
    kv_part = split["qkv"] * 2 / 3  # K and V of the three equal MHA projections
    assert tokens * kv_part == tokens * 2 * 2 * l_ * h * h
    # The bytes the code prices for the K and V columns of the layer plan's fused QKV
    # projection, in fp16: the seed's n_bytes·2·h1² of weights per layer, plus each
    # token's activations (its h1 input and 2·h1 K,V outputs, 2 bytes each), of which
    # the seed writes only the input (n_token·h1) and then ignores it (000:51).
    fp16 = Precision("fp16", "fp16", "fp16")
    qkv = next(op for op in layer_plan(m, 1, fp16).ops if op.name == "qkv_proj")
    assert (qkv.n, qkv.k) == (3 * h, h)
    kv = replace(qkv, name="kv_proj", n=qkv.n - m.q_dim)
    assert op_flops(kv, Work(tokens=tokens)) * l_ == tokens * 2 * 2 * l_ * h * h
    seed_weight_bytes = 2 * 2 * l_ * h * h  # n_bytes·2·l·h1², n_bytes = 2
    activations = tokens * l_ * (h + 2 * h) * 2
    assert op_bytes(kv, Work(tokens=tokens), fp16) * l_ == seed_weight_bytes + activations
    # At one token the weights are all of it: the seed's approximation.
    assert op_bytes(kv, Work(tokens=1), fp16) * l_ == pytest.approx(seed_weight_bytes, rel=2e-4)


def test_seed000_line51_a100_compute_to_bandwidth_ratio():
    # 000:51 "312 TFLOPs ... 1555 GB/s ... approximately 208 times": 312e12/1.555e12 =
    # 200.6; the printed 208 is 312/1.5. DESIGN.md: "A100: ≈ 200".
    a100 = load_device("a100-40gb")
    assert a100.flops("fp16") == 312e12
    assert a100.memory_bandwidth_bytes_per_s == 1555e9
    assert a100.ridge_flops_per_byte("fp16") == pytest.approx(200.64, abs=0.01)


def test_seed000_line51_prefill_turns_compute_bound_near_the_ridge():
    # 000:51 "if we're going to compute KV for one token, it'll take the same amount of
    # time to compute for up to 208 tokens": the KV projection's intensity (2 FLOPs per
    # 2-byte weight per token) crosses the ridge at ≈ ridge tokens. Priced by the
    # roofline kernel itself at peak (ideal: no derating, no launch overhead).
    a100 = load_device("a100-40gb")
    ridge = a100.ridge_flops_per_byte("fp16")
    kernel = RooflineKernel(a100, Precision("fp16", "fp16", "fp16"), ideal=True)
    d = 12288
    gemm = Op("kv", "gemm", n=2 * d, k=d)

    def t(tokens: int) -> float:
        return kernel.op_time(gemm, Work(tokens=tokens))

    # One token: loading the 2·d² fp16 weights, 604 MB at 1555 GB/s.
    assert t(1) == pytest.approx(2 * d * d * 2 / 1555e9, rel=2e-4)
    # Up to the ridge the time barely moves: the kernel also moves the tokens'
    # activations, which the seed ignores; they add 2.4% at 200 tokens.
    assert t(int(ridge)) == pytest.approx(t(1), rel=0.03)
    # The kernel turns compute-bound between the exact ridge (200.6) and the seed's
    # 208 (312/1.5): the first token count whose time is its FLOPs at peak.
    crossover = next(n for n in range(1, 1000) if t(n) == op_flops(gemm, Work(tokens=n)) / 312e12)
    assert 200 < crossover <= 208
    # Beyond it the time grows with the tokens: twice the tokens, twice the time.
    assert t(2 * int(ridge)) > 1.9 * t(1)
    assert t(800) == pytest.approx(2 * t(400), rel=1e-12)


def test_seed000_line79_peak_kv_formula():
    # 000:79 peak KV = n_bytes·2·b·l·h1·(s+n).
    m = load_model("opt-175b")
    b, s, n = 8, 300, 20
    assert kv_bytes_peak(m, b, s, n, "fp16") == 2 * 2 * b * m.n_layers * m.d_model * (s + n)


def test_seed000_line81_opt175b_kv_1p2tb_is_3p8x_weights():
    # 000:81 OPT-175B takes 325 GB; b=512, s=512, n=32: KV 1.2 TB, 3.8× the weights.
    m = load_model("opt-175b")
    kv = kv_bytes_peak(m, 512, 512, 32, "fp16")
    assert kv == 1_314_259_992_576  # = 1.195 TiB: "1.2 TB"
    assert kv / 2**40 == pytest.approx(1.195, abs=1e-3)
    # Every parameter (biases, embeddings) in fp16: 325.2 GiB, the seed's "325 GB".
    weights = total_params(m) * 2
    assert weights / GiB == pytest.approx(325, abs=0.5)
    assert kv / weights == pytest.approx(3.8, abs=0.05)  # "3.8×" (3.76)


# --------------------------------------------------------------------------- seed 001


def test_seed001_lines8_13_flops_split_24d2():
    # 001:8-13: per layer 6d² QKV, 2d² attention output, 16d² FFN = 24d²;
    # 25% / ~8% / ~66%.
    m = gpt_block("gpt", 1, 12288, 96)
    d = m.d_model
    split = flops_per_token(m, context=0)
    assert split["qkv"] == 6 * d * d
    assert split["o_proj"] == 2 * d * d
    assert split["ffn"] == 16 * d * d
    assert split["attention"] == 0
    total = sum(split.values())
    assert total == 24 * d * d
    assert split["qkv"] / total == 0.25
    assert split["o_proj"] / total == pytest.approx(1 / 12)  # 8.3%
    assert split["ffn"] / total == pytest.approx(2 / 3)  # 66.7%


def test_seed001_flops_split_through_analyze_json():
    # The same split for the catalog GPT-3 175B through `analyze`, at zero context the
    # fractions are the seed's; analyze reports them at the mean decode context.
    a = analyze("gpt3-175b", "a100-80gb-sxm", tp=8, prompt=1, output=0)
    assert a.flops_split["qkv"] == pytest.approx(0.25, abs=1e-3)
    assert a.flops_split["o_proj"] == pytest.approx(1 / 12, abs=1e-3)
    assert a.flops_split["ffn"] == pytest.approx(2 / 3, abs=1e-3)


def test_seed001_lines23_24_gpt3_kv_per_token_4p72mb():
    # 001:22-23 bytes per token = 4·n_layers·d in bf16; 001:24 GPT-3: 4.72 MB/token.
    m = load_model("gpt3-175b")
    per_token = kv_bytes_per_token(m, "bf16")
    assert per_token == 4 * 96 * 12288 == 4_718_592
    assert per_token / 1e6 == pytest.approx(4.72, abs=0.005)


def test_seed001_line24_gpt3_2048_tokens_is_9p7gb_not_5p6():
    # 001:24 prints "2048 tokens need 5.6GB"; the formula gives 2048·4.72 MB = 9.66 GB.
    m = load_model("gpt3-175b")
    assert kv_bytes_per_token(m) * 2048 == 9_663_676_416


def test_seed001_line32_gqa_cuts_llama2_70b_kv_8x():
    # 001:32 "without GQA ... the 70B model would need 8× the KV cache".
    m = load_model("llama-2-70b")
    mha = m.model_copy(update={"n_kv_heads": None})
    assert kv_bytes_per_token(mha) / kv_bytes_per_token(m) == 8
    # The seed says 5× for Llama-2 34B, a model never released; the 34B we ship
    # (CodeLlama-34B) uses 8 KV heads for 64 query heads, so it too is 8×.
    c = load_model("codellama-34b")
    assert (
        kv_bytes_per_token(c.model_copy(update={"n_kv_heads": None})) / kv_bytes_per_token(c) == 8
    )


def test_seed001_line33_sliding_window_caps_kv_at_4096():
    # 001:33 the sliding window limits the KV cache to the window: 4096 tokens for
    # Mistral 7B (the seed writes "Llama7B").
    m = load_model("mistral-7b")
    assert m.sliding_window == 4096
    assert m.kv_tokens_kept(10_000) == 4096
    assert m.kv_tokens_kept(1000) == 1000
    assert kv_bytes_peak(m, 1, 8000, 2000) == 4096 * kv_bytes_per_token(m)


def test_seed001_line48_1024_cubed_matmul_is_2_gflop():
    # 001:48 "multiplying two 1024×1024 matrices needs 1G FLOP ... 65000 per second on
    # a T4": the 2mnp rule gives 2.147 GFLOP, so 65 TFLOPS does ≈ 30,000 per second.
    gemm = Op("x", "gemm", n=1024, k=1024)
    flops = op_flops(gemm, Work(tokens=1024))
    assert flops == 2 * 1024**3 == 2_147_483_648
    t4 = load_device("t4")
    assert t4.flops("fp16") == 65e12
    assert t4.flops("fp16") / flops == pytest.approx(30_268, abs=1)


def test_seed001_line52_toy_model_32kb_per_token():
    # 001:52 d_model 1024, 8 layers: 4·8·1024 bytes = 32 KB per token; 20 tokens 640 KB.
    toy = ModelSpec(
        name="toy",
        n_layers=8,
        d_model=1024,
        n_heads=8,
        d_ff=4096,
        vocab_size=32000,
        max_seq_len=2048,
    )
    assert kv_bytes_per_token(toy) == 32 * 1024
    assert 20 * kv_bytes_per_token(toy) == 640 * 1024


# --------------------------------------------------------------------------- seed 002


def test_seed002_line62_mqa_cuts_kv_by_n_heads():
    # 002:60-62 multiquery: one K/V head, "reduces the size of the KV cache by a factor
    # of nheads".
    palm = load_model("palm-540b")
    assert palm.kv_heads == 1
    mha = palm.model_copy(update={"n_kv_heads": None})
    assert kv_bytes_per_token(mha) / kv_bytes_per_token(palm) == palm.n_heads == 48


def test_seed002_lines34_35_weights_dominate_small_kv_dominates_large():
    # 002:34-35 small batch and context: loading weights dominates memory time; at
    # 2048+ tokens with batch 512+, loading the KV cache dominates (multihead).
    palm = load_model("palm-540b").model_copy(update={"n_kv_heads": None})
    weights = total_params(palm) * 2
    assert kv_bytes_peak(palm, 1, 128, 0) < 0.01 * weights
    assert kv_bytes_peak(palm, 512, 2048, 0) > weights


def test_seed002_line36_matmul_two_flops_per_token_and_parameter():
    # 002:36 "one multiplication and one addition per pair of input token and parameter".
    m = load_model("llama-2-7b")
    split = flops_per_token(m, context=0)
    matmul_params = non_embedding_params(m) - m.n_layers * 2 * m.d_model  # minus norms
    assert sum(split.values()) == 2 * matmul_params


def test_seed002_line38_weight_time_inversely_proportional_to_chips():
    # 002:38 weight loading and non-attention compute ∝ model size / chips.
    one = analyze("palm-62b", "tpu-v4", tp=1, batch=1, prompt=128, output=1)
    eight = analyze("palm-62b", "tpu-v4", tp=8, batch=1, prompt=128, output=1)
    assert one.decode_latency_floor_s / eight.decode_latency_floor_s == pytest.approx(8, rel=0.05)


# --------------------------------------------------------------------------- seed 004


LLAMA_004 = [  # 004:92-96: model, h, l, 12h², real params, FP16 size (GiB)
    ("llama-7b", 4096, 32, 6_442_450_944, 6.7e9, 12.0),
    ("llama-13b", 5120, 40, 12_582_912_000, 13.0e9, 23.4),
    ("llama-33b", 6656, 60, 31_897_681_920, 32.5e9, 59.4),
    ("llama-65b", 8192, 80, 64_424_509_440, 65.2e9, 120.0),
]


@pytest.mark.parametrize(("name", "h", "layers", "twelve_h2_l", "real", "fp16_gib"), LLAMA_004)
def test_seed004_llama_12h2l_and_sizes(name, h, layers, twelve_h2_l, real, fp16_gib):
    # The seed's first row reads "LLAMA-6B"; its h, l and sizes are LLaMA-7B's.
    m = load_model(name)
    assert (m.d_model, m.n_layers) == (h, layers)
    # The table's "12h²" column holds l·12h², the seed's count (004:88) for an MHA block
    # with a 4h-wide plain MLP and no biases: the catalog model with that MLP, counted
    # by the code. The code also counts the two RMSNorm weight vectors of each layer
    # (2h·l), which the seed leaves out.
    block = m.model_copy(update={"mlp": "plain", "d_ff": 4 * h})
    assert non_embedding_params(block) == twelve_h2_l + 2 * h * layers
    # "实际参数量" (actual parameters), from the full architecture (gated MLP, embeddings).
    assert total_params(m) == pytest.approx(real, rel=0.01)
    # "模型大小 (FP16)": the fp16 weight bytes the code puts on a device for those
    # layers (embeddings apart), in GiB.
    fp16 = Precision("fp16", "fp16", "fp16")
    assert layer_plan(block, 1, fp16).weight_bytes * layers / GiB == pytest.approx(
        fp16_gib, abs=0.05
    )


def test_seed004_line88_params_l12h2_plus_vh():
    # 004:88 trainable parameters l(12h²) + Vh for an MHA block (no biases counted).
    m = load_model("opt-175b")
    approx = m.n_layers * 12 * m.d_model**2 + m.vocab_size * m.d_model
    assert total_params(m) == pytest.approx(approx, rel=0.005)


def test_seed004_lines311_329_gpt3_kv_164282499072_bytes():
    # 004:311 fp16 KV peak = 4blh(s+n); 004:327-329 GPT-3 175B, b=64, s=512, n=32:
    # 164,282,499,072 bytes ≈ 164 GB, about 0.5× the model (~340 GB).
    m = load_model("gpt3-175b")
    kv = kv_bytes_peak(m, 64, 512, 32, "fp16")
    assert kv == 4 * 64 * m.n_layers * m.d_model * (512 + 32) == 164_282_499_072
    weights = total_params(m) * 2
    assert weights / 1e9 == pytest.approx(349, abs=1)  # the seed's "~340 GB"
    assert kv / weights == pytest.approx(0.47, abs=0.01)  # "约为模型 0.5X"


def test_seed004_lines156_160_t4_specs():
    # 004:156-160 T4: FP32 8.1 TFLOPS, FP16 65 TFLOPS, INT8 130 TOPS, INT4 260 TOPS,
    # 16 GB GDDR6; the slide says 300 GB/s, the datasheet and our catalog 320 GB/s.
    t4 = load_device("t4")
    assert t4.flops("fp16") == 65e12
    assert t4.peak_flops["int8"] == 130e12
    assert t4.peak_flops["int4"] == 260e12
    assert t4.peak_flops["fp32"] == 8.1e12
    assert t4.memory_bandwidth_bytes_per_s == 320e9
    assert "bf16" not in t4.peak_flops  # Turing has no bf16 tensor cores
