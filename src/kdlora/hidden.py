"""Hidden-state (and attention-map) distillation: the student's layers learn the teacher's, beside the logit KD.

    pairs = layer_map(teacher_depth=6, student_depth=3, kept=(0, 2, 4))   # [(1, 1), (2, 3), (3, 5)]
    match = HiddenMatch.between(settings, teacher_model, student_model, kept)
    loss = method_loss + match.loss(student_outputs, teacher_outputs, attention_mask)

A layer is a hidden-state output as transformers numbers them (`output_hidden_states`): 0 the embeddings, i the
output of encoder layer i. The map pairs each student layer with the teacher layer it learns from: for a student
cut from its teacher, the output of the teacher layer each student layer was copied from (`derive:3` keeps teacher
layers 0, 2, 4, so student 1..3 <- teacher 1, 3, 5: the student starts out computing exactly those outputs);
otherwise a uniform map (DistilBERT 6 <- BERT 12: student i <- teacher 2i, as BERT-PKD's "skip" strategy and
TextBrewer's examples); `kd_layers` overrides both. The embeddings are left out by default (a derived student's
are the teacher's, frozen under LoRA).

The hidden term is MSE or cosine distance between each pair's states at the real (not padded) tokens, averaged
over the pairs; where the widths differ the student's states pass a learned linear projection to the teacher's
width first (one per pair, as TextBrewer's `proj`), trained with the student and never part of the saved model.
The attention term (MiniLM) is KL(teacher || student) between the self-attention distributions of every mapped
pair of encoder layers (pairs with the embeddings have none), per head when the head counts agree, else of the
maps averaged over heads, over the real query tokens. Heavy imports live in functions: the settings are read by
the methods' registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdlora.errors import UserError

HIDDEN_LOSSES = ("mse", "cosine")
"""What `kd_hidden_loss` may name."""


@dataclass
class HiddenDistillSettings:
    """How a distilling method also matches the teacher's hidden states and attention maps (0: off)."""

    kd_hidden_weight: float = 0.0
    """Weight W of the hidden-state term: loss = method loss + W * hidden (0: off). The teacher then runs beside
    the student on every batch (its memory counts in the run's)."""
    kd_layers: str | None = None
    """Layer map student:teacher, e.g. 1:2,2:4,3:6 (hidden-state outputs, 0 = embeddings); default: a derived
    student's layers to the teacher layers they were cut from, else a uniform map (student i <- teacher i*T/S)."""
    kd_hidden_loss: str = "mse"
    """Hidden-state distance: mse or cosine (1 - cosine similarity), over real tokens only."""
    kd_attention_weight: float = 0.0
    """Weight of the attention-map term (MiniLM): KL(teacher || student) of the self-attention of every mapped
    pair of encoder layers, per head (heads averaged when the counts differ); 0: off."""

    def checks(self) -> dict[str, bool]:
        parse_layers(self.kd_layers)  # a malformed map is its own one-line error
        return {"kd_hidden_weight": self.kd_hidden_weight >= 0, "kd_hidden_loss": self.kd_hidden_loss in HIDDEN_LOSSES,
                "kd_attention_weight": self.kd_attention_weight >= 0}


def is_on(settings) -> bool:
    """Whether `settings` (a TrainConfig or a HiddenDistillSettings) ask for a hidden-state or attention term."""
    return (getattr(settings, "kd_hidden_weight", 0) or 0) > 0 or (getattr(settings, "kd_attention_weight", 0) or 0) > 0


def parse_layers(text: str | None) -> list[tuple[int, int]] | None:
    """`1:2,2:4` -> [(1, 2), (2, 4)]; None stays None; malformed text is a UserError."""
    if text is None:
        return None
    pairs = []
    for part in (p.strip() for p in text.split(",")):
        student, _, teacher = part.partition(":")
        if not (student.strip().isdigit() and teacher.strip().isdigit()):
            raise UserError(f"--kd-layers {text!r}: expected student:teacher pairs of layer numbers, e.g. 1:2,2:4")
        pairs.append((int(student), int(teacher)))
    return pairs


def layer_map(teacher_depth: int, student_depth: int, kept=None, override: str | None = None) -> list[tuple[int, int]]:
    """(student layer, teacher layer) pairs, in hidden-state numbering (0 = embeddings, i = layer i's output).

    `override` (`kd_layers`) wins; else `kept`, the teacher's encoder layers (0-based) a derived student was cut
    from, maps student i to teacher kept[i - 1] + 1; else the uniform map i -> i * T // S. A map naming a layer a
    model lacks, or a student layer twice, is a UserError naming both layer counts."""
    counts = (f"the student's layers are 0..{student_depth}, the teacher's 0..{teacher_depth} (0 = embeddings, i = "
              "encoder layer i's output)")
    if override is not None:
        pairs = parse_layers(override)
        wrong = next(((s, t) for s, t in pairs if s > student_depth or t > teacher_depth), None)
        if wrong is not None:
            raise UserError(f"--kd-layers {override}: {wrong[0]}:{wrong[1]} names a layer outside the models: {counts}")
        twice = next((s for i, (s, _) in enumerate(pairs) if s in [p[0] for p in pairs[:i]]), None)
        if twice is not None:
            raise UserError(f"--kd-layers {override}: student layer {twice} is mapped twice ({counts})")
        return pairs
    if kept is not None:
        if len(kept) != student_depth or max(kept) >= teacher_depth:
            raise UserError(f"the student was cut from teacher layers {','.join(map(str, kept))}, which this teacher "
                            f"does not have ({counts}): pass --kd-layers")
        return [(i + 1, k + 1) for i, k in enumerate(kept)]
    if student_depth > teacher_depth:
        raise UserError(f"no uniform layer map from a deeper student: {counts}; pass --kd-layers")
    return [(i, i * teacher_depth // student_depth) for i in range(1, student_depth + 1)]


def hidden_loss(student_states, teacher_states, attention_mask, kind: str = "mse"):
    """The mean over layer pairs of the distance between `student_states[k]` and `teacher_states[k]` (each
    batch x tokens x width, the student's already at the teacher's width) at the tokens `attention_mask` marks
    real: `mse`, the mean squared difference per real token and dimension; `cosine`, the mean of 1 - cosine
    similarity per real token. In float32 whatever the states' dtype."""
    import torch
    import torch.nn.functional as F

    mask = attention_mask.to(torch.float32)
    tokens = mask.sum().clamp_min(1)
    losses = []
    for student, teacher in zip(student_states, teacher_states, strict=True):
        student, teacher = student.to(torch.float32), teacher.to(torch.float32)
        if kind == "mse":
            per_token = ((student - teacher) ** 2).mean(-1)
        else:
            per_token = 1 - F.cosine_similarity(student, teacher, dim=-1)
        losses.append((per_token * mask).sum() / tokens)
    return torch.stack(losses).mean()


def attention_loss(student_maps, teacher_maps, attention_mask):
    """The mean over layer pairs of KL(teacher || student) between attention distributions (each batch x heads x
    queries x keys), summed over keys and averaged over heads and real query tokens. Heads are compared one to
    one when both have as many, else each side's maps are averaged over its heads first."""
    import torch

    mask = attention_mask.to(torch.float32)
    losses = []
    for student, teacher in zip(student_maps, teacher_maps, strict=True):
        student, teacher = student.to(torch.float32), teacher.to(torch.float32)
        if student.shape[1] != teacher.shape[1]:
            student, teacher = student.mean(1, keepdim=True), teacher.mean(1, keepdim=True)
        # padded keys hold (almost) zero probability on both sides: clamping keeps 0 * log 0 at 0, gradients finite
        kl = (teacher * (teacher.clamp_min(1e-12).log() - student.clamp_min(1e-12).log())).sum(-1)
        rows = mask[:, None, :].expand_as(kl)
        losses.append((kl * rows).sum() / rows.sum().clamp_min(1))
    return torch.stack(losses).mean()


def projections(pairs, student_width: int, teacher_width: int):
    """One trainable `Linear(student_width, teacher_width)` per pair (a torch ModuleList), or None when the widths
    are equal (no projection is needed)."""
    if student_width == teacher_width:
        return None
    import torch

    return torch.nn.ModuleList(torch.nn.Linear(student_width, teacher_width) for _ in pairs)


def model_shape(model) -> tuple[int, int]:
    """(encoder layers, hidden width) of a (possibly PEFT-wrapped) encoder."""
    from kdlora.modeling import encoder_layers

    return len(encoder_layers(model)), model.config.hidden_size


def eager_attention(model) -> None:
    """Switch `model` (PEFT-wrapped or not) to transformers' eager attention, the one that returns its maps (SDPA
    returns none)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation("eager")


@dataclass
class HiddenMatch:
    """The hidden-state and attention terms between one student and one teacher: the layer map, the weights and
    the projections (None when the widths agree or no hidden term is asked). `loss` is the term added to the
    method's loss; the projections must train with the student (see `kdlora.train.run`, `kdlora.hf`)."""

    pairs: list
    """(student layer, teacher layer) pairs: `layer_map`."""
    hidden_weight: float
    hidden_kind: str
    attention_weight: float
    projections: object = None

    @classmethod
    def between(cls, settings, teacher, student, kept=None) -> HiddenMatch:
        """The match `settings` ask for between the `teacher` and `student` models (`kept`: the teacher layers a
        derived student was cut from). Switches both models to eager attention when attention maps are matched."""
        (teacher_depth, teacher_width), (student_depth, student_width) = model_shape(teacher), model_shape(student)
        pairs = layer_map(teacher_depth, student_depth, kept, settings.kd_layers)
        if settings.kd_attention_weight > 0:
            if all(0 in pair for pair in pairs):
                raise UserError(f"--kd-attention-weight: the layer map {format_map(pairs)} pairs no encoder layers "
                                "(the embeddings have no attention maps)")
            eager_attention(teacher)
            eager_attention(student)
        projected = projections(pairs, student_width, teacher_width) if settings.kd_hidden_weight > 0 else None
        return cls(pairs, settings.kd_hidden_weight, settings.kd_hidden_loss, settings.kd_attention_weight, projected)

    @property
    def model_options(self) -> dict:
        """What both models' forward must also return."""
        return {"output_hidden_states": self.hidden_weight > 0, "output_attentions": self.attention_weight > 0}

    def loss(self, student_outputs, teacher_outputs, attention_mask):
        """hidden weight x `hidden_loss` + attention weight x `attention_loss` for one batch."""
        total = 0.0
        if self.hidden_weight > 0:
            student = [student_outputs.hidden_states[s] for s, _ in self.pairs]
            if self.projections is not None:
                student = [project(state.to(project.weight.dtype)) for project, state in zip(self.projections,
                                                                                             student, strict=True)]
            teacher = [teacher_outputs.hidden_states[t] for _, t in self.pairs]
            total = total + self.hidden_weight * hidden_loss(student, teacher, attention_mask, self.hidden_kind)
        if self.attention_weight > 0:
            layers = [(s, t) for s, t in self.pairs if s > 0 and t > 0]
            student = [student_outputs.attentions[s - 1] for s, _ in layers]
            teacher = [teacher_outputs.attentions[t - 1] for _, t in layers]
            total = total + self.attention_weight * attention_loss(student, teacher, attention_mask)
        return total

    def describe(self) -> str:
        """One line for the run's output and record: the terms, their weights and the layer map."""
        parts = []
        if self.hidden_weight > 0:
            parts.append(f"hidden states x {self.hidden_weight:g} ({self.hidden_kind}"
                         + (", projected to the teacher's width" if self.projections is not None else "") + ")")
        if self.attention_weight > 0:
            parts.append(f"attention maps x {self.attention_weight:g} (KL)")
        return f"{' + '.join(parts)}, student:teacher layers {format_map(self.pairs)}"


PROJECTIONS = "kd_hidden_projections"
"""The attribute a training student holds its projections under while it trains (`attach`)."""


def attach(model, match: HiddenMatch) -> None:
    """Make `match`'s projections a submodule of `model` while it trains, so that they move, train, clip,
    checkpoint and synchronise across processes with it; `detach` takes them off before it is saved."""
    if match.projections is not None:
        model.add_module(PROJECTIONS, match.projections)


def detach(model) -> None:
    """Take the projections `attach` added off `model` (nothing when there are none): never part of a saved model."""
    if model is not None and PROJECTIONS in model._modules:
        delattr(model, PROJECTIONS)


def format_map(pairs) -> str:
    """[(1, 1), (2, 3)] -> `1:1,2:3` (the `kd_layers` form)."""
    return ",".join(f"{s}:{t}" for s, t in pairs)
