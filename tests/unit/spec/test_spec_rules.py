"""distill.spec: the rules between a spec's own fields, checked by pydantic (client-side too), no services."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from spec_builders import ENCODER

from distill.spec import JobSpec, SpecError
from distill.spec_rules import check_layer_map

DIGITS = {"builtin": "digits"}
TEXTS = {"file": "file_texts"}
MINILM = {"builtin": "all-minilm-l6-v2"}
CLASSIFIER = {"file": "file_classifier"}
MODEL = {"file": "file_model"}


def rejected(body: dict[str, Any]) -> tuple[str, str]:
    """The location and message of the one error pydantic reports for ``body``."""
    with pytest.raises(ValidationError) as info:
        JobSpec.model_validate(body)
    errors = info.value.errors()
    assert len(errors) == 1, errors
    return ".".join(str(p) for p in errors[0]["loc"]), errors[0]["msg"]


TABULAR_RULES = [
    ({"data": {"train": DIGITS, "transfer": DIGITS}}, "data.transfer", "only used with a teacher"),
    ({"data": {"train": DIGITS, "augment": {"copies": 2}}}, "data.augment", "add `teacher`"),
    ({"data": {"train": DIGITS}, "task": "embedding"}, "task", "for text jobs"),
    ({"data": {"train": DIGITS}, "teacher": MINILM}, "teacher.builtin", "text teacher"),
    ({"data": {"train": DIGITS}, "teacher": [MODEL, MINILM]}, "teacher.1.builtin", "text teacher"),
    (
        {"data": {"train": DIGITS}, "distillation": {"losses": [{"type": "ce"}, {"type": "kd"}]}},
        "distillation.losses.1.type",
        "the kd loss needs a teacher",
    ),
    (
        {"data": {"train": DIGITS}, "teacher": MODEL, "distillation": {"losses": [{"type": "attention"}]}},
        "distillation.losses.0.type",
        "transformer",
    ),
    (
        {
            "data": {"train": DIGITS},
            "teacher": [MODEL, MODEL],
            "distillation": {"losses": [{"type": "hint", "student_layer": "1", "teacher_layer": "1"}]},
        },
        "distillation.losses.0",
        "one teacher's layer; this job has 2",
    ),
]

TEXT_RULES = [
    ({"data": {"train": TEXTS, "transfer": TEXTS}, "model": ENCODER}, "data.transfer", "with a teacher"),
    (
        {"data": {"train": TEXTS, "augment": {}}, "model": ENCODER, "teacher": CLASSIFIER},
        "data.augment",
        "text jobs do not support",
    ),
    (
        {
            "data": {"train": TEXTS},
            "model": ENCODER,
            "teacher": MINILM,
            "task": "embedding",
            "distillation": {"temperature": "auto"},
        },
        "distillation.temperature",
        "classification student with a teacher",
    ),
    (
        {"data": {"train": TEXTS}, "model": ENCODER, "distillation": {"alpha": "auto"}},
        "distillation.alpha",
        "classification student with a teacher",
    ),
    (
        {
            "data": {"train": TEXTS},
            "model": ENCODER,
            "teacher": CLASSIFIER,
            "distillation": {"alpha": "auto", "losses": [{"type": "kd"}]},
        },
        "distillation.alpha",
        "own weight",
    ),
    (
        {
            "data": {"train": TEXTS},
            "model": ENCODER,
            "teacher": MINILM,
            "task": "embedding",
            "baseline": True,
        },
        "baseline",
        "no labels",
    ),
    ({"data": {"train": TEXTS}, "model": ENCODER, "baseline": True}, "baseline", "without a teacher"),
    (
        {
            "data": {"train": TEXTS},
            "model": ENCODER,
            "teacher": MINILM,
            "task": "embedding",
            "distillation": {"losses": [{"type": "kd"}]},
        },
        "distillation.losses",
        "only for classification students with a teacher",
    ),
    (
        {
            "data": {"train": TEXTS},
            "model": ENCODER,
            "teacher": CLASSIFIER,
            "distillation": {"losses": [{"type": "kd"}, {"type": "dkd"}]},
        },
        "distillation.losses.1.type",
        "not dkd",
    ),
    (
        {"data": {"train": TEXTS}, "model": {"arch": "encoder", "init": "random", "hidden": 30, "heads": 4}},
        "model.heads",
        "not a multiple of 4 heads",
    ),
    (
        {"data": {"train": TEXTS}, "model": {"arch": "encoder", "hidden": 32}},
        "model.init",
        "keeps the teacher's hidden size",
    ),
    (
        {"data": {"train": TEXTS}, "model": ENCODER, "teacher": [CLASSIFIER, CLASSIFIER]},
        "teacher",
        "one teacher",
    ),
    ({"data": {"train": TEXTS}, "model": ENCODER, "task": "embedding"}, "teacher", "add a text teacher"),
    ({"data": {"train": TEXTS}, "model": {"arch": "encoder", "layers": 7}}, "model.layers", "at most 6"),
    ({"data": {"train": TEXTS}, "model": ENCODER, "teacher": MINILM}, "teacher.builtin", "not classes"),
    (
        {
            "data": {"train": TEXTS},
            "model": ENCODER,
            "teacher": CLASSIFIER,
            "distillation": {"losses": [{"type": "attention", "layer_map": []}]},
        },
        "distillation.losses.0.layer_map",
        "empty",
    ),
    (
        {
            "data": {"train": TEXTS},
            "model": ENCODER,
            "teacher": CLASSIFIER,
            "distillation": {"losses": [{"type": "attention", "layer_map": [[0, 0], [1, 0]]}]},
        },
        "distillation.losses.0.layer_map",
        "[1, 0] is out of range: the student has 1 attention layers",
    ),
]


@pytest.mark.parametrize(("body", "field", "words"), TABULAR_RULES + TEXT_RULES)
def test_each_rule_names_its_field(body: dict[str, Any], field: str, words: str) -> None:
    loc, message = rejected(body)
    assert loc == field
    assert message.startswith(f"{field}: ")  # the API's 422 shows it as is
    assert words in message


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"train": DIGITS}},
        {"data": {"train": DIGITS}, "distillation": {"losses": [{"type": "ce"}]}},
        {"data": {"train": DIGITS, "transfer": {"file": "f"}, "augment": {}}, "teacher": [MODEL, MODEL]},
        {"data": {"train": DIGITS}, "teacher": MODEL, "baseline": True},
        {"data": {"train": TEXTS}, "model": {"arch": "encoder", "layers": 6}},
        {
            "data": {"train": TEXTS, "transfer": TEXTS},
            "model": ENCODER,
            "teacher": MINILM,
            "task": "embedding",
        },
        {
            "data": {"train": TEXTS},
            "model": {"arch": "encoder", "init": "random", "hidden": 32, "heads": 4},
            "teacher": CLASSIFIER,
            "baseline": True,
            "distillation": {
                "temperature": "auto",
                "losses": [{"type": "kd"}, {"type": "attention", "layer_map": [[0, 5]]}],
            },
        },
    ],
)
def test_specs_that_keep_the_rules_are_accepted(body: dict[str, Any]) -> None:
    JobSpec.model_validate(body)


def test_the_client_sees_the_same_error_the_api_answers() -> None:
    # No server needed: the rules run wherever the spec is parsed (the SDK validates before sending).
    with pytest.raises(ValidationError, match=r"data\.transfer: a transfer set is only used with a teacher"):
        JobSpec.model_validate({"data": {"train": DIGITS, "transfer": DIGITS}})


def test_layer_map_teacher_range_is_checked_once_the_teacher_is_known() -> None:
    check_layer_map([(0, 5)], 1, None, "f")  # the teacher's count is not known yet
    with pytest.raises(SpecError, match=r"\[0, 5\] is out of range.*the teacher 2 \(0..1\)") as info:
        check_layer_map([(0, 5)], 1, 2, "distillation.losses.0.layer_map")
    assert info.value.field == "distillation.losses.0.layer_map"
    with pytest.raises(SpecError, match="out of range"):
        check_layer_map([(0, -1)], 1, None, "f")


def test_teacher_field_names_where_each_teacher_sits() -> None:
    one = JobSpec.model_validate({"data": {"train": DIGITS}, "teacher": {"job": "job_a"}})
    assert one.teacher_field(0) == "teacher.job"
    several = JobSpec.model_validate({"data": {"train": DIGITS}, "teacher": [{"job": "j"}, MODEL]})
    assert [several.teacher_field(i) for i in range(2)] == ["teacher.0.job", "teacher.1.file"]
    text = JobSpec.model_validate(
        {"data": {"train": TEXTS}, "model": ENCODER, "teacher": MINILM, "task": "embedding"}
    )
    assert text.teacher_field(0) == "teacher.builtin"
