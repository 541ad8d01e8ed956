import pytest

from kdlora.errors import UserError
from kdlora.families import FAMILIES, PAPER_FAMILIES, get_family
from kdlora.methods import METHODS, LoraSettings, get_method
from kdlora.modeling import adaptation, derive_student, encoder_layers
from kdlora.params import count_parameters


def test_registry_has_the_paper_families_and_the_offline_one():
    assert PAPER_FAMILIES == ("bert", "roberta", "deberta")
    assert set(FAMILIES) == {*PAPER_FAMILIES, "minilm"}
    assert FAMILIES["minilm"].student.derived and FAMILIES["minilm"].teacher.weights_package
    assert get_family(" BERT ").student.hub_name == "distilbert-base-uncased"
    with pytest.raises(UserError, match="unknown family 'gpt'"):
        get_family("gpt")


@pytest.mark.parametrize("alias", ["kd-lora", "KD-LoRA", "kd_lora", "KD LoRA"])
def test_method_aliases(alias):
    assert get_method(alias) is METHODS["kd-lora"]


def test_unknown_method_and_bad_rank_are_user_errors():
    with pytest.raises(UserError, match="unknown method"):
        get_method("prefix")
    with pytest.raises(UserError, match="rank must be a positive integer"):
        LoraSettings(rank=0)


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("role", ["teacher", "student"])
def test_tiny_lora_trains_only_adapters_and_head(family, role):
    arch = FAMILIES[family].architecture(role)
    base = arch.build(num_labels=3, tiny=True)
    where = adaptation(base)
    model = METHODS["lora"].prepare(base, where, LoraSettings(rank=4))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable, "nothing trains"
    for name in trainable:
        assert "lora_" in name or any(f".{h}." in name for h in where.head_modules), name
    for head in where.head_modules:
        assert any(f".{head}." in n for n in trainable), f"head {head} is frozen"
    counts = count_parameters(model, METHODS["lora"])
    hidden = model.config.hidden_size if hasattr(model.config, "hidden_size") else model.config.dim
    layers = getattr(model.config, "num_hidden_layers", None) or model.config.n_layers
    # query and value: A (r x d) and B (d x r) each, per layer
    assert counts.adapter == layers * 2 * 2 * 4 * hidden


def test_student_is_shallower_than_teacher_even_when_tiny():
    for family in FAMILIES.values():
        t = count_parameters(family.teacher.build(tiny=True)).total
        s = count_parameters(family.student.build(tiny=True)).total
        assert s < t, family.name


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_derive_student_keeps_every_other_layer_and_leaves_the_teacher(family):
    import torch

    teacher = FAMILIES[family].teacher.build(tiny=True, **_depth(FAMILIES[family].teacher, 4))
    student = derive_student(teacher)
    assert len(encoder_layers(teacher)) == 4 and len(encoder_layers(student)) == 2
    kept = encoder_layers(student)[1].state_dict()
    for name, value in encoder_layers(teacher)[2].state_dict().items():
        assert torch.equal(kept[name], value), name
    assert student.config.num_hidden_layers == 2
    with pytest.raises(UserError, match=r"within 0\.\.3"):
        derive_student(teacher, keep=[7])


def _depth(arch, n):
    return {"n_layers": n} if arch.model_type == "distilbert" else {"num_hidden_layers": n}


def test_minilm_architectures_have_the_published_sizes():
    teacher, student = FAMILIES["minilm"].teacher, FAMILIES["minilm"].student
    assert teacher.config().num_hidden_layers == 6 and student.config().num_hidden_layers == 3
    assert teacher.config().hidden_size == 384
    # all-MiniLM-L6-v2 is 22.7M parameters as an encoder; with a 2-label head on the pooler ~22.7M too
    assert 22_500_000 < count_parameters(teacher.build()).total < 23_000_000


def test_weights_path_without_a_weights_package_is_a_user_error():
    with pytest.raises(UserError, match="no offline weights"):
        FAMILIES["bert"].teacher.weights_path()
