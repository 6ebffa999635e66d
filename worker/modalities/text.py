"""The text modality: an encoder student distilled from a text teacher (MiniLM's sentence embeddings, or a
text classifier's logits, with attention maps when an attention loss asks for them), or, without a
teacher, a classifier teacher job (MiniLM + a linear head on the labels).

Teacher outputs are :class:`~worker.engine.signals.TeacherSignals` like a tabular job's, in the same
content-addressed cache: a classifier's logits (top-k past :data:`~worker.engine.signals.TOPK_THRESHOLD`
classes) over the pool (train texts, then transfer texts) with its head-averaged attention maps as
features; a sentence encoder's un-normalised embeddings of the pool, then of the validation texts, as the
feature ``"embedding"``. The key covers every text in order, the truncation length and where the pool
ends, so different transfer sets never share an entry.

Over 500 lines: the three kinds of text job (embedding, classifier teacher, distilled classifier with its
baseline) differ in their student, run and figures, and read best side by side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch

from distill.spec import EncoderConfig
from worker.engine.report import render_summary
from worker.engine.signals import TeacherSignals, resolve_top_k
from worker.engine.train import TrainingDiverged
from worker.failures import JobFailure
from worker.inputs import InputLoader, LoadedTextData, LoadedTextTeacher
from worker.modality import Evaluation, JobContext, Modality, Run, SignalRequest, Trained

if TYPE_CHECKING:
    from worker.engine.text_train import TextTrainOutcome

EMBEDDING = "embedding"
"""The feature that holds a sentence encoder's embeddings in its teacher signals."""
BASELINE_RESULT_KEYS = ("baseline_test_accuracy", "gain_over_baseline", "gap_recovered")
"""The flat ``result`` keys of a baseline, named as in tabular jobs (:func:`render_summary`)."""

Kind = Literal["embedding", "teacher", "classifier"]


def texts_digest(texts: list[str], max_length: int) -> str:
    """sha256 of the texts in order and the truncation length: the text half of a teacher-cache key."""
    digest = hashlib.sha256(f"texts/1 max_length={max_length} n={len(texts)}\n".encode())
    for text in texts:
        encoded = text.encode()
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()


class TextModality(Modality):
    """Texts in; sentence embeddings or class logits out."""

    name = "text"
    report_kind = "text"
    reused_message = "teacher outputs reused from the cache: the teacher did not run"

    def __init__(
        self, context: JobContext, *, data: LoadedTextData, teacher: LoadedTextTeacher | None
    ) -> None:
        super().__init__(context)
        if not isinstance(self.spec.model, EncoderConfig):
            raise TypeError("a text job needs an encoder model config")
        self.model_config: EncoderConfig = self.spec.model
        self.data = data
        self.teacher = teacher
        self.max_length = self.spec.model.max_length
        self.kind: Kind = (
            "embedding" if self.spec.task == "embedding" else "teacher" if teacher is None else "classifier"
        )
        self.tokenizer: Any = teacher.tokenizer if teacher is not None else None
        self._whole = False
        """A teacher job that trains only a head on the whole (frozen) MiniLM."""
        self._teacher_val: torch.Tensor | None = None
        """The teacher's validation logits, from the distilled student's run."""
        self._hf_meta: dict[str, Any] | None = None
        """``result.hf_model`` of a transformers student, once :meth:`model_artifact` stored it."""
        self._pool_texts: list[str] = []
        """The texts the teacher labels (train, then transfer), once :meth:`signal_request` ran."""

    @classmethod
    def load(cls, context: JobContext, loader: InputLoader) -> TextModality:
        return cls(context, data=loader.text_data(context.spec), teacher=loader.text_teacher(context.spec))

    @property
    def teachers(self) -> int:
        return 0 if self.teacher is None else 1

    def data_summary(self) -> dict[str, Any]:
        return self.data.summary(self.teachers)

    def wants_baseline(self) -> bool:
        return self.spec.baseline and self.kind == "classifier"

    # -- teacher signals ---------------------------------------------------------------------------------

    def _pool(self) -> list[str]:
        """The texts the teacher labels for training: the train texts, then the transfer texts (if any)."""
        transfer = self.data.transfer
        if transfer is None:
            return list(self.data.train.texts)
        overlap = len(set(transfer.texts) & set(self.data.validation.texts))
        if overlap:
            self.event(
                f"{overlap} transfer texts are also validation texts: the held-out metrics are optimistic",
                {"overlap": overlap},
            )
        return [*self.data.train.texts, *transfer.texts]

    def signal_request(self) -> SignalRequest | None:
        if self.teacher is None:
            return None
        pool = self._pool()
        self._pool_texts = pool
        info: dict[str, Any] = {}
        if self.data.transfer is not None:
            info["transfer_examples"] = len(self.data.transfer)
        if self.kind == "embedding":
            texts = pool + list(self.data.validation.texts)
            capture, top_k = [EMBEDDING], None
        else:
            teacher = self._classifier_teacher()
            texts = pool
            capture = [f"@attention.{j}" for j in self._attention_layers(teacher)]
            top_k = resolve_top_k(teacher.num_classes, None)
        return SignalRequest(
            teacher_keys=[self.teacher.key],
            inputs_digest=texts_digest(texts, self.max_length) + f":{len(pool)}",
            capture=capture,
            top_k=top_k,
            examples=len(texts),
            info=info,
        )

    def compute_signals(self, request: SignalRequest) -> TeacherSignals:
        from worker.engine.evaluate import eval_mode
        from worker.engine.text import encoder_of, tokenize
        from worker.engine.text_inference import _run_batched
        from worker.engine.text_train import classifier_signals

        assert self.teacher is not None
        pool = self._pool_texts
        if self.kind == "embedding":
            encoder = encoder_of(self.teacher.model).to(self.device)
            parts = []
            with eval_mode(encoder):  # the pool and the validation texts apart, as the training reads them
                for texts in (pool, self.data.validation.texts):
                    tokens = tokenize(self.tokenizer, texts, self.max_length)
                    parts.append(_run_batched(encoder.pooled, tokens, self.device, 64))
            return TeacherSignals(
                num_classes=0, weights=[1.0], features={EMBEDDING: torch.cat(parts)}, capture=[EMBEDDING]
            )
        teacher = self._classifier_teacher()
        return classifier_signals(
            teacher,
            tokenize(self.tokenizer, pool, self.max_length),
            self._attention_layers(teacher),
            device=self.device,
            top_k=request.top_k,
        )

    def _classifier_teacher(self) -> Any:
        from worker.engine.text import TextClassifier

        assert self.teacher is not None
        teacher = self.teacher.model
        if not isinstance(teacher, TextClassifier):
            raise JobFailure(
                "incompatible_teacher",
                f"{self.teacher.field}: a classification student needs a text classifier",
            )
        train, val = self.data.train, self.data.validation
        assert train.y is not None and val.y is not None
        if int(val.y.max()) >= teacher.num_classes or int(train.y.max()) >= teacher.num_classes:
            raise JobFailure(
                "incompatible_teacher",
                f"{self.teacher.field}: the teacher has {teacher.num_classes} classes; the data has more",
            )
        return teacher

    def _attention_layers(self, teacher: Any) -> list[int]:
        """The teacher layers whose attention maps the spec's attention terms read (none: no such term)."""
        from worker.engine.text import encoder_of
        from worker.engine.text_train import attention_layers

        try:
            return attention_layers(
                self.spec.distillation.losses,
                student_layers=self.model_config.layers,
                teacher_layers=int(encoder_of(teacher).config.num_hidden_layers),
            )
        except ValueError as exc:
            raise JobFailure("invalid_spec", f"model: {exc}") from exc

    # -- training ----------------------------------------------------------------------------------------

    def _student(self, teacher: Any, *, init: Literal["teacher", "random"] | None = None) -> Any:
        from worker.engine.text import build_text_student

        cfg = self.model_config
        if _is_hf(teacher) or cfg.format == "hf":  # a transformers student over the teacher's tokenizer
            from worker.engine.hf import build_hf_student

            assert self.teacher is not None
            return build_hf_student(
                teacher,
                self.teacher.tokenizer,
                layers=cfg.layers,
                hidden=cfg.hidden,
                heads=cfg.heads,
                intermediate=cfg.intermediate,
                init=init or cfg.init,
                max_length=self.max_length,
            )
        return build_text_student(
            teacher,
            layers=cfg.layers,
            hidden=cfg.hidden,
            heads=cfg.heads,
            intermediate=cfg.intermediate,
            init=init or cfg.init,
        )

    def _settings(self, run: Run) -> dict[str, Any]:
        t = self.spec.training
        return {
            "epochs": run.epochs,
            "batch_size": t.batch_size,
            "lr": t.learning_rate,
            "seed": t.seed,
            "max_length": self.max_length,
            "weight_decay": t.weight_decay,
            "device": self.device,
            "callbacks": run.callbacks,
            **run.hooks,
        }

    def train(self, run: Run) -> Trained:
        torch.manual_seed(self.spec.training.seed)  # every run (trials too) starts from the same student
        try:
            if self.kind == "embedding":
                outcome = self._embedding(run)
            elif self.kind == "teacher":
                outcome = self._teacher_job(run)
            elif run.kind == "baseline":
                outcome = self._baseline(run)
            else:
                outcome = self._distilled(run)
        except TrainingDiverged as exc:
            raise JobFailure("training_diverged", str(exc)) from exc
        except ValueError as exc:
            raise JobFailure("invalid_spec", f"model: {exc}") from exc
        return Trained(outcome.model, outcome.stopped, outcome.history)

    def _embedding(self, run: Run) -> TextTrainOutcome:
        from worker.engine.text import encoder_of
        from worker.engine.text_train import distill_embeddings

        assert self.teacher is not None and run.signals is not None
        teacher = encoder_of(self.teacher.model)
        # Transfer texts are simply more texts to match: they join the train texts.
        pool = self._pool_texts
        embeddings = run.signals.features[EMBEDDING]
        return distill_embeddings(
            teacher,
            self._student(teacher),
            self.tokenizer,
            pool,
            self.data.validation.texts,
            teacher_train=embeddings[: len(pool)],
            teacher_val=embeddings[len(pool) :],
            **self._settings(run),
        )

    def _teacher_job(self, run: Run) -> TextTrainOutcome:
        """No teacher: MiniLM (or a student of it, per the model config) + a head trained on the labels."""
        from worker.engine.text import load_minilm
        from worker.engine.text_train import train_text_classifier

        minilm, self.tokenizer = load_minilm()
        cfg = self.model_config
        self._whole = (
            cfg.layers == minilm.config.num_hidden_layers
            and cfg.hidden is None
            and cfg.heads is None
            and cfg.intermediate is None
            and cfg.init == "teacher"
        )
        encoder = minilm if self._whole else self._student(minilm)
        train, val = self.data.train, self.data.validation
        assert train.y is not None and val.y is not None and self.data.num_classes is not None
        return train_text_classifier(
            encoder,
            self.tokenizer,
            train.texts,
            [int(v) for v in train.y],
            val.texts,
            [int(v) for v in val.y],
            num_classes=max(self.data.num_classes, int(val.y.max()) + 1),
            finetune=not self._whole,
            **self._settings(run),
        )

    def _distilled(self, run: Run) -> TextTrainOutcome:
        from worker.engine.text_train import distill_text_classifier

        teacher = self._classifier_teacher()
        train, val = self.data.train, self.data.validation
        assert train.y is not None and val.y is not None
        outcome = distill_text_classifier(
            teacher,
            self._student(teacher),
            self.tokenizer,
            train.texts,
            val.texts,
            [int(v) for v in val.y],
            train_labels=[int(v) for v in train.y],
            transfer_texts=self.data.transfer.texts if self.data.transfer is not None else None,
            temperature=run.temperature,
            alpha=run.alpha,
            signals=run.signals,
            losses=self.spec.distillation.losses,  # the API lets only kd, ce and attention through
            **self._settings(run),
        )
        self._teacher_val = outcome.teacher_val
        return outcome

    def _baseline(self, run: Run) -> TextTrainOutcome:
        """The same student architecture, freshly initialised from the same seed, trained on the labels alone
        with the same settings. With ``init: "random"`` it starts from the very weights the distilled student
        started from."""
        from worker.engine.text_train import train_text_baseline

        scratch = self._student(self._classifier_teacher(), init="random")
        train, val = self.data.train, self.data.validation
        assert train.y is not None and val.y is not None
        return train_text_baseline(
            scratch,
            self.tokenizer,
            train.texts,
            [int(v) for v in train.y],
            val.texts,
            [int(v) for v in val.y],
            **self._settings(run),
        )

    # -- evaluation --------------------------------------------------------------------------------------

    def evaluate(self, student: Trained, baseline: Trained | None) -> Evaluation:
        if self.kind == "embedding":
            return self._evaluate_embedding(student)
        if self.kind == "teacher":
            return self._evaluate_teacher_job(student)
        return self._evaluate_classifier(student, baseline)

    def _evaluate_embedding(self, student: Trained) -> Evaluation:
        from worker.engine.text import encoder_of

        assert self.teacher is not None
        cosine = student.history[-1]["val_cosine"]
        compared, report = self._against_teacher(
            encoder_of(self.teacher.model),
            student.model,
            student_metrics={"val_cosine": cosine},
            teacher_metrics={},
        )
        return _evaluation(report, {"cosine_to_teacher": round(cosine, 6), **compared})

    def _evaluate_teacher_job(self, student: Trained) -> Evaluation:
        from worker.engine.text import count_text_parameters
        from worker.engine.text_inference import text_logits

        val = self.data.validation
        model = student.model
        logits = text_logits(model, self.tokenizer, val.texts, max_length=self.max_length, device=self.device)
        accuracy = float((logits.argmax(1).numpy() == val.y).mean())
        params = count_text_parameters(model)
        _, latency = self._latency(None, model)
        cfg = self.model_config
        return Evaluation(
            student={
                "test_accuracy": accuracy,
                "parameters": params,
                "cpu_latency_seconds": latency,
                "cpu_latency_ms": 1000 * latency,
            },
            teacher=None,
            sections={
                "base_encoder": "all-minilm-l6-v2"
                if self._whole
                else f"{cfg.layers}-layer student of all-minilm-l6-v2",
                "finetuned_encoder": not self._whole,
            },
            summary={"test_accuracy": round(accuracy, 6), "parameters": params},
        )

    def _evaluate_classifier(self, student: Trained, baseline: Trained | None) -> Evaluation:
        from worker.engine.text import count_text_parameters

        teacher = self._classifier_teacher()
        teacher_val = self._teacher_val
        assert teacher_val is not None
        section = None
        if baseline is not None:
            scratch_accuracy, scratch_agreement, _ = self._test_figures(
                teacher, baseline.model, baseline.history[-1], teacher_val
            )
            self.event(
                f"baseline trained: test accuracy {scratch_accuracy:.4f}",
                {"test_accuracy": scratch_accuracy, "agreement_with_teacher": scratch_agreement},
            )
            section = {
                "test_accuracy": scratch_accuracy,
                "agreement_with_teacher": scratch_agreement,
                "val_loss": baseline.history[-1]["val_loss"],
                "parameters": count_text_parameters(baseline.model),
                "init": "random",
                "epochs": len(baseline.history),
            }
        accuracy, agreement, teacher_accuracy = self._test_figures(
            teacher, student.model, student.history[-1], teacher_val
        )
        compared, report = self._against_teacher(
            teacher,
            student.model,
            student_metrics={"test_accuracy": accuracy, "agreement_with_teacher": agreement},
            teacher_metrics={"test_accuracy": teacher_accuracy},
        )
        summary = {
            "test_accuracy": round(accuracy, 6),
            "teacher_test_accuracy": round(teacher_accuracy, 6),
            "agreement_with_teacher": round(agreement, 6),
            **compared,
        }
        evaluation = _evaluation(report, summary)
        evaluation.baseline = section
        return evaluation

    def _test_figures(
        self, teacher: Any, student: Any, last: dict[str, float], teacher_val: torch.Tensor
    ) -> tuple[float, float, float]:
        """``(test accuracy, agreement with the teacher, teacher's test accuracy)`` on the test split: the
        last epoch's validation figures when the validation texts are the test texts, else measured on the
        test texts (which no "auto" trial saw)."""
        from worker.engine.text_inference import text_logits

        test, tokenizer = self.data.test, self.tokenizer
        if test is None:
            val_y = self.data.validation.y
            assert val_y is not None
            teacher_accuracy = float((teacher_val.argmax(1).numpy() == val_y).mean())
            agreement = last.get("val_agreement")
            if agreement is None:  # trained without the teacher (the baseline): compare here
                texts = self.data.validation.texts
                logits = text_logits(
                    student, tokenizer, texts, max_length=self.max_length, device=self.device
                )
                agreement = float((logits.argmax(1) == teacher_val.argmax(1)).float().mean())
            return last["val_accuracy"], agreement, teacher_accuracy
        assert test.y is not None
        length, device = self.max_length, self.device
        s = text_logits(student, tokenizer, test.texts, max_length=length, device=device).argmax(1).numpy()
        t = text_logits(teacher, tokenizer, test.texts, max_length=length, device=device).argmax(1).numpy()
        return float((s == test.y).mean()), float((s == t).mean()), float((t == test.y).mean())

    def _against_teacher(
        self,
        teacher: Any,
        student: Any,
        *,
        student_metrics: dict[str, Any],
        teacher_metrics: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """What every text job with a teacher reports alike: parameters, CPU latency, compression and
        speed-up. ``(result fields, report sections student / teacher / speedup)``, each section starting
        with the task's own metrics."""
        from worker.engine.text import count_text_parameters

        assert self.teacher is not None
        t_params, s_params = count_text_parameters(teacher), count_text_parameters(student)
        t_latency, s_latency = self._latency(teacher, student)
        speedup = t_latency / s_latency if s_latency > 0 else None
        result = {
            "parameters": s_params,
            "teacher_parameters": t_params,
            "compression_ratio": round(t_params / s_params, 3),
            "speedup": round(speedup, 3) if speedup is not None else None,
        }
        report = {
            "student": {
                **student_metrics,
                "parameters": s_params,
                "cpu_latency_seconds": s_latency,
                "cpu_latency_ms": 1000 * s_latency,
            },
            "teacher": {
                "source": self.teacher.field,
                "name": self.teacher.name,
                **teacher_metrics,
                "parameters": t_params,
                "cpu_latency_seconds": t_latency,
                "cpu_latency_ms": 1000 * t_latency,
            },
            "speedup": speedup,
        }
        return result, report

    def _latency(self, teacher: Any, student: Any) -> tuple[float, float]:
        """Median CPU seconds of one forward pass over one text, batch 1 as in every job's
        ``cpu_latency_ms`` (teacher's, student's; 0.0 without one)."""
        from worker.engine.text_inference import measure_latency

        texts, tokenizer = self.data.validation.texts, self.tokenizer
        kwargs = {"batch_size": 1, "max_length": self.max_length, "repeats": 9, "warmup": 2}
        t = measure_latency(teacher, tokenizer, texts, **kwargs) if teacher is not None else 0.0
        s = measure_latency(student, tokenizer, texts, **kwargs)
        return t, s

    def summary(self, report: Mapping[str, Any], evaluation: Evaluation) -> dict[str, Any]:
        """The task's own figures, then a baseline's and the chosen hyperparameters as in tabular jobs."""
        summary = dict(evaluation.summary or {})
        for key, value in render_summary(report).items():
            if key in BASELINE_RESULT_KEYS or key.startswith("chosen_"):
                summary[key] = value
        cache = report.get("teacher_cache")
        if cache is not None:
            summary["teacher_cache_hit"] = cache["hit"]
        return summary

    # -- artifacts ---------------------------------------------------------------------------------------

    def _described(self) -> dict[str, Any]:
        teacher_name = self.teacher.name if self.teacher is not None else None
        return {
            "max_length": self.max_length,
            "classes": None,
            "teacher": teacher_name if teacher_name is not None else "all-minilm-l6-v2",
            "extra": {"job_id": self.job_id},
        }

    def save(self, student: Trained) -> bytes:
        from worker.engine.text import save_text_model

        return save_text_model(student.model, self.tokenizer, **self._described())

    def model_artifact(self, student: Trained, evaluation: Evaluation) -> tuple[str, str, bytes]:
        """A transformers student (an HF teacher's, or ``model.format: "hf"``) as
        :data:`~distill.hfarchive.HF_ARCHIVE_ARTIFACT` (``save_pretrained`` + tokenizer + a model card);
        its ``HFModelInfo`` (what an upload of the archive records) becomes ``result.hf_model``, so it can
        teach a later job. Other students: ``model.safetensors``."""
        if not _is_hf(student.model):
            return super().model_artifact(student, evaluation)
        import tempfile
        from pathlib import Path

        from distill.hfarchive import HF_ARCHIVE_ARTIFACT, model_card, pack_folder
        from worker.engine.hf import save_folder

        assert self.teacher is not None
        cfg = student.model.model.config
        result = evaluation.summary or {}
        figures = {
            "test accuracy": result.get("test_accuracy"),
            "teacher's test accuracy": result.get("teacher_test_accuracy"),
            "agreement with the teacher": result.get("agreement_with_teacher"),
            "parameters": result.get("parameters"),
            "teacher's parameters": result.get("teacher_parameters"),
            "CPU speed-up over the teacher (batch 1)": result.get("speedup"),
        }
        d, t = self.spec.distillation, self.spec.training
        method = (
            ", ".join(loss.type for loss in d.losses)
            if d.losses
            else f"soft targets at temperature {d.temperature} with alpha {d.alpha} "
            "(the rest cross-entropy on the labels)"
        )
        card = model_card(
            title=self.spec.name or f"Distilled text classifier ({self.job_id})",
            base={
                "pipeline_tag": "text-classification",
                "job": self.job_id,
                "student": {
                    "architecture": "BertForSequenceClassification",
                    "layers": cfg.num_hidden_layers,
                    "hidden size": cfg.hidden_size,
                    "max tokens per text": self.max_length,
                },
                "teacher": {
                    "source": f"{self.teacher.field} {self.teacher.name}",
                    "architecture": self.teacher.hf.architecture if self.teacher.hf else None,
                },
                "data": self.data.summary(1),
                "method": f"Knowledge distillation on the teacher's logits: {method}; {t.epochs} epochs, "
                f"learning rate {t.learning_rate}.",
                "figures": figures,
                "labels": [str(cfg.id2label.get(i, i)) for i in range(cfg.num_labels)],
                "usage": (
                    "from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast\n"
                    "model = AutoModelForSequenceClassification.from_pretrained('student')\n"
                    "tokenizer = PreTrainedTokenizerFast.from_pretrained('student')"
                ),
            },
        )
        with tempfile.TemporaryDirectory(prefix="distill-hf-save-") as tmp:
            info = save_folder(student.model.model, self.tokenizer, Path(tmp), card=card)
            blob = pack_folder(Path(tmp))
        self._hf_meta = info.to_meta()
        return HF_ARCHIVE_ARTIFACT, "hf", blob

    def export(self, fmt: str, student: Trained) -> tuple[str, dict[str, Any], bytes | None]:
        """Export the student to ``fmt`` and check it against PyTorch on the held-out texts; a failure is
        reported (event and report entry), and the job goes on without that file."""
        from worker.engine.export import ExportError
        from worker.engine.report import describe_export
        from worker.engine.text import text_model_metadata
        from worker.engine.text_export import TEXT_EXPORTERS

        if _is_hf(student.model):  # the API refuses this; a stored spec from elsewhere gets the reason
            name = TEXT_EXPORTERS[fmt][0]
            error = "a Hugging Face student is stored as model.hf.zip only; export is not supported"
            self.event(f"export to {fmt} skipped: {error}", {"format": fmt})
            return name, {"file": name, "error": error}, None
        model, tokenizer = student.model, self.tokenizer
        metadata = text_model_metadata(model, tokenizer, **self._described())
        name, export, check = TEXT_EXPORTERS[fmt]
        try:
            blob = export(model, tokenizer, max_length=self.max_length, metadata=metadata)
            checked = check(blob, model, tokenizer, self.data.validation.texts, max_length=self.max_length)
        except ExportError as exc:
            self.event(f"export to {fmt} failed: {exc}", {"format": fmt})
            return name, {"file": name, "error": str(exc)}, None
        if "top1_agreement" in checked:
            how = (
                f"top class equal on {checked['top1_agreement']:.2%} of test texts, "
                f"max logit difference {checked['max_abs_logit_diff']:.2e}"
            )
        else:
            how = (
                f"min cosine to PyTorch {checked['min_cosine']:.6f} on test texts, "
                f"max difference {checked['max_abs_diff']:.2e}"
            )
        self.event(f"exported {name}: {how}", {"format": fmt, **checked})
        return name, describe_export(name, blob, checked), blob

    def describe_model(self, student: Trained) -> dict[str, Any]:
        from worker.engine.text import encoder_of

        if self._hf_meta is not None:
            return {"hf_model": self._hf_meta}

        encoder = encoder_of(student.model)
        return {
            "text_model": {
                "kind": "text",
                "task": self.spec.task,
                "num_classes": self.data.num_classes if self.spec.task == "classification" else None,
                "classes": None,
                "has_tokenizer": True,
                "max_length": self.max_length,
                "hidden_size": int(encoder.config.hidden_size),
                "layers": int(encoder.config.num_hidden_layers),
            }
        }


def _is_hf(model: Any) -> bool:
    """Whether ``model`` is a transformers sequence classifier (``worker.engine.hf.HFTextClassifier``)."""
    from worker.engine.hf import HFTextClassifier

    return isinstance(model, HFTextClassifier)


def _evaluation(report: dict[str, Any], summary: dict[str, Any]) -> Evaluation:
    """An :class:`Evaluation` from ``_against_teacher``'s sections."""
    sections = dict(report)
    return Evaluation(
        student=sections.pop("student"), teacher=sections.pop("teacher"), sections=sections, summary=summary
    )
