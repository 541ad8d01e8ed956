import pytest
import torch

from kdlora.config import TrainConfig
from kdlora.data.tasks import get_task
from kdlora.families import get_family
from kdlora.methods import get_method
from kdlora.modeling import default_source
from kdlora.train.start import starting_model


@pytest.mark.slow
def test_real_minilm_student_keeps_teacher_layers_0_2_4_and_its_tokenizer():
    family, task = get_family("minilm"), get_task("movie-snippets")
    config = TrainConfig(task="movie-snippets", family="minilm", method="kd-lora", student_init="pretrained")
    start = starting_model(config, task, family, get_method("kd-lora"))
    student, tokenizer, base = start.model, start.tokenizer, start.base
    start = starting_model(TrainConfig(task="movie-snippets", family="minilm", method="lora"), task, family,
                           get_method("lora"))
    teacher, teacher_tokenizer, source = start.model, start.tokenizer, start.base
    assert base is None and source == default_source(family.teacher)
    assert student.config.num_hidden_layers == 3 and teacher.config.num_hidden_layers == 6
    for kept, original in enumerate((0, 2, 4)):
        assert torch.equal(student.bert.encoder.layer[kept].attention.self.query.weight,
                           teacher.bert.encoder.layer[original].attention.self.query.weight)
    assert tokenizer("a fine film")["input_ids"] == teacher_tokenizer("a fine film")["input_ids"]
