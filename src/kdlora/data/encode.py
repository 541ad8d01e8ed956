"""Tokenise a split once per tokenizer, and collate batches with dynamic padding that keep each example's id."""

from __future__ import annotations

import hashlib
import json
import string

from kdlora.data.examples import Examples

_ENCODED: dict[str, list[dict]] = {}
"""Encoded splits of this process by (tokenizer, texts, max length) fingerprint: each split is tokenised once."""


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything that decides the token ids: the tokenizer's full serialised state."""
    if getattr(tokenizer, "is_fast", False):
        state = json.loads(tokenizer.backend_tokenizer.to_str())
        state.pop("truncation", None), state.pop("padding", None)  # call-time settings, not the mapping
    else:
        state = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()


def examples_fingerprint(examples: Examples) -> str:
    digest = hashlib.sha256()
    for i, texts, label in zip(examples.ids, examples.texts, examples.labels, strict=True):
        digest.update(json.dumps([i, texts, label]).encode())
    return digest.hexdigest()


def encode(examples: Examples, tokenizer, max_length: int = 128) -> list[dict]:
    """One feature dict per example: `input_ids`, `attention_mask` (+ `token_type_ids`), `labels`, `idx`.

    No padding here: the collator pads each batch to its own longest example.
    """
    key = f"{tokenizer_fingerprint(tokenizer)}:{examples_fingerprint(examples)}:{max_length}"
    if key not in _ENCODED:
        columns = list(zip(*examples.texts, strict=True)) if examples.texts else [[]]
        encoded = tokenizer(*[list(c) for c in columns], truncation=True, max_length=max_length)
        names = [n for n in tokenizer.model_input_names if n in encoded]
        _ENCODED[key] = [
            {**{n: encoded[n][row] for n in names}, "labels": examples.labels[row], "idx": examples.ids[row]}
            for row in range(len(examples))
        ]
    return _ENCODED[key]


class Collator:
    """Pad a list of encoded examples to the batch's longest; `labels` keep the task's dtype, `idx` the ids, and
    `labelled` (bool), where the features carry it, which rows have a label (a run with transfer data:
    `kdlora.data.transfer`)."""

    def __init__(self, tokenizer, regression: bool):
        self.tokenizer = tokenizer
        self.regression = regression

    def __call__(self, features: list[dict]) -> dict:
        import torch

        inputs = [{k: v for k, v in f.items() if k not in ("labels", "idx", "labelled")} for f in features]
        batch = dict(self.tokenizer.pad(inputs, padding=True, return_tensors="pt"))
        dtype = torch.float32 if self.regression else torch.long
        batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=dtype)
        batch["idx"] = torch.tensor([f["idx"] for f in features], dtype=torch.long)
        if "labelled" in features[0]:
            batch["labelled"] = torch.tensor([f["labelled"] for f in features], dtype=torch.bool)
        return batch


def tiny_tokenizer():
    """A small offline WordPiece tokenizer (characters and a few words) for tiny random test models.

    Its ids stay below the tiny configs' vocabulary of 1,000, and it returns no token_type_ids, so it fits every
    family's tiny build.
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    words = ["the", "a", "and", "of", "to", "is", "it", "good", "bad", "great", "film", "movie", "not", "very"]
    vocab = {tok: i for i, tok in enumerate(specials + chars + [f"##{c}" for c in chars] + words)}
    backend = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "attention_mask"])
