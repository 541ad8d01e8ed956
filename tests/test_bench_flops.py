"""MFU's two halves: FLOP counted from a model's matrix shapes and real lengths, and the CPU's peak."""

import pytest

from kdlora.bench.flops import (
    BF16_UNITS,
    Matrix,
    MatrixShapes,
    clock_ghz,
    cpuinfo_flags,
    forward_flops,
    matrix_shapes,
    matrix_unit,
    mfu,
    peak,
    train_flops,
)

# One BERT layer, hidden 8, feed-forward 16, 2 labels: Q, K, V, O are 8x8, the feed-forward 8x16 and 16x8 (per
# token: 4*64 + 2*128 = 512 multiply-adds); the pooler 8x8 and the classifier 8x2 (per sequence: 64 + 16 = 80).
TINY = dict(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=50,
            max_position_embeddings=16)


def _tiny_bert():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(**TINY))


def _tiny_lora(model):
    from peft import LoraConfig, TaskType, get_peft_model

    # LoRA rank 2 on query and value: A is 8x2, B 2x8, on both (per token: 2 * (16 + 16) = 64 multiply-adds)
    return get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=2, lora_alpha=4, lora_dropout=0.0,
                                            target_modules=["query", "value"], modules_to_save=["classifier"]))


def test_forward_flops_count_real_tokens_and_squared_lengths():
    shapes = MatrixShapes(per_token=(Matrix(8, 8),) * 4 + (Matrix(8, 16), Matrix(16, 8)),
                          per_sequence=(Matrix(8, 8), Matrix(8, 2)), layers=1, attention_width=8)
    # lengths 3 and 1: 4 tokens, 2 sequences, squares 9 + 1
    # 2*4*512 (projections) + 2*2*80 (head) + 2*1 layer*2 terms*10*8 (Q.K^T and A.V)
    assert forward_flops(shapes, [3, 1]) == 4096 + 320 + 320
    # everything trains: 3x every term
    trained = MatrixShapes(tuple(Matrix(m.inputs, m.outputs, True) for m in shapes.per_token),
                           tuple(Matrix(m.inputs, m.outputs, True) for m in shapes.per_sequence), 1, 8)
    assert train_flops(trained, [3, 1]) == 3 * (4096 + 320 + 320)
    # a frozen base: 2x the frozen matrices, 3x attention
    assert train_flops(shapes, [3, 1]) == 2 * 4096 + 2 * 320 + 3 * 320


def test_deberta_attention_counts_two_more_terms():
    plain = MatrixShapes((), (), layers=2, attention_width=4)
    relative = MatrixShapes((), (), layers=2, attention_width=4, attention_terms=4)
    assert forward_flops(plain, [5]) == 2 * 2 * 2 * 25 * 4  # 2 FLOP x 2 layers x 2 terms x 5^2 x width 4
    assert forward_flops(relative, [5]) == 2 * 2 * 4 * 25 * 4


def test_matrix_shapes_read_a_tiny_bert_and_its_lora():
    model = _tiny_bert()
    shapes = matrix_shapes(model)
    assert sorted((m.inputs, m.outputs) for m in shapes.per_token) == [(8, 8)] * 4 + [(8, 16), (16, 8)]
    assert sorted((m.inputs, m.outputs) for m in shapes.per_sequence) == [(8, 2), (8, 8)]
    assert (shapes.layers, shapes.attention_width, shapes.attention_terms) == (1, 8, 2)
    assert all(m.trains for m in shapes.per_token + shapes.per_sequence)
    lora = matrix_shapes(_tiny_lora(model))
    trained = sorted((m.inputs, m.outputs) for m in lora.per_token if m.trains)
    assert trained == [(2, 8), (2, 8), (8, 2), (8, 2)]  # A and B of query and value; the base is frozen
    assert len([m for m in lora.per_token if not m.trains]) == 6
    # the pooler stays frozen, the classifier trains; PEFT's kept copy of the original classifier does not run
    assert sorted((m.inputs, m.outputs, m.trains) for m in lora.per_sequence) == [(8, 2, True), (8, 8, False)]
    # one sequence of 3 tokens: 2*3*(512 + 64) + 2*80 + 2*2*9*8
    assert forward_flops(lora, [3]) == 3456 + 160 + 288


def test_the_count_agrees_with_torchs_flop_counter():
    """torch's own counter on one unpadded sequence: the forward exactly; full fine-tuning's step exactly 3x; with
    a frozen base the rule is an upper bound by what autograd skips in the first layer."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = _tiny_bert()
    ids, label = torch.tensor([[5, 6, 7]]), torch.tensor([1])

    def counted(m, train: bool) -> int:
        with FlopCounterMode(display=False) as counter:
            out = m(input_ids=ids, labels=label)
            if train:
                out.loss.backward()
        return counter.get_total_flops()

    shapes = matrix_shapes(model)
    assert counted(model, False) == forward_flops(shapes, [3]) == 2 * 3 * 512 + 2 * 80 + 2 * 2 * 9 * 8
    assert counted(model, True) == train_flops(shapes, [3]) == 3 * 3520
    lora = _tiny_lora(model)
    shapes = matrix_shapes(lora)
    assert counted(lora, False) == forward_flops(shapes, [3])
    # the first layer reads the embeddings, which need no gradient: autograd skips the input gradients of Q, K, V
    # (3 x 2*3*64), of LoRA's two A matrices (2 x 2*3*16), and Q.K^T's gradient for the frozen K (2*9*8)
    assert counted(lora, True) == train_flops(shapes, [3]) - (1152 + 192 + 144)


def test_units_from_flags_best_first():
    assert matrix_unit("bf16", {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}).name == "AMX"
    assert matrix_unit("bf16", {"avx2", "avx512f", "avx512_bf16"}).flop_per_cycle == 2 * 16 * 2 * 2
    assert matrix_unit("bf16", {"avx2", "fma"}) is None  # emulated
    assert matrix_unit("fp32", {"avx2", "avx512f", "amx_bf16"}).flop_per_cycle == 2 * 16 * 2
    assert matrix_unit("fp32", {"avx2"}).flop_per_cycle == 2 * 8 * 2
    assert BF16_UNITS[0].flop_per_cycle == 1024


def test_clock_sources_in_order():
    lscpu = "Model name: AMD EPYC 9B45\nCPU max MHz: 4100.0000\n"
    info = "model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\ncpu MHz\t\t: 2699.998\nflags\t: fpu avx2\n"
    assert clock_ghz(lscpu, info) == (4.1, "lscpu CPU max MHz")
    assert clock_ghz("", info) == (2.7, "the model name's GHz")
    assert clock_ghz("", "model name\t: Intel(R) Xeon(R) Processor\ncpu MHz\t\t: 2100.000\n") == \
        (2.1, "/proc/cpuinfo cpu MHz")
    assert clock_ghz("", "") == (None, "unknown")
    assert cpuinfo_flags(info) == {"fpu", "avx2"}


def test_peak_is_cores_times_clock_times_flop_per_cycle():
    amx = peak("bf16", 2, {"amx_bf16", "avx512f"}, 2.1, "/proc/cpuinfo cpu MHz")
    assert amx.flops == pytest.approx(2 * 2.1e9 * 1024)  # 4.3008 TFLOP/s
    assert amx.describe().startswith("bf16 peak 4.30 TFLOP/s = 2 cores x 2.10 GHz (/proc/cpuinfo cpu MHz) x 1024")
    fp32 = peak("fp32", 2, {"amx_bf16", "avx512f"}, 2.1, "lscpu CPU max MHz")
    assert fp32.flops == pytest.approx(2 * 2.1e9 * 64)
    emulated = peak("bf16", 2, {"avx2"}, 2.1, "x")
    assert emulated.flops is None and emulated.describe() == "bf16 peak unknown: no bf16 unit (emulated)"
    assert peak("fp32", 2, {"avx2"}, None, "unknown").describe() == "fp32 peak unknown: no clock found"
    # 8.6 GFLOP in 0.5 s on a 4.3008 TFLOP/s peak: 17.2 GFLOP/s, 0.4 %
    assert mfu(8.6016e9, 0.5, amx.flops) == pytest.approx(0.004)
    assert mfu(1.0, 0.5, None) is None
