"""Causal language models: ``task: "causal_lm"`` jobs as the third modality of the one pipeline.

A causal language model is trained on prompt/completion records (or chat ``messages``) through the one loop
(:func:`worker.engine.loop.fit`), evaluated on held-out records and stored as a Hugging Face archive
(``model.hf.zip``).

* Without a teacher the student is fine-tuned on the completions (next-token cross-entropy on completion
  tokens only): supervised fine-tuning, how a teacher is made, and sequence-level distillation when the
  completions are a teacher's answers (black-box jobs: :mod:`worker.endpoint_teacher`).
* With a teacher, white-box token-level distillation: ``distillation.losses`` (``forward_kl``,
  ``reverse_kl``, ``jsd``, ``ce``; default ``alpha * forward_kl + (1 - alpha) * ce``) against the
  teacher's top-k log-probabilities at every completion token: :meth:`CausalLMModality.compute_signals`
  gives them as sequence :class:`~worker.engine.signals.TeacherSignals` (``offsets``, 100 bytes a token at
  ``k = 16``), so they are computed once and kept in the one teacher cache like any modality's. With
  ``distillation.full_logits`` there is no signal request: the teacher's full logits are computed live.
  ``distillation.on_policy``: a share of the batches are the student's own samples, scored live by the
  teacher (GKD).

Every loss is summed over completion tokens and divided by the token count of the optimizer step's whole
batch (``Loop.weight``), so gradient accumulation equals one big batch. Temperatures are the losses' own
or the spec's (no "auto" trials: :meth:`CausalLMModality.chooses`), and there is no from-scratch baseline.

(Over 500 lines: the modality's hooks — signals, the three kinds of run, evaluation with generation, the
Hugging Face archive and its model card — are one module by the seam's design: a kind of job is one module.)
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from distill.lminfo import CausalLMInfo
from distill.spec import (
    LM_DEFAULT_TEMPERATURE,
    CELoss,
    EndpointTeacher,
    ForwardKLLoss,
    GPT2StudentConfig,
    LlamaStudentConfig,
    LossSpec,
    PretrainedStudentConfig,
    TeacherLayersConfig,
)
from worker.engine.lm import (
    HF_ARCHIVE,
    LMError,
    build_student,
    describe,
    exact_match,
    save_archive,
    token_metrics,
)
from worker.engine.lm_cache import DEFAULT_TOP_K, TeacherTopK, compute_topk
from worker.engine.lm_data import LMExample, encode, examples_digest
from worker.engine.lm_train import LMTraining, train_lm
from worker.engine.loop import TrainingDiverged
from worker.engine.signals import TeacherSignals
from worker.failures import JobFailure
from worker.lm_inputs import LoadedLM, LoadedLMData
from worker.modality import Evaluation, JobContext, Modality, Run, SignalRequest, Trained

if TYPE_CHECKING:
    from worker.inputs import InputLoader

CAPTURE = "lm_topk"
"""What the signal request captures: the teacher's top-k next-token log-probabilities (a cache key part)."""


class CausalLMModality(Modality):
    """A causal-LM job (see the module doc)."""

    name = "causal_lm"
    report_kind = "lm"
    reused_message = "teacher outputs reused from the cache: the teacher did not run"

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
        self.max_length: int = self.spec.model.max_length  # type: ignore[union-attr]
        self.train_examples = self.examples()
        self.evaluation_examples = encode(data.evaluation.records, self.tokenizer, self.max_length)
        self.validation_examples = (
            self.evaluation_examples
            if data.test is None
            else encode(data.validation.records, self.tokenizer, self.max_length)
        )
        if (
            sum(ex.loss_tokens for ex in self.train_examples) == 0
            and self.spec.distillation.on_policy is None
        ):
            raise JobFailure(
                "invalid_dataset",
                f"data.train: no completion token survives max_length {self.max_length}: raise "
                "model.max_length or shorten the prompts",
            )
        self._steps = 0
        self._info: CausalLMInfo | None = None
        self._hf_meta: dict[str, Any] | None = None
        self._archive_bytes = 0

    @classmethod
    def load(cls, context: JobContext, loader: InputLoader) -> CausalLMModality:
        """The records, the teacher and a ``pretrained`` student's starting model (:class:`LMInputs`).
        Black-box jobs (an endpoint teacher) are built by the runner: their data are the teacher's
        answers, collected first (:func:`worker.endpoint_teacher.taught_data`)."""
        from worker.lm_inputs import LMInputs

        if isinstance(context.spec.teacher, EndpointTeacher):
            raise ValueError("an endpoint teacher's job trains on its collected answers: see the runner")
        data, teacher, start = LMInputs(loader, context.spec).load()
        return cls(context, data=data, teacher=teacher, student_start=start)

    @property
    def teachers(self) -> int:
        return 0 if self.teacher is None else 1

    def examples(self) -> list[LMExample]:
        """The training examples: ``data.train``'s records (prompt/completion or chat), tokenised with
        the teacher's (or the starting model's) tokenizer, cut to ``max_length``. A teacher-less job
        trains on exactly these (sequence-level distillation passes a teacher's answers as records)."""
        return encode(self.data.train.records, self.tokenizer, self.max_length)

    def data_summary(self) -> dict[str, Any]:
        return {
            **self.data.summary(self.teachers),
            "train_tokens": sum(len(ex.ids) for ex in self.train_examples),
            "train_completion_tokens": sum(ex.loss_tokens for ex in self.train_examples),
        }

    # -- teacher signals: the teacher's top-k at every completion token ---------------------------------

    def signal_request(self) -> SignalRequest | None:
        """The top-k request (None without a teacher, or with ``full_logits``: the teacher runs live)."""
        if self.teacher is None or self.spec.distillation.full_logits:
            return None
        return SignalRequest(
            teacher_keys=[self.teacher.sha256],
            inputs_digest=examples_digest(self.train_examples),
            capture=[CAPTURE],
            top_k=self.spec.distillation.top_k or DEFAULT_TOP_K,
            examples=len(self.train_examples),
            info={"tokens": sum(ex.loss_tokens for ex in self.train_examples)},
        )

    def compute_signals(self, request: SignalRequest) -> TeacherSignals:
        assert self.teacher is not None and request.top_k is not None
        topk = compute_topk(
            self.teacher.model.to(self.device),
            self.train_examples,
            k=request.top_k,
            pad_id=self.pad_id,
            device=self.device,
        )
        return topk.to_signals(request.capture)

    def cache_figures(self, signals: TeacherSignals, stored_bytes: int, hit: bool) -> dict[str, Any]:
        """Bytes per token (as kept, and of the whole entry), what full fp16 logits would take, and the
        share of teacher passes the cache saves: a live teacher runs every epoch; the first job runs it
        once, a cache hit never."""
        topk = TeacherTopK.from_signals(signals)
        epochs = self.spec.training.epochs
        passes_saved = epochs if hit else epochs - 1
        return {
            "bytes": stored_bytes,
            "bytes_per_token": topk.bytes_per_token,
            "stored_bytes_per_token": round(stored_bytes / max(topk.tokens, 1), 2),
            "full_logits_bytes_per_token_fp16": 2 * topk.vocab_size,
            "teacher_compute_skipped": round(passes_saved / epochs, 6) if epochs else 0.0,
        }

    # -- training ---------------------------------------------------------------------------------------

    def wants_baseline(self) -> bool:
        return False

    def chooses(self, signals: TeacherSignals | None) -> bool:
        """No "auto" trials: a causal LM uses the losses' temperatures (or the spec's, or the default)."""
        return False

    def train(self, run: Run) -> Trained:
        torch.manual_seed(self.spec.training.seed)
        student = self._student()
        cached = None
        if run.signals is not None:
            try:
                cached = TeacherTopK.from_signals(run.signals).align(self.train_examples)
            except ValueError as exc:  # the cache key covers the token ids: only a damaged entry gets here
                raise JobFailure(
                    "internal", f"teacher outputs do not fit the training examples: {exc}"
                ) from exc
        history, steps, stopped = self._fit(student, self._terms(), cached, run)
        if run.kind == "student":
            self._steps = steps
        return Trained(student, stopped, history)

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
        temperature = self.spec.distillation.temperature
        return float(temperature) if isinstance(temperature, float | int) else LM_DEFAULT_TEMPERATURE

    def _fit(
        self, student: Any, terms: list[tuple[str, LossSpec]], cached: TeacherTopK | None, run: Run
    ) -> tuple[list[dict[str, float]], int, bool]:
        """The run through :func:`worker.engine.lm_train.train_lm` (data-parallel when the student's
        hooks carry the job's layout)."""
        training = LMTraining(
            train=self.train_examples,
            validation=self.validation_examples,
            terms=terms,
            temperatures=[self._temperature(spec) for _, spec in terms],
            training=self.spec.training,
            epochs=run.epochs,
            pad_id=self.pad_id,
            max_length=self.max_length,
            tokenizer=self.tokenizer,
            teacher=None if self.teacher is None else self.teacher.model,
            cached=cached,
            on_policy=self.spec.distillation.on_policy,
        )
        try:
            outcome = train_lm(student, training, self.device, run.callbacks, **run.hooks)
        except TrainingDiverged as exc:
            raise JobFailure("training_diverged", str(exc)) from exc
        return outcome.history, outcome.steps, outcome.stopped

    # -- evaluation, artifacts, result ------------------------------------------------------------------

    def evaluate(self, student: Trained, baseline: Trained | None) -> Evaluation:
        """Exact match (greedy), token accuracy, perplexity and tokens/s on the held-out records, the
        student's and the teacher's; the flat result words them as :class:`LMPipeline` always has."""
        model = student.model
        model.eval()
        figures = self._figures(model)
        teacher_figures = None if self.teacher is None else self._figures(self.teacher.model)
        info = describe(
            model,
            self.teacher.info.tokenizer_sha256
            if self.teacher is not None
            else None
            if self.student_start is None
            else self.student_start.info.tokenizer_sha256,
        )
        self._info = info
        teacher_section = None
        if teacher_figures is not None and self.teacher is not None:
            teacher_section = {
                **teacher_figures,
                "parameters": self.teacher.info.parameters,
                "architecture": self.teacher.info.architecture,
                "source": self.teacher.field,
            }
        terms = self._terms()
        on_policy = self.spec.distillation.on_policy
        hyperparameters = {
            "losses": [spec.model_dump(mode="json") for _, spec in terms],
            "terms": {key: spec.type for key, spec in terms},
            "temperature": self._temperature(None),
            "max_length": self.max_length,
            "optimizer_steps": self._steps,
            "on_policy": None if on_policy is None else on_policy.model_dump(mode="json"),
        }
        result: dict[str, Any] = {
            "exact_match": figures["exact_match"],
            "token_accuracy": figures["token_accuracy"],
            "perplexity": figures["perplexity"],
            "tokens_per_second": figures["tokens_per_second"],
            "parameters": info.parameters,
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
        return Evaluation(
            student={**figures, "parameters": info.parameters, "architecture": info.architecture},
            teacher=teacher_section,
            sections={"hyperparameters": hyperparameters},
            summary=_finite(result),
            reference=None if teacher_figures is None else teacher_figures.get("token_accuracy"),
        )

    def _figures(self, model: Any) -> dict[str, Any]:
        examples = self.evaluation_examples
        model = model.to(self.device).eval()
        metrics = token_metrics(model, examples, pad_id=self.pad_id, device=self.device)
        began = time.perf_counter()
        match, texts = exact_match(model, self.tokenizer, examples, device=self.device)
        seconds = time.perf_counter() - began
        generated = sum(len(self.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        return _finite(
            {
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
        )

    def save(self, student: Trained) -> bytes:
        """The student as a Hugging Face archive: causal LMs load with ``from_pretrained``, not as
        ``model.safetensors`` (the pipeline stores :meth:`model_artifact`'s, whose card has the figures)."""
        title = self.spec.name or f"Distill causal LM {self.job_id}"
        return save_archive(student.model, self.tokenizer, card=f"# {title}\n")[0]

    def model_artifact(self, student: Trained, evaluation: Evaluation) -> tuple[str, str, bytes]:
        """``model.hf.zip`` (``save_pretrained`` + tokenizer + a model card with the held-out figures);
        its ``HFModelInfo`` becomes ``result.hf_model``, so the student can teach or start a later job."""
        archive, hf_info = save_archive(student.model, self.tokenizer, card=self._card(evaluation))
        self._hf_meta = hf_info.to_meta()
        if self._info is not None:
            self._info = replace(self._info, tokenizer_sha256=hf_info.tokenizer_sha256)
        self._archive_bytes = len(archive)
        return HF_ARCHIVE, "hf", archive

    def export(self, fmt: str, student: Trained) -> tuple[str, dict[str, Any], bytes | None]:
        """Causal LMs are stored as ``model.hf.zip`` only (the API refuses ``export`` for them)."""
        error = "a causal language model is stored as model.hf.zip only; export is not supported"
        self.event(f"export to {fmt} skipped: {error}", {"format": fmt})
        return fmt, {"file": None, "error": error}, None

    def describe_model(self, student: Trained) -> dict[str, Any]:
        info = self._info if self._info is not None else describe(student.model, None)
        described: dict[str, Any] = {"lm_model": info.to_meta()}
        if self._hf_meta is not None:
            described["hf_model"] = self._hf_meta
        return described

    def summary(self, report: Mapping[str, Any], evaluation: Evaluation) -> dict[str, Any]:
        """The held-out figures (the teacher's as ``teacher_*``), size on disk and the cache's hit and
        bytes per token."""
        result = dict(evaluation.summary or {})
        result["bytes_on_disk"] = self._archive_bytes
        cache = report.get("teacher_cache")
        if cache is not None:
            result["teacher_cache_hit"] = bool(cache["hit"])
            result["teacher_cache_bytes_per_token"] = cache["bytes_per_token"]
        return result

    def _card(self, evaluation: Evaluation) -> str:
        """The model card (README.md of the archive): :func:`distill.hfarchive.model_card`."""
        from distill.hfarchive import model_card

        info = self._info
        assert info is not None, "evaluate() runs before the model card is written"
        method = (
            "fine-tuned on the completions (next-token cross-entropy; no teacher)"
            if self.teacher is None
            else "token-level distillation: "
            + ", ".join(f"{spec.type} x{spec.weight:g}" for _, spec in self._terms())
            + (", top-k teacher cache" if not self.spec.distillation.full_logits else ", full teacher logits")
        )
        figure_names = ("exact_match", "token_accuracy", "perplexity")
        figures, teacher = evaluation.student, evaluation.teacher
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
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
