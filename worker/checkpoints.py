"""A running job's checkpoints: the training loop's :class:`LoopState` written to the object store, and read
back when another worker takes the job over.

Format: ``torch.save`` of a plain dict (tensors, numbers, strings, lists and dicts only), read back with
``torch.load(weights_only=True)``, whose unpickler refuses anything else (no classes, no functions: a
crafted object cannot run code). Checkpoints are written and read only by our own workers, never uploaded
by users, and the optimizer and scheduler states are nested structures of tensors and numbers whose shape
depends on the optimizer: ``weights_only`` keeps them as they are, where safetensors would need our own
encoding of every nesting (and JSON beside it) for no gain in safety. All tensors are saved on the CPU.

Keys: ``tenants/{tenant}/jobs/{job}/checkpoints/step-{step}-epoch-{epoch}`` (zero-padded, so the newest
sorts last), ``epoch`` counting the epochs finished. The runner records the newest key on the job row
(``last_checkpoint_key``) through a transition fenced by its lease, then deletes the one before; a worker
that lost its lease records nothing. When the job ends, its checkpoints are deleted unless the spec says
``training.keep_checkpoints``.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import torch

from distill.storage import ObjectStore, checkpoint_key
from worker.engine.loop import LoopState
from worker.lease import JobLease

log = logging.getLogger(__name__)

FORMAT = 1


class UnreadableCheckpoint(ValueError):
    """The object is missing, truncated, of another format, or not a checkpoint at all."""


def key_of(tenant_id: str, job_id: str, state: LoopState) -> str:
    """Where the checkpoint of ``state`` goes: named by its step and its finished epochs."""
    return checkpoint_key(tenant_id, job_id, state.step, finished_epochs(state))


def finished_epochs(state: LoopState) -> int:
    """Epochs finished at ``state`` (``state.epoch`` is the epoch in progress, 1-based)."""
    return state.epoch - 1


def _cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_cpu(v) for v in value)
    return value


def encode(state: LoopState) -> bytes:
    """The bytes of a checkpoint (see the module docstring for the format)."""
    payload = {
        "format": FORMAT,
        "epoch": state.epoch,
        "position": state.position,
        "step": state.step,
        "model": _cpu(state.model),
        "optimizer": _cpu(state.optimizer),
        "scheduler": _cpu(state.scheduler),
        "shuffle": state.shuffle.cpu(),
        "rng": state.rng.cpu(),
        "totals": state.totals.cpu(),
        "history": [dict(h) for h in state.history],
        "extra": _cpu(state.extra),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def decode(blob: bytes) -> LoopState:
    """A :class:`LoopState` from :func:`encode`'s bytes, or :class:`UnreadableCheckpoint`."""
    try:
        payload = torch.load(io.BytesIO(blob), weights_only=True, map_location="cpu")
    except Exception as error:
        raise UnreadableCheckpoint(f"{type(error).__name__}: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UnreadableCheckpoint(f"not a checkpoint of format {FORMAT}")
    try:
        state = LoopState(
            epoch=int(payload["epoch"]),
            position=int(payload["position"]),
            step=int(payload["step"]),
            model=dict(payload["model"]),
            optimizer=dict(payload["optimizer"]),
            scheduler=None if payload["scheduler"] is None else dict(payload["scheduler"]),
            shuffle=payload["shuffle"],
            rng=payload["rng"],
            totals=payload["totals"],
            history=[dict(h) for h in payload["history"]],
            extra=dict(payload["extra"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise UnreadableCheckpoint(
            f"a field is missing or malformed: {type(error).__name__}: {error}"
        ) from error
    for name in ("shuffle", "rng", "totals"):
        if not isinstance(getattr(state, name), torch.Tensor):
            raise UnreadableCheckpoint(f"{name} is not a tensor")
    return state


class Checkpointer:
    """The ``checkpoint`` hook of the student's training: write the state's object (whole: the store's
    writes are atomic), record its key on the job under the lease (a worker that lost its lease raises
    ``LeaseLost`` here and records nothing), then delete the previous checkpoint. A write the store refuses
    skips that checkpoint (an event says so once): a checkpoint is never worth the job."""

    def __init__(
        self,
        store: ObjectStore,
        lease: JobLease,
        *,
        tenant_id: str,
        job_id: str,
        previous: str | None = None,
    ) -> None:
        self.store = store
        self.lease = lease
        self.tenant_id = tenant_id
        self.job_id = job_id
        self.previous = previous
        """The key recorded on the job now (deleted once a newer one is recorded)."""
        self.saved = 0
        self._told = False

    def __call__(self, state: LoopState) -> None:
        key = key_of(self.tenant_id, self.job_id, state)
        try:
            self.store.put_bytes(key, encode(state))
        except Exception as error:
            detail = f"{type(error).__name__}: {error}"
            log.warning("job %s: checkpoint at step %d not written (%s)", self.job_id, state.step, detail)
            if not self._told:
                self._told = True
                self.lease.write(
                    event=(
                        f"checkpoint at step {state.step} could not be written; training goes on",
                        {"step": state.step, "error": detail},
                    ),
                    level="warning",
                )
            return
        self.lease.write(checkpoint=key)
        self.saved += 1
        if self.previous is not None and self.previous != key:
            try:
                self.store.delete(self.previous)
            except Exception as error:  # a leftover is deleted with the others when the job ends
                log.warning("job %s: could not delete checkpoint %s: %s", self.job_id, self.previous, error)
        self.previous = key


@dataclass(frozen=True)
class Resumed:
    state: LoopState | None
    """None: start from the beginning."""
    message: str
    level: str
    data: dict[str, Any]


def resume_from(store: ObjectStore, key: str, attempt: int) -> Resumed:
    """Read the checkpoint ``key`` for attempt ``attempt``: the state and the event that says so, or, when
    it cannot be read, no state and an event saying the job starts again from the beginning."""
    try:
        state = decode(store.get_bytes(key))
    except Exception as error:
        detail = f"{type(error).__name__}: {error}"
        log.warning("checkpoint %s unreadable (%s): restarting from the beginning", key, detail)
        return Resumed(
            None,
            f"checkpoint {key.rsplit('/', 1)[-1]} could not be read ({detail}); restarting from the "
            f"beginning (attempt {attempt})",
            "warning",
            {"key": key, "error": detail, "attempt": attempt},
        )
    epoch = finished_epochs(state)
    return Resumed(
        state,
        f"resumed from checkpoint at epoch {epoch} step {state.step} (attempt {attempt})",
        "info",
        {"key": key, "epoch": epoch, "step": state.step, "attempt": attempt},
    )
