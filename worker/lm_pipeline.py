"""A ``causal_lm`` job: a causal language model trained on prompt/completion records through the one loop
(:func:`worker.engine.loop.fit`), evaluated on held-out records and saved as a Hugging Face archive.

* Without a teacher the student is fine-tuned on the completions (next-token cross-entropy on completion
  tokens only): supervised fine-tuning, how a teacher is made, and sequence-level distillation when the
  completions are a teacher's answers (see :meth:`LMPipeline.examples`).
* With a teacher, white-box token-level distillation: ``distillation.losses`` (``forward_kl``,
  ``reverse_kl``, ``jsd``, ``ce``; default ``alpha * forward_kl + (1 - alpha) * ce``) against the
  teacher's top-k log-probabilities, computed once and kept in the teacher-output cache
  (:mod:`worker.engine.lm_cache`), or its full logits computed live (``distillation.full_logits``).
  ``distillation.on_policy``: a share of the batches are the student's own samples, scored live by the
  teacher (GKD).

Every loss is summed over completion tokens and divided by the token count of the optimizer step's whole
batch (``Loop.weight``), so gradient accumulation equals one big batch.
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from distill.lminfo import CausalLMInfo
from distill.results import JobResult, Report
from distill.spec import (
    CELoss,
    ForwardKLLoss,
    GPT2StudentConfig,
    JSDLoss,
    LlamaStudentConfig,
    LossSpec,
    PretrainedStudentConfig,
    ReverseKLLoss,
    TeacherLayersConfig,
)
from worker.engine.lm import (
    HF_ARCHIVE,
    LMError,
    build_student,
    describe,
    exact_match,
    generate,
    save_archive,
    token_metrics,
)
from worker.engine.lm_cache import DEFAULT_TOP_K, TeacherTopK, compute_topk
from worker.engine.lm_data import LMExample, collate, encode, examples_digest
from worker.engine.lm_losses import Divergence, TopK, generalized_jsd, next_token_ce, token_divergence
from worker.engine.loop import Loop, TrainingDiverged, fit, stack_values
from worker.failures import JobFailure
from worker.lm_inputs import LoadedLM, LoadedLMData
from worker.pipeline import STUDENT_LABEL, BasePipeline, JobContext, PipelineOutcome, json_bytes
from worker.teacher_cache import cache_digest

log = logging.getLogger(__name__)

CAPTURE = "lm_topk"
LM_DEFAULT_TEMPERATURE = 1.0
"""A causal_lm job's temperature when neither ``distillation.temperature`` nor the loss gives one (the
classification default of 4 flattens a vocabulary-sized distribution too much)."""


class LMPipeline(BasePipeline):
    """A causal-LM job (see the module doc)."""

    def __init__(
        self,
        context: JobContext,
        *,
        data: LoadedLMData,
        teacher: LoadedLM | None,
        student_start: LoadedLM | None = None,
    ) -> None:
        super().__init__(context)
        self.data = data
        self.teacher = teacher
        self.student_start = student_start
        if teacher is None and student_start is None:
            raise JobFailure(
                "invalid_spec", 'model: without a teacher the student must start from a model ("pretrained")'
            )
        source = teacher if teacher is not None else student_start
        assert source is not None
        self.tokenizer = source.tokenizer
        self.pad_id = int(self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0)
        self.max_length = self.spec.model.max_length  # type: ignore[union-attr]

    # -- the training examples: the one place records become token ids ---------------------------------

    def examples(self) -> list[LMExample]:
        """The training examples: ``data.train``'s records (prompt/completion or chat), tokenised with
        the teacher's (or the starting model's) tokenizer, cut to ``max_length``. A teacher-less job
        trains on exactly these (sequence-level distillation passes a teacher's answers as records)."""
        return encode(self.data.train.records, self.tokenizer, self.max_length)

    # -- the job ---------------------------------------------------------------------------------------

    def run(self, started: float) -> PipelineOutcome:
        torch.manual_seed(self.spec.training.seed)
        train = self.examples()
        evaluation = encode(self.data.evaluation.records, self.tokenizer, self.max_length)
        validation = (
            evaluation
            if self.data.test is None
            else encode(self.data.validation.records, self.tokenizer, self.max_length)
        )
        if sum(ex.loss_tokens for ex in train) == 0 and self.spec.distillation.on_policy is None:
            raise JobFailure(
                "invalid_dataset",
                f"data.train: no completion token survives max_length {self.max_length}: raise "
                "model.max_length or shorten the prompts",
            )
        student = self._student()
        cached, cache_info = self._teacher_outputs(train)
        terms = self._terms()
        temperature_note = {key: spec.type for key, spec in terms}
        outcome = self._fit(student, train, validation, terms, cached)
        if outcome is None:
            return PipelineOutcome(stopped=True)
        history, steps = outcome
        student.eval()
        figures = self._evaluate(student, evaluation)
        teacher_figures = self._evaluate(self.teacher.model, evaluation) if self.teacher is not None else None
        info = describe(
            student, self.teacher.info.tokenizer_sha256 if self.teacher else self._start_tokenizer()
        )
        card = self._card(info, figures, teacher_figures)
        archive, hf_info = save_archive(student, self.tokenizer, card=card)
        info = replace(info, tokenizer_sha256=hf_info.tokenizer_sha256)
        if cache_info is not None:
            epochs = self.spec.training.epochs
            passes_saved = epochs if cache_info["hit"] else epochs - 1
            cache_info["teacher_compute_skipped"] = round(passes_saved / epochs, 6) if epochs else 0.0
        result = self._result(info, figures, teacher_figures, cache_info, len(archive))
        result["hf_model"] = hf_info.to_meta()
        report: dict[str, Any] = {
            "version": 1,
            "job_id": self.job_id,
            "name": self.spec.name,
            "kind": "lm",
            "task": "causal_lm",
            "student": {**figures, "parameters": info.parameters, "architecture": info.architecture},
            "teacher": None
            if teacher_figures is None or self.teacher is None
            else {
                **teacher_figures,
                "parameters": self.teacher.info.parameters,
                "architecture": self.teacher.info.architecture,
                "source": self.teacher.field,
            },
            "teacher_cache": cache_info,
            "hyperparameters": {
                "losses": [spec.model_dump(mode="json") for _, spec in terms],
                "terms": temperature_note,
                "temperature": self._temperature(None),
                "max_length": self.max_length,
                "optimizer_steps": steps,
                "on_policy": None
                if self.spec.distillation.on_policy is None
                else self.spec.distillation.on_policy.model_dump(mode="json"),
            },
            "data": {
                **self.data.summary(0 if self.teacher is None else 1),
                "train_tokens": sum(len(ex.ids) for ex in train),
                "train_completion_tokens": sum(ex.loss_tokens for ex in train),
            },
            "history": history,
            "spec": self.spec.model_dump(mode="json"),
            "exports": {"hf": {"file": HF_ARCHIVE, "bytes": len(archive)}},
            "environment": {
                "device": str(self.device),
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "duration_seconds": round(time.monotonic() - started, 3),
        }
        artifacts = {HF_ARCHIVE: archive}
        teacher_value = None if teacher_figures is None else teacher_figures.get("token_accuracy")
        label = STUDENT_LABEL if self.teacher is not None else "model"
        artifacts |= self.curves({label: history}, teacher=teacher_value)
        report_json = Report.model_validate(report).to_json()
        artifacts["report.json"] = json_bytes(_finite(report_json))
        return PipelineOutcome(stopped=False, result=result, summary=result, artifacts=artifacts)

    # -- parts -----------------------------------------------------------------------------------------

    def _start_tokenizer(self) -> str | None:
        return None if self.student_start is None else self.student_start.info.tokenizer_sha256

    def _student(self) -> Any:
        model = self.spec.model
        if isinstance(model, PretrainedStudentConfig):
            assert self.student_start is not None
            student = self.student_start.model
        else:
            assert self.teacher is not None
            assert isinstance(model, GPT2StudentConfig | LlamaStudentConfig | TeacherLayersConfig)
            try:
                student = build_student(
                    model, self.teacher.model, self.tokenizer, seed=self.spec.training.seed
                )
            except LMError as exc:
                raise JobFailure("invalid_spec", f"model: {exc}") from exc
        if self.teacher is not None:
            t_vocab, s_vocab = self.teacher.info.vocab_size, int(student.config.vocab_size)
            if t_vocab != s_vocab:
                raise JobFailure(
                    "invalid_spec",
                    f"model: the student's vocabulary ({s_vocab}) is not the teacher's ({t_vocab}); "
                    "token-level distillation needs one tokenizer",
                )
        return student.to(self.device)

    def _terms(self) -> list[tuple[str, LossSpec]]:
        """``(key, loss spec)`` of each term: the spec's losses, or the default."""
        spec = self.spec.distillation
        if spec.losses is not None:
            specs: list[LossSpec] = list(spec.losses)
        elif self.teacher is None:
            specs = [CELoss(type="ce")]
        else:
            alpha = spec.alpha if isinstance(spec.alpha, float) else 0.9
            specs = [ForwardKLLoss(type="forward_kl", weight=alpha), CELoss(type="ce", weight=1.0 - alpha)]
        keys: list[str] = []
        seen: dict[str, int] = {}
        for s in specs:
            seen[s.type] = seen.get(s.type, 0) + 1
            keys.append(f"{s.type}_loss" if seen[s.type] == 1 else f"{s.type}{seen[s.type]}_loss")
        return list(zip(keys, specs, strict=True))

    def _temperature(self, loss: LossSpec | None) -> float:
        own = getattr(loss, "temperature", None)
        if own is not None:
            return float(own)
        spec = self.spec.distillation
        if "temperature" in spec.model_fields_set and isinstance(spec.temperature, float):
            return spec.temperature
        return LM_DEFAULT_TEMPERATURE

    def _teacher_outputs(self, train: list[LMExample]) -> tuple[TeacherTopK | None, dict[str, Any] | None]:
        """The teacher's top-k over the training examples: from the cache, or computed once and cached.
        None with ``full_logits`` (the teacher runs live) or without a teacher."""
        if self.teacher is None or self.spec.distillation.full_logits:
            return None, None
        k = self.spec.distillation.top_k or DEFAULT_TOP_K
        digest = cache_digest(
            teacher_sha256=[self.teacher.sha256],
            inputs_sha256=examples_digest(train),
            capture=[CAPTURE],
            top_k=k,
        )
        tokens = sum(ex.loss_tokens for ex in train)
        info: dict[str, Any] = {"key": digest, "examples": len(train), "tokens": tokens, "top_k": k}
        blob = self.cache.get(digest)
        if blob is not None:
            try:
                cached = TeacherTopK.from_bytes(blob).align(train)
            except (ValueError, KeyError) as exc:
                log.warning("job %s: cached teacher outputs unusable (%s); recomputing", self.job_id, exc)
            else:
                info |= self._sizes(cached, blob)
                self.event("teacher outputs reused from the cache: the teacher did not run", info)
                return cached, {**info, "hit": True}
        began = time.monotonic()
        cached = compute_topk(
            self.teacher.model.to(self.device), train, k=k, pad_id=self.pad_id, device=self.device
        )
        seconds = round(time.monotonic() - began, 3)
        blob = cached.to_bytes()
        self.cache.put(digest, blob)
        info |= self._sizes(cached, blob)
        self.event("teacher top-k computed once and cached", {**info, "seconds": seconds})
        return cached, {**info, "hit": False, "seconds": seconds}

    def _sizes(self, cached: TeacherTopK, blob: bytes) -> dict[str, Any]:
        tokens = max(cached.tokens, 1)
        return {
            "bytes": len(blob),
            "bytes_per_token": cached.bytes_per_token,
            "stored_bytes_per_token": round(len(blob) / tokens, 2),
            "full_logits_bytes_per_token_fp16": 2 * cached.vocab_size,
        }

    def _fit(
        self,
        student: Any,
        train: list[LMExample],
        validation: list[LMExample],
        terms: list[tuple[str, LossSpec]],
        cached: TeacherTopK | None,
    ) -> tuple[list[dict[str, float]], int] | None:
        t = self.spec.training
        teacher_model = None if self.teacher is None else self.teacher.model.to(self.device).eval()
        on_policy = self.spec.distillation.on_policy
        coin = torch.Generator().manual_seed(t.seed + 1)
        sampler = torch.Generator().manual_seed(t.seed + 2)
        keys = ["loss", *(key for key, _ in terms)]

        def step(indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            chosen = [train[int(i)] for i in indices]
            live = on_policy is not None and float(torch.rand((), generator=coin)) < on_policy.fraction
            if live:
                assert on_policy is not None and teacher_model is not None
                chosen = self._sampled(
                    student, chosen, on_policy.max_new_tokens, on_policy.temperature, sampler
                )
            batch = collate(chosen, self.pad_id, self.device)
            logits = student(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
            teacher: torch.Tensor | TopK | None = None
            if teacher_model is not None and any(not isinstance(s, CELoss) for _, s in terms):
                if cached is not None and not live:
                    teacher = cached.batch([int(i) for i in indices], logits.shape[1], self.device)
                else:
                    with torch.no_grad():
                        teacher = teacher_model(
                            input_ids=batch.input_ids, attention_mask=batch.attention_mask
                        ).logits[:, :-1]
            parts = []
            for _, spec in terms:
                parts.append(self._term(spec, logits, teacher, batch.targets, batch.loss_mask, live))
            weights = [spec.weight for _, spec in terms]
            loss = sum(
                (w * p for w, p in zip(weights, parts, strict=True)), torch.zeros((), device=self.device)
            )
            return loss, stack_values(loss, *parts)

        def evaluate() -> dict[str, float]:
            metrics = token_metrics(student, validation, pad_id=self.pad_id, device=self.device)
            return {"val_token_accuracy": metrics["token_accuracy"], "val_perplexity": metrics["perplexity"]}

        optimizer = torch.optim.AdamW(student.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay)
        loop = Loop(
            model=student,
            optimizer=optimizer,
            step=step,
            keys=keys,
            evaluate=evaluate,
            examples=len(train),
            epochs=t.epochs,
            batch_size=t.batch_size,
            seed=t.seed,
            learning_rate=t.learning_rate,
            weight=lambda indices: float(sum(train[int(i)].loss_tokens for i in indices)),
            device=self.device,
        )
        try:
            outcome = fit(loop, self.progress, **self.hooks)
        except TrainingDiverged as exc:
            raise JobFailure("training_diverged", str(exc)) from exc
        if outcome.stopped:
            return None
        return outcome.history, outcome.steps

    def _term(
        self,
        spec: LossSpec,
        logits: torch.Tensor,
        teacher: torch.Tensor | TopK | None,
        targets: torch.Tensor,
        mask: torch.Tensor,
        live: bool,
    ) -> torch.Tensor:
        if isinstance(spec, CELoss):
            if live:  # the student's own samples are not a reference to imitate
                return torch.zeros((), device=logits.device)
            return next_token_ce(logits, targets, mask)
        assert teacher is not None
        temperature = self._temperature(spec)
        if isinstance(spec, JSDLoss):
            return generalized_jsd(logits, teacher, mask, beta=spec.beta, temperature=temperature)
        assert isinstance(spec, ForwardKLLoss | ReverseKLLoss)
        kind: Divergence = "forward_kl" if isinstance(spec, ForwardKLLoss) else "reverse_kl"
        return token_divergence(logits, teacher, mask, kind=kind, temperature=temperature)

    def _sampled(
        self,
        student: Any,
        examples: Sequence[LMExample],
        max_new_tokens: int,
        temperature: float,
        generator: torch.Generator,
    ) -> list[LMExample]:
        """The prompts of ``examples`` completed by the student's own samples (on-policy batches)."""
        was_training = student.training
        student.eval()
        room = [max(min(max_new_tokens, self.max_length - ex.prompt_length), 1) for ex in examples]
        outs = generate(
            student,
            [ex.ids[: ex.prompt_length] for ex in examples],
            self.tokenizer,
            max_new_tokens=max(room),
            device=self.device,
            sample=True,
            temperature=temperature,
            generator=generator,
        )
        if was_training:
            student.train()
        return [
            LMExample(ex.ids[: ex.prompt_length] + out[:r], ex.prompt_length, None)
            for ex, out, r in zip(examples, outs, room, strict=True)
        ]

    def _evaluate(self, model: Any, examples: list[LMExample]) -> dict[str, Any]:
        model = model.to(self.device).eval()
        metrics = token_metrics(model, examples, pad_id=self.pad_id, device=self.device)
        began = time.perf_counter()
        match, texts = exact_match(model, self.tokenizer, examples, device=self.device)
        seconds = time.perf_counter() - began
        generated = sum(len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        return {
            "exact_match": match,
            "token_accuracy": metrics["token_accuracy"],
            "perplexity": metrics["perplexity"],
            "tokens_per_second": metrics["tokens_per_second"],
            "generated_tokens_per_second": generated / seconds if seconds > 0 else None,
            "examples": len(examples),
            "samples": [
                {"completion": ex.completion, "generated": t}
                for ex, t in zip(
                    [e for e in examples if e.completion is not None][:5], texts[:5], strict=False
                )
            ],
        }

    def _result(
        self,
        info: CausalLMInfo,
        figures: dict[str, Any],
        teacher_figures: dict[str, Any] | None,
        cache_info: dict[str, Any] | None,
        archive_bytes: int,
    ) -> dict[str, Any]:
        result: dict[str, Any] = {
            "exact_match": figures["exact_match"],
            "token_accuracy": figures["token_accuracy"],
            "perplexity": figures["perplexity"],
            "tokens_per_second": figures["tokens_per_second"],
            "parameters": info.parameters,
            "bytes_on_disk": archive_bytes,
            "lm_model": info.to_meta(),
        }
        if teacher_figures is not None and self.teacher is not None:
            result |= {
                "teacher_exact_match": teacher_figures["exact_match"],
                "teacher_token_accuracy": teacher_figures["token_accuracy"],
                "teacher_perplexity": teacher_figures["perplexity"],
                "teacher_tokens_per_second": teacher_figures["tokens_per_second"],
                "teacher_parameters": self.teacher.info.parameters,
            }
            if self.teacher.info.parameters and info.parameters:
                result["compression_ratio"] = round(self.teacher.info.parameters / info.parameters, 4)
        if cache_info is not None:
            result["teacher_cache_hit"] = cache_info["hit"]
            result["teacher_cache_bytes_per_token"] = cache_info["bytes_per_token"]
        return JobResult.model_validate(_finite(result)).to_json()

    def _card(self, info: CausalLMInfo, figures: dict[str, Any], teacher: dict[str, Any] | None) -> str:
        """The model card (README.md of the archive): :func:`distill.hfarchive.model_card`."""
        from distill.hfarchive import model_card

        method = (
            "fine-tuned on the completions (next-token cross-entropy; no teacher)"
            if self.teacher is None
            else "token-level distillation: "
            + ", ".join(f"{spec.type} x{spec.weight:g}" for _, spec in self._terms())
            + (", top-k teacher cache" if not self.spec.distillation.full_logits else ", full teacher logits")
        )
        figure_names = ("exact_match", "token_accuracy", "perplexity")
        measured: dict[str, Any] = {f"held-out {k.replace('_', ' ')}": figures[k] for k in figure_names}
        if teacher is not None:
            measured |= {f"teacher's held-out {k.replace('_', ' ')}": teacher[k] for k in figure_names}
        return model_card(
            title=self.spec.name or f"Distill causal LM {self.job_id}",
            base={
                "pipeline_tag": "text-generation",
                "job": self.job_id,
                "student": {
                    "architecture": info.architecture,
                    "parameters": info.parameters,
                    "layers": info.layers,
                },
                "teacher": None
                if self.teacher is None
                else {"source": self.teacher.name, "parameters": self.teacher.info.parameters},
                "data": {
                    "training records": len(self.data.train),
                    "held-out records": len(self.data.evaluation),
                },
                "method": method,
                "figures": _finite(measured),
                "usage": (
                    "from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast\n"
                    'model = AutoModelForCausalLM.from_pretrained("model")\n'
                    'tokenizer = PreTrainedTokenizerFast.from_pretrained("model")'
                ),
            },
        )


def _finite(value: Any) -> Any:
    """Non-finite floats become None (``json.dumps(allow_nan=False)`` must work)."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
