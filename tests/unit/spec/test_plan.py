"""distill.plan: the rules that need to know what a spec's references are, as one pure function."""

from __future__ import annotations

from typing import Any

import pytest
from spec_builders import DIGITS, ENCODER, MINILM, spec_of, table, tabular_model, text_model, texts

from distill.plan import Resolved, TeacherInfo, plan
from distill.spec import JobSpec, SpecError

TEXTS = {"file": "file_texts"}
MODEL = {"file": "file_model"}
DIGITS_REF = {"builtin": "digits"}
MINILM_REF = {"builtin": "all-minilm-l6-v2"}
HINT = {"type": "hint", "student_layer": "1", "teacher_layer": "1"}


def refused(spec: JobSpec, resolved: Resolved, field: str, words: str) -> None:
    with pytest.raises(SpecError) as info:
        plan(spec, resolved)
    assert info.value.field == field
    assert info.value.message.startswith(f"{field}: ")
    assert words in info.value.message, info.value.message


def text_spec(**fields: Any) -> JobSpec:
    return JobSpec.model_validate({"data": {"train": TEXTS}, "model": ENCODER, **fields})


# -- tabular jobs ------------------------------------------------------------------------------------------


def test_a_fitting_tabular_job_is_planned() -> None:
    spec = spec_of(teacher=[MODEL, MODEL], data={"train": DIGITS_REF, "transfer": {"file": "t"}})
    done = plan(spec, Resolved(train=DIGITS, transfer=table(labels=False), teachers=[tabular_model()] * 2))
    assert (done.kind, done.num_classes, done.input_shape) == ("tabular", 10, [8, 8])
    assert done.student is not None and done.student.num_classes == 10


@pytest.mark.parametrize(
    ("train", "words"),
    [
        (texts(), 'need model.arch "encoder"'),
        (table(labels=False), "no labels"),
        (table(classes=1), "at least two classes"),  # the defect: a single-class set answered 500
    ],
)
def test_training_set_rules(train: Any, words: str) -> None:
    refused(spec_of(), Resolved(train=train), "data.train", words)


@pytest.mark.parametrize(
    ("name", "info", "words"),
    [
        ("validation", table(shape=[64]), "shape [64] but the training inputs have [8, 8]"),
        ("validation", table(labels=False), "needs labels"),
        ("validation", table(classes=12), "labels up to 11 but the training set has only 10"),
        ("validation", texts(), "text dataset"),
        ("transfer", table(shape=[64], labels=False), "shape"),
        ("transfer", table(classes=12), "labels up to 11"),
    ],
)
def test_validation_and_transfer_sets_fit_the_training_set(name: str, info: Any, words: str) -> None:
    spec = spec_of(data={"train": DIGITS_REF, name: {"file": "f"}}, teacher=MODEL)
    resolved = Resolved(train=DIGITS, teachers=[tabular_model()], **{name: info})
    refused(spec, resolved, f"data.{name}", words)


@pytest.mark.parametrize(
    ("teachers", "field", "words"),
    [
        ([tabular_model(classes=3)], "teacher.file", "predicts 3 classes but the data has 10"),
        ([tabular_model(shape=[64])], "teacher.file", "inputs of shape [64] but the data has [8, 8]"),
        ([text_model()], "teacher.file", "text model"),
        ([tabular_model(), tabular_model(classes=3)], "teacher.1.file", "same classes"),
    ],
)
def test_teachers_fit_the_data(teachers: list[TeacherInfo], field: str, words: str) -> None:
    teacher = MODEL if len(teachers) == 1 else [MODEL] * len(teachers)
    refused(spec_of(teacher=teacher), Resolved(train=DIGITS, teachers=teachers), field, words)


def test_hint_layers_exist_in_the_student_and_the_teacher() -> None:
    def hint(**layers: str) -> JobSpec:
        return spec_of(teacher=MODEL, distillation={"losses": [{**HINT, **layers}]})

    fits = Resolved(train=DIGITS, teachers=[tabular_model()])
    plan(hint(), fits)
    refused(hint(student_layer="99"), fits, "distillation.losses.0.student_layer", "no layer '99'")
    refused(hint(teacher_layer="fc"), fits, "distillation.losses.0.teacher_layer", "its layers are 0, 1")


def test_resolved_teachers_must_match_the_spec() -> None:
    with pytest.raises(ValueError, match="resolved 0 teachers"):
        plan(spec_of(teacher=MODEL), Resolved(train=DIGITS))


# -- text jobs ---------------------------------------------------------------------------------------------


def test_fitting_text_jobs_are_planned() -> None:
    classify = plan(text_spec(teacher=MODEL), Resolved(train=texts(), teachers=[text_model()]))
    assert (classify.kind, classify.num_classes, classify.input_shape, classify.student) == (
        "text",
        2,
        [],
        None,
    )
    embed = text_spec(teacher=MINILM_REF, task="embedding", data={"train": TEXTS, "transfer": TEXTS})
    done = plan(embed, Resolved(train=texts(labels=False), transfer=texts(), teachers=[MINILM]))
    assert done.num_classes is None
    assert plan(text_spec(), Resolved(train=texts(classes=3))).num_classes == 3  # a teacher job


@pytest.mark.parametrize(
    ("spec", "resolved", "field", "words"),
    [
        (text_spec(), Resolved(train=DIGITS), "model.arch", "encoder reads texts"),
        (text_spec(), Resolved(train=texts(labels=False)), "data.train", "needs labels on every text"),
        (text_spec(), Resolved(train=texts(classes=1)), "data.train", "at least two classes"),
        (
            text_spec(data={"train": TEXTS, "validation": DIGITS_REF}),
            Resolved(train=texts(), validation=DIGITS),
            "data.validation",
            "text validation set",
        ),
        (
            text_spec(data={"train": TEXTS, "validation": TEXTS}),
            Resolved(train=texts(), validation=texts(labels=False)),
            "data.validation",
            "needs labels",
        ),
        (
            text_spec(data={"train": TEXTS, "validation": TEXTS}),
            Resolved(train=texts(), validation=texts(classes=3)),
            "data.validation",
            "labels up to 2 but the training set has only 2",
        ),
        (
            text_spec(data={"train": TEXTS, "transfer": DIGITS_REF}, teacher=MODEL),
            Resolved(train=texts(), transfer=DIGITS, teachers=[text_model()]),
            "data.transfer",
            "text transfer set",
        ),
        (
            text_spec(teacher=MODEL),
            Resolved(train=texts(), teachers=[text_model(tokenizer=False)]),
            "teacher.file",
            "no tokenizer",
        ),
        (
            text_spec(teacher=MODEL),
            Resolved(train=texts(), teachers=[tabular_model()]),
            "teacher.file",
            "no tokenizer",
        ),
        (
            text_spec(teacher=MODEL),
            Resolved(train=texts(), teachers=[text_model(task="embedding", classes=None)]),
            "teacher.file",
            "classifier",
        ),
        (
            text_spec(teacher={"job": "job_t"}),
            Resolved(train=texts(), teachers=[text_model(classes=3)]),
            "teacher.job",
            "predicts 3 classes but the data has 2",
        ),
        (
            text_spec(teacher=MINILM_REF, task="embedding", model={"arch": "encoder", "layers": 7}),
            Resolved(train=texts(labels=False), teachers=[MINILM]),
            "model.layers",
            "more layers (7) than its teacher (6)",
        ),
        (
            text_spec(teacher=MODEL, distillation={"losses": [{"type": "attention", "layer_map": [[0, 2]]}]}),
            Resolved(train=texts(), teachers=[text_model(layers=2)]),
            "distillation.losses.0.layer_map",
            "[0, 2] is out of range",
        ),
    ],
)
def test_text_job_rules(spec: JobSpec, resolved: Resolved, field: str, words: str) -> None:
    refused(spec, resolved, field, words)
