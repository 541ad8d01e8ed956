"""LoRA targets, the head that trains, and cut students, found in the model: eight encoder types built tiny."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from kdlora import modeling
from kdlora.errors import UserError
from kdlora.methods import METHODS, LoraSettings
from kdlora.modeling import adaptation, derive_student, encoder_layers, layers_to_keep, parse_student
from kdlora.params import count_parameters

torch.set_num_threads(1)

HIDDEN, LAYERS, RANK = 32, 3, 4
_SIZES = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=64,
              vocab_size=100, max_position_embeddings=64)
# model type -> (config overrides, LoRA targets, trained modules besides the adapters)
ARCHITECTURES = {
    "bert": ({}, ("query", "value"), ("classifier",)),
    "roberta": ({}, ("query", "value"), ("classifier",)),
    "xlm-roberta": ({}, ("query", "value"), ("classifier",)),
    "electra": ({"embedding_size": 16}, ("query", "value"), ("classifier",)),
    "distilbert": ({"dim": HIDDEN, "n_layers": LAYERS, "n_heads": 2, "hidden_dim": 64}, ("q_lin", "v_lin"),
                   ("pre_classifier", "classifier")),
    "deberta-v2": ({"pooler_hidden_size": HIDDEN, "position_buckets": 8, "relative_attention": True},
                   ("query_proj", "value_proj"), ("pooler", "classifier")),
    "mpnet": ({}, ("q", "v"), ("classifier",)),
    "albert": ({"embedding_size": 16}, ("query", "value"), ("classifier",)),
}


def tiny(model_type: str, num_labels: int = 3):
    overrides = ARCHITECTURES[model_type][0]
    config = AutoConfig.for_model(model_type, **{**_SIZES, **overrides}, num_labels=num_labels)
    return AutoModelForSequenceClassification.from_config(config)


def _nonzero_adapters(model):
    with torch.no_grad():  # PEFT starts B at zero: merged == unmerged would hold trivially
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    return model


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_targets_head_adapter_count_and_merge(model_type):
    torch.manual_seed(0)
    _, targets, head = ARCHITECTURES[model_type]
    base = tiny(model_type)
    where = adaptation(base)
    assert where.lora_targets == targets and where.head_modules == head
    pretrained_before = {n: p.detach().clone() for n, p in base.named_parameters()}
    model = _nonzero_adapters(METHODS["lora"].prepare(base, where, LoraSettings(rank=RANK))).eval()
    counts = count_parameters(model, METHODS["lora"])
    # query and value, each A (r x in) and B (out x r), in every layer; ALBERT shares one layer across depth
    layers = 1 if model_type == "albert" else LAYERS
    assert counts.adapter == layers * 2 * (HIDDEN * RANK + RANK * HIDDEN)
    for name, param in model.named_parameters():
        assert param.requires_grad == ("lora_" in name or any(f".{h}.modules_to_save" in name for h in head)), name
    ids = torch.randint(5, 100, (2, 9))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        unmerged = model(input_ids=ids, attention_mask=mask).logits
        plain = modeling.merged(model)
        assert not any("lora" in n for n, _ in plain.named_parameters())
        torch.testing.assert_close(plain(input_ids=ids, attention_mask=mask).logits, unmerged, rtol=1e-4,
                                   atol=1e-5)
    assert set(pretrained_before) <= {n for n, _ in plain.named_parameters()}


def test_lora_targets_flag_overrides_and_unknown_names_are_user_errors():
    model = tiny("bert")
    assert adaptation(model, targets="query,key").lora_targets == ("query", "key")
    with pytest.raises(UserError, match="no module named 'qkv'"):
        adaptation(model, targets="qkv")


def test_model_without_attention_says_which_targets_to_pass():
    from transformers import FNetConfig, FNetForSequenceClassification

    model = FNetForSequenceClassification(FNetConfig(hidden_size=HIDDEN, num_hidden_layers=1, intermediate_size=64,
                                                     vocab_size=100))
    with pytest.raises(UserError, match=r"fnet: no attention query/value .* pass --lora-targets .*dense"):
        adaptation(model)


def test_parameters_missing_from_the_checkpoint_train_and_pretrained_ones_stay_frozen(tmp_path):
    from transformers import BertConfig, BertModel

    config = BertConfig(**_SIZES)
    BertModel(config).save_pretrained(tmp_path / "with-pooler")
    BertModel(config, add_pooling_layer=False).save_pretrained(tmp_path / "no-pooler")
    for folder in ("with-pooler", "no-pooler"):
        config.save_pretrained(tmp_path / folder)
        (tmp_path / folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"]))
    _, _, missing = modeling.load_pretrained(str(tmp_path / "with-pooler"), 2)
    assert set(missing) == {"classifier.weight", "classifier.bias"}
    assert modeling.new_modules(tiny("bert"), missing) == ("classifier",)  # BERT's pretrained pooler stays frozen
    _, _, missing = modeling.load_pretrained(str(tmp_path / "no-pooler"), 2)
    assert modeling.new_modules(tiny("bert"), missing) == ("classifier", "bert.pooler.dense")


@pytest.mark.parametrize(("spec", "keep"), [("derive:6", [0, 2, 4, 6, 8, 10]), ("derive:3", [0, 4, 8]),
                                            ("derive:1,5,11", [1, 5, 11]), (None, [0, 2, 4, 6, 8, 10])])
def test_student_layers_evenly_spaced_or_exact(spec, keep):
    assert layers_to_keep(12, parse_student(spec)) == keep


@pytest.mark.parametrize("spec", ["derive:0", "derive:13", "derive:1,12", "derive:2,2", "derive:x"])
def test_bad_student_specs_are_user_errors(spec):
    with pytest.raises(UserError, match="derive"):
        layers_to_keep(12, parse_student(spec))


@pytest.mark.parametrize("model_type", ["bert", "distilbert", "deberta-v2", "electra", "mpnet"])
def test_cut_student_keeps_the_chosen_layers(model_type):
    teacher = tiny(model_type)
    student = derive_student(teacher, (0, 2))
    assert len(encoder_layers(student)) == 2 and len(encoder_layers(teacher)) == LAYERS
    for kept, original in ((0, 0), (1, 2)):
        for (name, value), (_, expected) in zip(encoder_layers(student)[kept].state_dict().items(),
                                                encoder_layers(teacher)[original].state_dict().items(), strict=True):
            assert torch.equal(value, expected), name


def test_albert_cannot_be_cut():
    with pytest.raises(UserError, match="ALBERT shares one layer"):
        derive_student(tiny("albert"), 2)
