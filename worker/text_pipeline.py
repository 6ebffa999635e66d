"""A text job's training: an encoder student distilled from a text teacher (MiniLM or a text model), or a
classifier teacher job, through the same teacher-output cache, callbacks and report as tabular jobs.

Over 500 lines: it holds the three kinds of text job (embedding, classifier teacher, distilled classifier
with its baseline and "auto" trials), their exports and their share of the teacher-output cache, which
all build one report; the next step of issue 7 folds what it shares with :mod:`worker.pipeline` into one
pipeline over a modality."""

from __future__ import annotations

import hashlib
import logging
import platform
import time
from typing import TYPE_CHECKING, Any, Literal

import torch

from distill.results import JobResult, Report
from distill.spec import EncoderConfig
from worker.engine.train import TrainingDiverged
from worker.failures import JobFailure
from worker.inputs import LoadedTextData, LoadedTextTeacher
from worker.pipeline import (
    BASELINE_LABEL,
    STUDENT_LABEL,
    BasePipeline,
    JobContext,
    PipelineOutcome,
    json_bytes,
)
from worker.teacher_cache import cache_digest

if TYPE_CHECKING:
    from worker.engine.text_train import TextTrainOutcome

log = logging.getLogger(__name__)


BASELINE_RESULT_KEYS = ("baseline_test_accuracy", "gain_over_baseline", "gap_recovered")
"""The flat ``result`` keys of a baseline, named as in tabular jobs (:func:`render_summary`)."""


def texts_digest(texts: list[str], max_length: int) -> str:
    """sha256 of the texts in order and the truncation length: the text half of a teacher-cache key."""
    digest = hashlib.sha256(f"texts/1 max_length={max_length} n={len(texts)}\n".encode())
    for text in texts:
        encoded = text.encode()
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    return digest.hexdigest()


class TextPipeline(BasePipeline):
    """A text job: an encoder student distilled from a text teacher (or, without one, a classifier teacher
    job: MiniLM + a linear head on the labels), evaluated on held-out texts and saved as a text model.

    Teacher outputs (un-normalised embeddings, or logits) go through the same :class:`TeacherCache`, keyed on
    the teacher's sha256 (or builtin name) and the digest of the texts.
    """

    def __init__(
        self, context: JobContext, *, data: LoadedTextData, teacher: LoadedTextTeacher | None
    ) -> None:
        super().__init__(context)
        if not isinstance(self.spec.model, EncoderConfig):
            raise TypeError("a text pipeline needs an encoder model config")
        self.model_config: EncoderConfig = self.spec.model
        self.data = data
        self.teacher = teacher
        self.max_length = self.spec.model.max_length

    def run(self, started: float) -> PipelineOutcome:
        from worker.engine.report import build_report, describe_export, render_summary
        from worker.engine.text import save_text_model, text_model_metadata

        torch.manual_seed(self.spec.training.seed)
        try:
            if self.spec.task == "embedding":
                outcome, student, tokenizer, metrics, cache_info = self._embedding()
            elif self.teacher is None:
                outcome, student, tokenizer, metrics, cache_info = self._teacher_job()
            else:
                outcome, student, tokenizer, metrics, cache_info = self._classifier()
        except TrainingDiverged as exc:
            raise JobFailure("training_diverged", str(exc)) from exc
        except ValueError as exc:
            raise JobFailure("invalid_spec", f"model: {exc}") from exc
        if outcome is None:
            return PipelineOutcome(stopped=True)
        teacher_name = self.teacher.name if self.teacher is not None else None
        described: dict[str, Any] = {
            "max_length": self.max_length,
            "classes": None,
            "teacher": teacher_name if teacher_name is not None else "all-minilm-l6-v2",
            "extra": {"job_id": self.job_id},
        }
        stored: dict[str, Any]
        if _is_hf(student):
            name, blob, hf_meta = self._hf_archive(student, tokenizer, metrics)
            artifacts = {name: blob}
            exports = {"hf": describe_export(name, blob)}
            stored = {"hf_model": hf_meta}
        else:
            blob = save_text_model(student, tokenizer, **described)
            stored = {
                "text_model": {
                    "kind": "text",
                    "task": self.spec.task,
                    "num_classes": self.data.num_classes if self.spec.task == "classification" else None,
                    "classes": None,
                    "has_tokenizer": True,
                    "max_length": self.max_length,
                    "hidden_size": int(_encoder(student).config.hidden_size),
                    "layers": int(_encoder(student).config.num_hidden_layers),
                }
            }
            artifacts = {"model.safetensors": blob}
            exports = {"safetensors": describe_export("model.safetensors", blob)}
        if self.spec.export and not _is_hf(student):
            metadata = text_model_metadata(student, tokenizer, **described)
            for fmt in self.spec.export:
                name, entry, exported = self._export(fmt, student, tokenizer, metadata)
                exports[fmt] = entry
                if exported is not None:
                    artifacts[name] = exported
        sections = dict(metrics["report"])
        # The same sections as a tabular job's report (student, teacher, baseline, comparison, exports,
        # teacher_cache), then what only text jobs say (speedup, base_encoder...).
        report: dict[str, Any] = build_report(
            student=sections.pop("student"),
            teacher=sections.pop("teacher"),
            baseline=metrics.get("baseline"),
            exports=exports,
            cache=cache_info,
            chosen=metrics.get("chosen"),
        )
        report |= sections
        baseline_history = metrics.get("baseline_history")
        if baseline_history is not None:
            report["baseline_history"] = baseline_history
        runs = {STUDENT_LABEL if self.teacher is not None else "model": outcome.history}
        if baseline_history is not None:
            runs[BASELINE_LABEL] = baseline_history
        teacher_section = report.get("teacher") or {}
        artifacts |= self.curves(runs, teacher=teacher_section.get("test_accuracy"))
        report |= {
            "job_id": self.job_id,
            "name": self.spec.name,
            "kind": "text",
            "task": self.spec.task,
            "spec": self.spec.model_dump(mode="json"),
            "data": self.data.summary(0 if self.teacher is None else 1),
            "history": outcome.history,
            "environment": {
                "device": str(self.device),
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "duration_seconds": round(time.monotonic() - started, 3),
        }
        summary = dict(metrics["result"])
        flat = render_summary(report)
        for key, value in flat.items():
            if key in BASELINE_RESULT_KEYS or key.startswith("chosen_"):
                summary[key] = value
        if cache_info is not None:
            summary["teacher_cache_hit"] = cache_info["hit"]
        result = JobResult.model_validate({**summary, **stored}).to_json()
        report = Report.model_validate(report).to_json()
        artifacts["report.json"] = json_bytes(report)
        return PipelineOutcome(stopped=False, result=result, summary=summary, artifacts=artifacts)

    # -- the three kinds of text job --------------------------------------------------------------------

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

    def _embedding(self) -> tuple[Any, Any, Any, dict[str, Any], dict[str, Any] | None]:
        from worker.engine.text import encoder_of
        from worker.engine.text_train import distill_embeddings

        assert self.teacher is not None
        teacher = encoder_of(self.teacher.model)
        tokenizer = self.teacher.tokenizer
        # Transfer texts are simply more texts to match: they join the train texts.
        train, val = self._pool(), self.data.validation.texts
        cached, cache_info = self._cached_outputs("text_embedding", train, val)
        student = self._student(teacher)
        t = self.spec.training
        outcome = distill_embeddings(
            teacher,
            student,
            tokenizer,
            train,
            val,
            epochs=t.epochs,
            batch_size=t.batch_size,
            lr=t.learning_rate,
            seed=t.seed,
            max_length=self.max_length,
            weight_decay=t.weight_decay,
            teacher_train=cached[0] if cached else None,
            teacher_val=cached[1] if cached else None,
            device=self.device,
            callbacks=self.progress,
            **self.hooks,
        )
        if outcome.stopped:
            return None, None, None, {}, None
        self._store_outputs(cache_info, outcome.teacher_train, outcome.teacher_val)
        cosine = outcome.history[-1]["val_cosine"]
        compared, report = self._against_teacher(
            teacher, student, tokenizer, student_metrics={"val_cosine": cosine}, teacher_metrics={}
        )
        result = {"cosine_to_teacher": round(cosine, 6), **compared}
        return outcome, student, tokenizer, {"result": result, "report": report}, cache_info

    def _teacher_job(self) -> tuple[Any, Any, Any, dict[str, Any], dict[str, Any] | None]:
        """No teacher: MiniLM (or a student of it, per the model config) + a head trained on the labels."""
        from worker.engine.text import count_text_parameters, load_minilm
        from worker.engine.text_inference import text_logits
        from worker.engine.text_train import train_text_classifier

        minilm, tokenizer = load_minilm()
        cfg = self.model_config
        whole = (
            cfg.layers == minilm.config.num_hidden_layers
            and cfg.hidden is None
            and cfg.heads is None
            and cfg.intermediate is None
            and cfg.init == "teacher"
        )
        encoder = minilm if whole else self._student(minilm)
        train, val = self.data.train, self.data.validation
        assert train.y is not None and val.y is not None and self.data.num_classes is not None
        t = self.spec.training
        outcome = train_text_classifier(
            encoder,
            tokenizer,
            train.texts,
            [int(v) for v in train.y],
            val.texts,
            [int(v) for v in val.y],
            num_classes=max(self.data.num_classes, int(val.y.max()) + 1),
            epochs=t.epochs,
            batch_size=t.batch_size,
            lr=t.learning_rate,
            seed=t.seed,
            max_length=self.max_length,
            finetune=not whole,
            weight_decay=t.weight_decay,
            device=self.device,
            callbacks=self.progress,
            **self.hooks,
        )
        if outcome.stopped:
            return None, None, None, {}, None
        model: Any = outcome.model
        logits = text_logits(model, tokenizer, val.texts, max_length=self.max_length, device=self.device)
        accuracy = float((logits.argmax(1).numpy() == val.y).mean())
        params = count_text_parameters(model)
        _, latency = self._latency(None, model, tokenizer)
        result = {"test_accuracy": round(accuracy, 6), "parameters": params}
        report = {
            "student": {
                "test_accuracy": accuracy,
                "parameters": params,
                "cpu_latency_seconds": latency,
                "cpu_latency_ms": 1000 * latency,
            },
            "teacher": None,
            "base_encoder": "all-minilm-l6-v2"
            if whole
            else f"{cfg.layers}-layer student of all-minilm-l6-v2",
            "finetuned_encoder": not whole,
        }
        return outcome, model, tokenizer, {"result": result, "report": report}, None

    def _classifier(self) -> tuple[Any, Any, Any, dict[str, Any], dict[str, Any] | None]:
        from worker.engine.text import TextClassifier
        from worker.engine.text_inference import text_logits
        from worker.engine.text_train import distill_text_classifier

        assert self.teacher is not None
        teacher = self.teacher.model
        if not isinstance(teacher, TextClassifier):
            raise JobFailure(
                "incompatible_teacher",
                f"{self.teacher.field}: a classification student needs a text classifier",
            )
        tokenizer = self.teacher.tokenizer
        train, val = self.data.train, self.data.validation
        assert train.y is not None and val.y is not None
        if int(val.y.max()) >= teacher.num_classes or int(train.y.max()) >= teacher.num_classes:
            raise JobFailure(
                "incompatible_teacher",
                f"{self.teacher.field}: the teacher has {teacher.num_classes} classes; the data has more",
            )
        train_labels, val_labels = [int(v) for v in train.y], [int(v) for v in val.y]
        pool = self._pool()
        cached, cache_info = self._cached_outputs("text_logits", pool, None)
        teacher_logits = cached[0] if cached else None
        d, t = self.spec.distillation, self.spec.training
        losses = d.losses  # the API lets only kd, ce and attention through for text jobs

        def distill(
            temperature: float,
            alpha: float,
            epochs: int,
            callbacks: Any,
            logits: torch.Tensor | None,
            hooks: dict[str, Any] | None = None,
        ) -> tuple[Any, TextTrainOutcome]:
            torch.manual_seed(t.seed)  # every run (trials too) starts from the same student
            student = self._student(teacher)
            return student, distill_text_classifier(
                teacher,
                student,
                tokenizer,
                train.texts,
                val.texts,
                val_labels,
                train_labels=train_labels,
                transfer_texts=self.data.transfer.texts if self.data.transfer is not None else None,
                temperature=temperature,
                alpha=alpha,
                epochs=epochs,
                batch_size=t.batch_size,
                lr=t.learning_rate,
                seed=t.seed,
                max_length=self.max_length,
                weight_decay=t.weight_decay,
                teacher_logits=logits,
                losses=losses,
                device=self.device,
                callbacks=callbacks,
                **(hooks or {}),
            )

        chosen = None
        temperature = d.temperature if isinstance(d.temperature, float) else 4.0
        alpha = d.alpha if isinstance(d.alpha, float) else 0.9
        if d.uses_auto:
            if teacher_logits is None:  # once, for every trial and the final run
                teacher_logits = text_logits(
                    teacher, tokenizer, pool, max_length=self.max_length, device=self.device
                )
            choice = self.choose_auto(
                lambda tt, a, epochs: distill(tt, a, epochs, self.quiet, teacher_logits)[1]
            )
            if choice is None:
                return None, None, None, {}, None
            temperature, alpha, chosen = choice.temperature, choice.alpha, choice.to_dict()
        student, outcome = distill(temperature, alpha, t.epochs, self.progress, teacher_logits, self.hooks)
        if outcome.stopped:
            return None, None, None, {}, None
        self._store_outputs(cache_info, outcome.teacher_train, None)
        baseline, baseline_history = None, None
        if self.spec.baseline:
            assert outcome.teacher_val is not None
            trained = self._baseline(teacher, tokenizer, outcome.teacher_val)
            if trained is None:
                return None, None, None, {}, None
            baseline, baseline_history = trained
        assert outcome.teacher_val is not None
        accuracy, agreement, teacher_accuracy = self._test_figures(
            teacher, student, tokenizer, outcome.history[-1], outcome.teacher_val
        )
        compared, report = self._against_teacher(
            teacher,
            student,
            tokenizer,
            student_metrics={"test_accuracy": accuracy, "agreement_with_teacher": agreement},
            teacher_metrics={"test_accuracy": teacher_accuracy},
        )
        result = {
            "test_accuracy": round(accuracy, 6),
            "teacher_test_accuracy": round(teacher_accuracy, 6),
            "agreement_with_teacher": round(agreement, 6),
            **compared,
        }
        metrics = {
            "result": result,
            "report": report,
            "baseline": baseline,
            "baseline_history": baseline_history,
            "chosen": chosen,
        }
        return outcome, student, tokenizer, metrics, cache_info

    def _baseline(
        self, teacher: Any, tokenizer: Any, teacher_val: torch.Tensor
    ) -> tuple[dict[str, Any], list[dict[str, float]]] | None:
        """The same student architecture, freshly initialised from the same seed, trained on the labels alone
        with the same settings: its report section and its per-epoch history (None: cancelled). With
        ``init: "random"`` it starts from the very weights the distilled student started from."""
        from worker.engine.text import count_text_parameters
        from worker.engine.text_train import train_text_baseline

        self.event("training the baseline: the same student from scratch, on labels only", {})
        t = self.spec.training
        torch.manual_seed(t.seed)
        scratch = self._student(teacher, init="random")
        train, val = self.data.train, self.data.validation
        assert train.y is not None and val.y is not None
        outcome = train_text_baseline(
            scratch,
            tokenizer,
            train.texts,
            [int(v) for v in train.y],
            val.texts,
            [int(v) for v in val.y],
            epochs=t.epochs,
            batch_size=t.batch_size,
            lr=t.learning_rate,
            seed=t.seed,
            max_length=self.max_length,
            weight_decay=t.weight_decay,
            device=self.device,
            callbacks=self.quiet,
        )
        if outcome.stopped:
            return None
        accuracy, agreement, _ = self._test_figures(
            teacher, scratch, tokenizer, outcome.history[-1], teacher_val
        )
        last = outcome.history[-1]
        self.event(
            f"baseline trained: test accuracy {accuracy:.4f}",
            {"test_accuracy": accuracy, "agreement_with_teacher": agreement},
        )
        section = {
            "test_accuracy": accuracy,
            "agreement_with_teacher": agreement,
            "val_loss": last["val_loss"],
            "parameters": count_text_parameters(scratch),
            "init": "random",
            "epochs": len(outcome.history),
        }
        return section, outcome.history

    def _test_figures(
        self, teacher: Any, student: Any, tokenizer: Any, last: dict[str, float], teacher_val: torch.Tensor
    ) -> tuple[float, float, float]:
        """``(test accuracy, agreement with the teacher, teacher's test accuracy)`` on the test split: the
        last epoch's validation figures when the validation texts are the test texts, else measured on the
        test texts (which no "auto" trial saw)."""
        from worker.engine.text_inference import text_logits

        test = self.data.test
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

    # -- the student as a Hugging Face archive ------------------------------------------------------------

    def _hf_archive(self, student: Any, tokenizer: Any, metrics: dict[str, Any]) -> tuple[str, bytes, Any]:
        """The student as :data:`~distill.hfarchive.HF_ARCHIVE_ARTIFACT` (``save_pretrained`` + tokenizer +
        a model card), and its ``HFModelInfo`` metadata (``result.hf_model``): what an upload of the same
        archive would record, so it can teach a later job."""
        import tempfile
        from pathlib import Path

        from distill.hfarchive import HF_ARCHIVE_ARTIFACT, model_card, pack_folder
        from worker.engine.hf import save_folder

        assert self.teacher is not None
        cfg = student.model.config
        result = metrics.get("result", {})
        figures = {
            "test accuracy": result.get("test_accuracy"),
            "teacher's test accuracy": result.get("teacher_test_accuracy"),
            "agreement with the teacher": result.get("agreement_with_teacher"),
            "parameters": result.get("parameters"),
            "teacher's parameters": result.get("teacher_parameters"),
            "CPU speed-up over the teacher (batch 1)": result.get("speedup"),
        }
        d, t = self.spec.distillation, self.spec.training
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
                "method": (
                    "Knowledge distillation on the teacher's logits: "
                    + (
                        ", ".join(loss.type for loss in d.losses)
                        if d.losses
                        else f"soft targets at temperature {d.temperature} with alpha {d.alpha} "
                        "(the rest cross-entropy on the labels)"
                    )
                    + f"; {t.epochs} epochs, learning rate {t.learning_rate}."
                ),
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
            info = save_folder(student.model, tokenizer, Path(tmp), card=card)
            blob = pack_folder(Path(tmp))
        return HF_ARCHIVE_ARTIFACT, blob, info.to_meta()

    # -- exports ------------------------------------------------------------------------------------------

    def _export(
        self, fmt: str, model: Any, tokenizer: Any, metadata: dict[str, str]
    ) -> tuple[str, dict[str, Any], bytes | None]:
        """Export the student to ``fmt`` and check it against PyTorch on the held-out texts; a failure is
        reported (event and report entry), and the job goes on without that file."""
        from worker.engine.export import ExportError
        from worker.engine.report import describe_export
        from worker.engine.text_export import TEXT_EXPORTERS

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

    # -- teacher outputs: the same cache as tabular jobs ------------------------------------------------

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

    def _cached_outputs(
        self, capture: str, train: list[str], val: list[str] | None
    ) -> tuple[tuple[torch.Tensor, torch.Tensor | None] | None, dict[str, Any]]:
        """Cached teacher outputs for ``train`` (the whole pool: train then transfer texts) and ``val``.

        The key covers every text in order (transfer texts included), the truncation length and where the
        pool ends, so different transfer sets never share an entry."""
        import safetensors.torch

        assert self.teacher is not None
        texts = train + (val or [])
        digest = cache_digest(
            teacher_sha256=[self.teacher.key],
            inputs_sha256=texts_digest(texts, self.max_length) + f":{len(train)}",
            capture=[capture],
            top_k=None,
        )
        info: dict[str, Any] = {"key": digest, "examples": len(texts), "captured": [capture]}
        if self.data.transfer is not None:
            info["transfer_examples"] = len(self.data.transfer)
        blob = self.cache.get(digest)
        if blob is not None:
            try:
                tensors = safetensors.torch.load(blob)
                cached = (tensors["train"], tensors.get("val"))
            except Exception:  # a damaged entry is recomputed
                log.warning("teacher cache entry %s unreadable; recomputing", digest)
            else:
                self.event("teacher outputs reused from the cache: the teacher did not run", info)
                return cached, {**info, "hit": True}
        return None, {**info, "hit": False}

    def _store_outputs(
        self, info: dict[str, Any] | None, train: torch.Tensor | None, val: torch.Tensor | None
    ) -> None:
        import safetensors.torch

        if info is None or info.get("hit") or train is None:
            return
        tensors = {"train": train.contiguous()}
        if val is not None:
            tensors["val"] = val.contiguous()
        self.cache.put(info["key"], safetensors.torch.save(tensors))
        self.event("teacher outputs computed once and cached", info)

    def _against_teacher(
        self,
        teacher: Any,
        student: Any,
        tokenizer: Any,
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
        t_latency, s_latency = self._latency(teacher, student, tokenizer)
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

    def _latency(self, teacher: Any, student: Any, tokenizer: Any) -> tuple[float, float]:
        """Median CPU seconds of one forward pass over one text, batch 1 as in every job's
        ``cpu_latency_ms`` (teacher's, student's; 0.0 without one)."""
        from worker.engine.text_inference import measure_latency

        texts = self.data.validation.texts
        kwargs = {"batch_size": 1, "max_length": self.max_length, "repeats": 9, "warmup": 2}
        t = measure_latency(teacher, tokenizer, texts, **kwargs) if teacher is not None else 0.0
        s = measure_latency(student, tokenizer, texts, **kwargs)
        return t, s


def _is_hf(model: Any) -> bool:
    """Whether ``model`` is a transformers sequence classifier (``worker.engine.hf.HFTextClassifier``)."""
    from worker.engine.hf import HFTextClassifier

    return isinstance(model, HFTextClassifier)


def _encoder(model: Any) -> Any:
    from worker.engine.text import encoder_of

    return encoder_of(model)
