"""``LMPipeline``: a causal-LM job as the one pipeline over
:class:`~worker.modalities.causal_lm.CausalLMModality`, built from inputs loaded elsewhere (``bench/llm.py``,
tests)."""

from __future__ import annotations

from worker.engine.lm_data import LMExample
from worker.lm_inputs import LoadedLM, LoadedLMData
from worker.modalities.causal_lm import CausalLMModality
from worker.pipeline import JobContext, Pipeline


class LMPipeline(Pipeline):
    """``Pipeline(context, CausalLMModality(context, data=..., teacher=..., student_start=...))``;
    ``run(started)`` gives the job's :class:`~worker.pipeline.PipelineOutcome`."""

    def __init__(
        self,
        context: JobContext,
        *,
        data: LoadedLMData,
        teacher: LoadedLM | None,
        student_start: LoadedLM | None = None,
    ) -> None:
        self.lm = CausalLMModality(context, data=data, teacher=teacher, student_start=student_start)
        super().__init__(context, self.lm)

    def examples(self) -> list[LMExample]:
        """The training examples, as the modality tokenised them (:meth:`CausalLMModality.examples`)."""
        return self.lm.examples()
