"""``teacher.endpoint``: where it is allowed, and its API key kept out of the stored spec."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from distill.secrets import ENDPOINT_API_KEY, split_secrets
from distill.spec import JobSpec, SpecError

KEY = "sk-unit-0123456789abcdef"


def spec(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": "causal_lm",
        "data": {"train": {"file": "file_prompts"}},
        "model": {"arch": "pretrained", "file": "file_start"},
        "teacher": {"endpoint": {"base_url": "http://127.0.0.1:8001/v1", "model": "m", "api_key": KEY}},
    }
    body.update(changes)
    return body


def field_of(error: ValidationError) -> str:
    return ".".join(str(p) for p in error.errors()[0]["loc"])


def test_an_endpoint_teacher_has_defaults_and_hides_its_key_from_repr() -> None:
    parsed = JobSpec.model_validate(spec())
    endpoint = parsed.teacher.endpoint  # type: ignore[union-attr]
    assert (endpoint.max_tokens, endpoint.temperature, endpoint.concurrency) == (512, 0.0, 8)
    assert endpoint.train_on_reasoning is True
    assert KEY not in repr(parsed) and KEY not in str(parsed)
    assert parsed.teacher_field(0) == "teacher.endpoint"


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        ({"task": "classification", "model": {"arch": "mlp"}}, "teacher.endpoint", "causal_lm"),
        ({"model": {"arch": "gpt2"}}, "model.arch", "tokenizer"),
        ({"distillation": {"losses": [{"type": "forward_kl"}]}}, "distillation.losses.0.type", "answers"),
        ({"distillation": {"top_k": 8}}, "distillation.top_k", "distributions"),
    ],
)
def test_an_endpoint_teacher_is_refused_where_it_cannot_teach(
    changes: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(ValidationError) as error:
        JobSpec.model_validate(spec(**changes))
    assert field_of(error.value) == field and words in str(error.value)


def test_a_list_of_teachers_with_an_endpoint_is_refused() -> None:
    endpoint = spec()["teacher"]
    with pytest.raises(ValidationError) as error:
        JobSpec.model_validate(spec(teacher=[endpoint, {"file": "file_t"}]))
    assert "teacher" in field_of(error.value)


def test_base_url_must_be_http() -> None:
    bad = spec(teacher={"endpoint": {"base_url": "file:///etc/passwd", "model": "m"}})
    with pytest.raises(ValidationError) as error:
        JobSpec.model_validate(bad)
    located = [".".join(str(p) for p in e["loc"]) for e in error.value.errors()]
    assert "teacher.EndpointTeacher.endpoint.base_url" in located  # (teacher is an undiscriminated union)


def test_the_stored_spec_shows_stars_and_the_key_goes_apart() -> None:
    parsed = JobSpec.model_validate(spec())
    stored, secrets = split_secrets(parsed)
    assert stored["teacher"]["endpoint"]["api_key"] == "***"
    assert secrets == {ENDPOINT_API_KEY: KEY}
    assert KEY not in str(stored)
    assert JobSpec.model_validate(stored).teacher.endpoint.api_key == "***"  # type: ignore[union-attr]
    with pytest.raises(SpecError) as error:  # the stored spec sent again, with its placeholder
        split_secrets(JobSpec.model_validate(stored))
    assert error.value.field == ENDPOINT_API_KEY


def test_no_key_no_secret() -> None:
    parsed = JobSpec.model_validate(spec(teacher={"endpoint": {"base_url": "http://h/v1", "model": "m"}}))
    stored, secrets = split_secrets(parsed)
    assert secrets == {} and stored["teacher"]["endpoint"]["api_key"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"train": {"builtin": "digits"}}},
        {"task": "causal_lm", "data": {"train": {"file": "f"}}, "model": {"arch": "pretrained", "file": "x"}},
        {
            "task": "causal_lm",
            "data": {"train": {"file": "f"}},
            "model": {"arch": "gpt2"},
            "teacher": {"file": "t"},
            "distillation": {"top_k": 8},
        },
        spec(),
    ],
)
def test_a_stored_spec_validates_again(body: dict[str, Any]) -> None:
    """The API stores the spec dumped with every default; the worker validates that dump again (a rule
    that treated a dumped default as "given" failed every job in the worker)."""
    stored, _ = split_secrets(JobSpec.model_validate(body))
    assert JobSpec.model_validate(stored).model_dump(mode="json") == stored
