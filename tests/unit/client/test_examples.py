"""Every spec under examples/ is a valid job spec (placeholders such as job_TEACHER are shaped like ids)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distill.spec import JobSpec

EXAMPLES = sorted((Path(__file__).resolve().parents[3] / "examples").glob("*.yaml"))


def test_there_is_an_example_for_each_kind_of_job() -> None:
    specs = {path.stem: JobSpec.model_validate(yaml.safe_load(path.read_text())) for path in EXAMPLES}
    assert any(s.teacher is None and s.data.train.model_dump().get("builtin") for s in specs.values())
    assert any(s.teacher is not None for s in specs.values())
    assert {getattr(s, "task", None) for s in specs.values()} >= {"embedding", "classification", "causal_lm"}
    lm = [s for s in specs.values() if s.task == "causal_lm"]
    assert any(s.teacher is None for s in lm)  # fine-tuning on reference answers
    assert any(type(s.teacher).__name__ == "JobTeacher" for s in lm)  # white-box
    assert any(type(s.teacher).__name__ == "EndpointTeacher" for s in lm)  # black-box


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_is_a_valid_spec(path: Path) -> None:
    JobSpec.model_validate(yaml.safe_load(path.read_text()))
