"""One module per kind of data (see :mod:`worker.modality` for the seam); :func:`modality_for` picks one."""

from __future__ import annotations

from distill.spec import JobSpec
from worker.modality import Modality


def modality_for(spec: JobSpec) -> type[Modality]:
    """The modality of a job, from its spec: the one place that decides (text modules load lazily)."""
    if spec.task == "causal_lm":
        from worker.modalities.causal_lm import CausalLMModality

        return CausalLMModality
    if spec.model.arch == "encoder":
        from worker.modalities.text import TextModality

        return TextModality
    from worker.modalities.tabular import TabularModality

    return TabularModality
