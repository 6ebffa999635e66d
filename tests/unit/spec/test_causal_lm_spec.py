"""causal_lm job specs: the student configs, losses and on-policy options, the 422s for fields that only
classification jobs read, and the plan's checks of what the references are (one tokenizer)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from distill.datasets import DatasetInfo
from distill.lminfo import CausalLMInfo, is_causal_lm_meta
from distill.plan import Resolved, plan
from distill.spec import (
    GPT2StudentConfig,
    JobSpec,
    LlamaStudentConfig,
    PretrainedStudentConfig,
    SpecError,
    TeacherLayersConfig,
)

TEACHER = CausalLMInfo("gpt2", 86, 4, 200_000, "a" * 64)


def lm_data(completions: bool = True) -> DatasetInfo:
    return DatasetInfo("jsonl", 40, [], None, completions, kind="lm")


def spec(**fields: Any) -> JobSpec:
    body: dict[str, Any] = {
        "task": "causal_lm",
        "data": {"train": {"file": "file_data"}},
        "model": {"arch": "gpt2", "n_layer": 1, "n_embd": 32, "n_head": 2},
        "teacher": {"job": "job_teacher"},
    }
    body |= fields
    return JobSpec.model_validate(body)


def field_of(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    return ".".join(str(p) for p in exc.value.errors()[0]["loc"])


def test_each_student_config_parses_to_its_class() -> None:
    assert isinstance(spec().model, GPT2StudentConfig)
    llama = spec(
        model={
            "arch": "llama",
            "num_hidden_layers": 2,
            "hidden_size": 64,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
        }
    )
    assert isinstance(llama.model, LlamaStudentConfig) and llama.model.num_key_value_heads == 2
    qwen = spec(model={"arch": "qwen2", "num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2})
    assert isinstance(qwen.model, LlamaStudentConfig) and qwen.model.arch == "qwen2"
    layers = spec(model={"arch": "teacher_layers", "layers": [0, 3]})
    assert isinstance(layers.model, TeacherLayersConfig)
    start = spec(model={"arch": "pretrained", "job": "job_x"})
    assert isinstance(start.model, PretrainedStudentConfig)
    losses = spec(
        distillation={
            "losses": [
                {"type": "forward_kl"},
                {"type": "reverse_kl", "weight": 0.5},
                {"type": "jsd", "beta": 0.1},
                {"type": "ce"},
            ],
            "on_policy": {"fraction": 0.5, "max_new_tokens": 8},
        }
    )
    assert [loss.type for loss in losses.distillation.losses or []] == [
        "forward_kl",
        "reverse_kl",
        "jsd",
        "ce",
    ]


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"baseline": True}, "baseline"),
        ({"export": ["onnx"]}, "export"),
        ({"data": {"train": {"file": "f"}, "transfer": {"file": "g"}}}, "data.transfer"),
        ({"data": {"train": {"file": "f"}, "augment": {"copies": 2}}}, "data.augment"),
        ({"distillation": {"temperature": "auto"}}, "distillation.temperature"),
        ({"distillation": {"losses": [{"type": "kd"}]}}, "distillation.losses.0.type"),
        ({"distillation": {"losses": [{"type": "dkd"}]}}, "distillation.losses.0.type"),
        ({"teacher": [{"job": "a"}, {"job": "b"}]}, "teacher"),
        ({"teacher": {"builtin": "all-minilm-l6-v2"}}, "teacher.builtin"),
        ({"model": {"arch": "mlp"}}, "model.arch"),
        ({"model": {"arch": "gpt2", "n_embd": 30, "n_head": 4}}, "model.n_head"),
        (
            {
                "model": {
                    "arch": "llama",
                    "hidden_size": 64,
                    "num_attention_heads": 4,
                    "num_key_value_heads": 3,
                }
            },
            "model.num_key_value_heads",
        ),
        ({"model": {"arch": "teacher_layers", "layers": [1, 1]}}, "model.layers"),
    ],
)
def test_classification_fields_and_bad_shapes_answer_naming_the_field(
    fields: dict[str, Any], where: str
) -> None:
    with pytest.raises(ValidationError) as exc:
        spec(**fields)
    assert field_of(exc) == where
    assert exc.value.errors()[0]["msg"].startswith(where)


def test_a_causal_lm_student_needs_the_task() -> None:
    with pytest.raises(ValidationError) as exc:
        JobSpec.model_validate({"data": {"train": {"file": "f"}}, "model": {"arch": "gpt2"}})
    assert field_of(exc) == "task"


def test_without_a_teacher_only_ce_and_a_starting_model() -> None:
    with pytest.raises(ValidationError) as exc:
        spec(teacher=None, distillation={"losses": [{"type": "forward_kl"}]})
    assert field_of(exc) == "distillation.losses.0.type"
    with pytest.raises(ValidationError) as exc:
        spec(teacher=None)  # a gpt2 config takes its teacher's tokenizer
    assert field_of(exc) == "model.arch"
    with pytest.raises(ValidationError) as exc:
        spec(teacher=None, model={"arch": "pretrained", "file": "f"}, distillation={"on_policy": {}})
    assert field_of(exc) == "distillation.on_policy"
    ok = spec(teacher=None, model={"arch": "pretrained", "file": "f"})
    assert ok.teacher is None


def test_lm_losses_and_options_are_refused_in_classification_jobs() -> None:
    base = {"data": {"train": {"builtin": "digits"}}, "teacher": {"job": "j"}}
    with pytest.raises(ValidationError) as exc:
        JobSpec.model_validate(base | {"distillation": {"losses": [{"type": "jsd"}]}})
    assert field_of(exc) == "distillation.losses.0.type"
    with pytest.raises(ValidationError) as exc:
        JobSpec.model_validate(base | {"distillation": {"on_policy": {"fraction": 0.5}}})
    assert field_of(exc) == "distillation.on_policy"


def test_pretrained_needs_exactly_one_source() -> None:
    with pytest.raises(ValidationError):
        spec(model={"arch": "pretrained"})
    with pytest.raises(ValidationError):
        spec(model={"arch": "pretrained", "file": "a", "job": "b"})


def test_plan_checks_the_data_the_teacher_and_the_layers() -> None:
    assert plan(spec(), Resolved(train=lm_data(), teachers=[TEACHER])).kind == "lm"
    text = DatasetInfo("jsonl", 3, [], 2, True, kind="text")
    with pytest.raises(SpecError) as err:
        plan(spec(), Resolved(train=text, teachers=[TEACHER]))
    assert err.value.field == "data.train"
    with pytest.raises(SpecError) as err:
        plan(
            spec(teacher=None, model={"arch": "pretrained", "file": "f"}),
            Resolved(train=lm_data(completions=False), student=TEACHER),
        )
    assert err.value.field == "data.train" and "completion" in err.value.message
    with pytest.raises(SpecError) as err:
        plan(
            spec(model={"arch": "teacher_layers", "layers": [0, 4]}),
            Resolved(train=lm_data(), teachers=[TEACHER]),
        )
    assert err.value.field == "model.layers" and "[4]" in err.value.message
    from distill.spec import StoredModelConfig

    tabular = StoredModelConfig.model_validate(
        {"model": {"arch": "mlp"}, "input_shape": [4], "num_classes": 2}
    )
    with pytest.raises(SpecError) as err:
        plan(spec(), Resolved(train=lm_data(), teachers=[tabular]))
    assert err.value.field == "teacher.job"
    # an lm dataset in a classification job
    with pytest.raises(SpecError) as err:
        plan(JobSpec.model_validate({"data": {"train": {"file": "f"}}}), Resolved(train=lm_data()))
    assert err.value.field == "data.train" and "causal_lm" in err.value.message


def test_different_tokenizers_answer_naming_both() -> None:
    other = CausalLMInfo("llama", 86, 2, 50_000, "b" * 64)
    with pytest.raises(SpecError) as err:
        plan(
            spec(model={"arch": "pretrained", "file": "file_student"}, teacher={"job": "job_teacher"}),
            Resolved(train=lm_data(), teachers=[TEACHER], student=other),
        )
    assert err.value.field == "model.file"
    assert "file_student" in err.value.message and "job_teacher" in err.value.message
    same = CausalLMInfo("llama", 86, 2, 50_000, "a" * 64)
    plan(
        spec(model={"arch": "pretrained", "file": "file_student"}),
        Resolved(train=lm_data(), teachers=[TEACHER], student=same),
    )


def test_model_info_round_trips_and_recognises_archives() -> None:
    assert CausalLMInfo.from_meta(TEACHER.to_meta()) == TEACHER
    assert is_causal_lm_meta({"architectures": ["GPT2LMHeadModel"], "task": "causal_lm"})
    assert is_causal_lm_meta({"architectures": ["LlamaForCausalLM"]})
    assert not is_causal_lm_meta({"kind": "text", "task": "classification"})
