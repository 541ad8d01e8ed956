import statistics

import pytest

from kdlora.bench.evalset import EVAL_SIZE, eval_batches, eval_lengths, padded_length, padded_tokens


def test_lengths_are_seeded_realistic_and_clipped():
    lengths = eval_lengths()
    assert len(lengths) == EVAL_SIZE == 1043
    assert lengths == eval_lengths(seed=0)
    assert lengths != eval_lengths(seed=1)
    assert min(lengths) >= 4 and max(lengths) <= 128
    assert 20 <= statistics.median(lengths) <= 25
    assert sorted(lengths)[int(0.95 * len(lengths))] > 40  # a right tail, like real sentences


def test_dynamic_padding_pads_each_batch_to_its_longest():
    lengths = eval_lengths(100)
    batches = eval_batches(lengths, 32, vocab_size=30000)
    assert [len(b["input_ids"]) for b in batches] == [32, 32, 32, 4]
    for i, batch in enumerate(batches):
        chunk = lengths[32 * i:32 * (i + 1)]
        assert batch["input_ids"].shape[1] == max(chunk)
        assert batch["attention_mask"].sum(1).tolist() == chunk
        assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()
        assert batch["input_ids"][batch["attention_mask"] == 1].min() >= 1000


def test_pad_to_512_reproduces_the_official_padding():
    batches = eval_batches(eval_lengths(), 32, vocab_size=30000, pad_to=512)
    assert len(batches) == 33
    assert {b["input_ids"].shape[1] for b in batches} == {512}
    assert padded_tokens(batches) == 1043 * 512


def test_grouping_by_length_keeps_every_sentence_and_pads_less():
    lengths = eval_lengths()
    plain = eval_batches(lengths, 32, vocab_size=30000)
    grouped = eval_batches(lengths, 32, vocab_size=30000, group_by_length=True)
    assert sorted(int(n) for b in grouped for n in b["attention_mask"].sum(1)) == sorted(lengths)
    assert padded_tokens(grouped) < 0.6 * padded_tokens(plain)


def test_pad_to_shorter_than_a_sentence_is_refused():
    with pytest.raises(ValueError, match="shorter"):
        padded_length([10, 40], pad_to=32)
