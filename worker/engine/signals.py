"""Teacher signals: the one seam between running the teachers and training on what they said.

:func:`compute_signals` runs every teacher once over the training pool (eval mode, no grad) and keeps, in
pool order, each teacher's logits, the normalised teacher weights and any captured teacher layers.
:meth:`TeacherSignals.to_bytes` / :meth:`TeacherSignals.from_bytes` store and restore exactly that
(safetensors, no pickle), so training from a cache and training from live teachers see the same numbers
and produce the same student.

Many classes (more than :data:`TOPK_THRESHOLD`): each teacher's logits are stored as its top
:data:`TOPK` logits, their class indices and the probability mass of the other classes at ``T = 1`` (the
"tail"). :meth:`TeacherBatch.probs` then rebuilds a full distribution at temperature ``T`` by treating
the tail classes as equally likely at ``T = 1``: each gets log-probability ``log(tail / (C - k))``, and
all log-probabilities are divided by ``T`` and renormalised. So the top-k classes get the exact softmax
of their stored logits at ``T`` (scaled to ``1 - tail_T``) and the tail mass ``tail_T`` is spread
uniformly over the other classes. At ``T = 1`` the top-k probabilities and the tail mass are exact; at
other temperatures the tail mass is that of a uniform tail (by Jensen's inequality, a lower bound of the
true tail mass for ``T > 1``).

Sequences (causal LMs): ``offsets`` makes the rows tokens, not examples: example ``i``'s rows are
``offsets[i]:offsets[i + 1]`` (its completion positions), stored top-k in the dtypes given (float16 values,
int32 indices: ``6 k + 4`` bytes a token). See :mod:`worker.engine.lm_cache`.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import safetensors.torch
import torch
from torch import nn

from worker.engine.evaluate import autocast, eval_mode
from worker.engine.features import ATTENTIONS, FeatureCapture

TOPK_THRESHOLD = 100
"""More classes than this: teachers' logits are stored as top-k (see the module doc)."""
TOPK = 32
FORMAT = "distill.teacher_signals/1"


@dataclass
class TeacherBatch:
    """The teachers' signals for one batch: ``[teachers, batch, ...]`` tensors, features ``[batch, ...]``."""

    num_classes: int
    weights: torch.Tensor
    """``[teachers]``, summing to 1."""
    full_logits: torch.Tensor | None = None
    topk_values: torch.Tensor | None = None
    topk_indices: torch.Tensor | None = None
    tail_mass: torch.Tensor | None = None
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    mixed: dict[float, torch.Tensor] = field(default_factory=dict)
    """Mixture distributions computed ahead for the whole pool (:meth:`TeacherSignals.precompute`)."""

    def teacher_probs(self, temperature: float) -> torch.Tensor:
        """Each teacher's distribution at ``temperature``: ``[teachers, batch, classes]``."""
        if self.full_logits is not None:
            return torch.softmax(self.full_logits / temperature, dim=-1)
        if self.topk_values is None:
            raise ValueError(
                f"no teacher mixture at T={temperature} was precomputed and this batch was taken without "
                "logits (TeacherSignals.batch(logits=False))"
            )
        assert self.topk_values is not None and self.topk_indices is not None and self.tail_mass is not None
        n_tail = self.num_classes - self.topk_values.shape[-1]
        tail = self.tail_mass.clamp(0.0, 1.0)
        log_top = torch.log_softmax(self.topk_values, dim=-1) + torch.log1p(-tail).unsqueeze(-1)
        log_tail_each = torch.log(tail) - math.log(n_tail)  # -inf when the tail is empty
        top = log_top / temperature
        tail_each = log_tail_each / temperature
        log_z = torch.logsumexp(torch.cat([top, (tail_each + math.log(n_tail)).unsqueeze(-1)], dim=-1), -1)
        dense = torch.exp(tail_each - log_z).unsqueeze(-1).expand(*top.shape[:-1], self.num_classes)
        return dense.scatter(-1, self.topk_indices, torch.exp(top - log_z.unsqueeze(-1)))

    def probs(self, temperature: float) -> torch.Tensor:
        """The weighted mixture of the teachers' distributions at ``temperature``: ``[batch, classes]``."""
        if temperature in self.mixed:
            return self.mixed[temperature]
        return torch.einsum("t,tbc->bc", self.weights, self.teacher_probs(temperature))

    @property
    def logits(self) -> torch.Tensor:
        """The weighted mean of the teachers' logits ``[batch, classes]``; with top-k storage, the classes
        outside a teacher's top k take the smallest of its stored logits for that example."""
        if self.full_logits is not None:
            dense = self.full_logits
        else:
            assert self.topk_values is not None and self.topk_indices is not None
            fill = self.topk_values.min(dim=-1, keepdim=True).values
            dense = fill.expand(*fill.shape[:-1], self.num_classes)
            dense = dense.scatter(-1, self.topk_indices, self.topk_values)
        return torch.einsum("t,tbc->bc", self.weights, dense)


@dataclass
class TeacherSignals:
    """What the teachers said about every example of the pool, in pool order.

    Either ``logits`` ``[teachers, n, classes]`` or the top-k triple ``topk_values`` / ``topk_indices``
    ``[teachers, n, k]`` and ``tail_mass`` ``[teachers, n]`` (see the module doc). ``weights`` are
    normalised to sum to 1. ``features`` maps captured teacher layers (see :mod:`worker.engine.features`)
    to ``[n, ...]`` float32 tensors; attention maps are stored averaged over heads (``[n, 1, q, k]``).
    ``capture`` records what was asked to be captured.

    A teacher whose output is not a class distribution (a sentence encoder) gives *feature-only* signals:
    neither logits nor top-k, ``num_classes`` 0, and its outputs among ``features`` (``"embedding"``).
    """

    num_classes: int
    weights: list[float]
    logits: torch.Tensor | None = None
    topk_values: torch.Tensor | None = None
    topk_indices: torch.Tensor | None = None
    tail_mass: torch.Tensor | None = None
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    capture: list[str] = field(default_factory=list)
    offsets: torch.Tensor | None = None
    """``[examples + 1]`` int64 for sequence signals (rows are tokens; see the module doc), else None."""
    _mixed: dict[float, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)
    _weight_tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.weights or min(self.weights) <= 0:
            raise ValueError("teacher weights must be positive, one per teacher")
        total = sum(self.weights)
        self.weights = [w / total for w in self.weights]
        if self.logits is not None and self.topk_values is not None:
            raise ValueError("TeacherSignals needs either full logits or top-k values")
        if self.logits is None and self.topk_values is None and not self.features:
            raise ValueError("TeacherSignals needs either full logits or top-k values")
        if self.topk_values is not None and (self.topk_indices is None or self.tail_mass is None):
            raise ValueError("top-k teacher signals need indices and tail mass too")
        stored = self.logits if self.logits is not None else self.topk_values
        if stored is not None and (stored.ndim != 3 or stored.shape[0] != len(self.weights)):
            raise ValueError(f"expected [teachers={len(self.weights)}, n, ...], got {list(stored.shape)}")
        if self.offsets is not None:
            offsets = self.offsets
            if offsets.ndim != 1 or len(offsets) < 1 or int(offsets[0]) != 0:
                raise ValueError("sequence offsets must be [examples + 1] starting at 0")
            if bool((offsets[1:] < offsets[:-1]).any()) or int(offsets[-1]) != self.num_rows:
                raise ValueError(f"sequence offsets do not cover the {self.num_rows} stored rows")
        n = self.num_rows
        for name, feature in self.features.items():
            if len(feature) != n:
                raise ValueError(f"feature {name!r} has {len(feature)} rows, not {n}")

    @property
    def num_teachers(self) -> int:
        return len(self.weights)

    @property
    def num_rows(self) -> int:
        """Stored rows: examples, or tokens for sequence signals (``offsets``)."""
        stored = self.logits if self.logits is not None else self.topk_values
        if stored is None:  # feature-only signals
            return len(next(iter(self.features.values())))
        return int(stored.shape[1])

    @property
    def num_examples(self) -> int:
        if self.offsets is not None:
            return len(self.offsets) - 1
        return self.num_rows

    @property
    def has_logits(self) -> bool:
        """Whether the teachers gave class scores (full or top-k), not only features."""
        return self.logits is not None or self.topk_values is not None

    @property
    def top_k(self) -> int | None:
        """``k`` for top-k storage, ``None`` for full logits."""
        return None if self.topk_values is None else int(self.topk_values.shape[-1])

    @property
    def feature_shapes(self) -> dict[str, torch.Size]:
        """Each captured layer's per-example shape."""
        return {name: feature.shape[1:] for name, feature in self.features.items()}

    def batch(
        self, idx: torch.Tensor, device: torch.device | None = None, *, logits: bool = True
    ) -> TeacherBatch:
        """The signals of examples ``idx`` (pool positions), on ``device`` (default: where they are).

        ``logits=False``: the caller reads only :meth:`TeacherBatch.probs` at temperatures given to
        :meth:`precompute` (and features), so the stored logits are not copied when those mixtures exist.
        """

        if self.offsets is not None:
            raise ValueError(
                "sequence signals hold token rows: take an example's rows by offsets "
                "(worker.engine.lm_cache.TeacherTopK.from_signals)"
            )

        def take(t: torch.Tensor | None, dim: int) -> torch.Tensor | None:
            return None if t is None else t.index_select(dim, idx).to(device, non_blocking=True)

        mixed = {t: p.index_select(0, idx).to(device, non_blocking=True) for t, p in self._mixed.items()}
        skip = not logits and bool(mixed)
        return TeacherBatch(
            num_classes=self.num_classes,
            weights=self._weights_on(device),
            full_logits=None if skip else take(self.logits, 1),
            topk_values=take(self.topk_values, 1),
            topk_indices=take(self.topk_indices, 1),
            tail_mass=take(self.tail_mass, 1),
            features={name: f.index_select(0, idx).to(device) for name, f in self.features.items()},
            mixed=mixed,
        )

    def _weights_on(self, device: torch.device | None) -> torch.Tensor:
        key = str(device)
        if key not in self._weight_tensors:
            self._weight_tensors[key] = torch.tensor(self.weights, dtype=torch.float32, device=device)
        return self._weight_tensors[key]

    def precompute(self, temperatures: Iterable[float], batch_size: int = 65536) -> None:
        """Compute the mixture at each temperature for the whole pool once, so training steps only index it.

        Exactly what :meth:`TeacherBatch.probs` would compute per batch; costs ``examples x classes`` floats
        per temperature (skipped for top-k storage, whose point is not to hold dense rows).
        """
        if self.logits is None:
            return
        weights = torch.tensor(self.weights, dtype=torch.float32, device=self.logits.device)
        for t in temperatures:
            parts = [
                torch.einsum("t,tbc->bc", weights, torch.softmax(chunk / t, dim=-1))
                for chunk in self.logits.split(batch_size, dim=1)
            ]
            self._mixed[float(t)] = torch.cat(parts)

    def to_bytes(self) -> bytes:
        """A safetensors file; its metadata says how it was made (format, storage, top-k, capture)."""
        tensors: dict[str, torch.Tensor] = {}
        for name in ("logits", "topk_values", "topk_indices", "tail_mass", "offsets"):
            value = getattr(self, name)
            if value is not None:
                tensors[name] = value.contiguous()
        for name, feature in self.features.items():
            tensors[f"feature/{name}"] = feature.contiguous()
        metadata = {
            "format": FORMAT,
            "num_classes": str(self.num_classes),
            "weights": json.dumps(self.weights),
            "storage": "features" if not self.has_logits else "logits" if self.top_k is None else "topk",
            "top_k": json.dumps(self.top_k),
            "capture": json.dumps(self.capture),
        }
        return safetensors.torch.save(tensors, metadata=metadata)

    @classmethod
    def from_bytes(cls, blob: bytes) -> TeacherSignals:
        """The signals that :meth:`to_bytes` wrote; ``ValueError`` for anything else."""
        metadata = _safetensors_metadata(blob)
        if metadata.get("format") != FORMAT:
            raise ValueError(f"not teacher signals of format {FORMAT!r} (got {metadata.get('format')!r})")
        try:
            tensors = safetensors.torch.load(blob)
            num_classes = int(metadata["num_classes"])
            weights = [float(w) for w in json.loads(metadata["weights"])]
            capture = [str(c) for c in json.loads(metadata["capture"])]
        except Exception as exc:  # a truncated or altered file: safetensors, JSON or key errors
            raise ValueError(f"damaged teacher signals: {exc}") from exc
        prefix = "feature/"
        return cls(
            num_classes=num_classes,
            weights=weights,
            logits=tensors.get("logits"),
            topk_values=tensors.get("topk_values"),
            topk_indices=tensors.get("topk_indices"),
            tail_mass=tensors.get("tail_mass"),
            features={k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)},
            capture=capture,
            offsets=tensors.get("offsets"),
        )


def _safetensors_metadata(blob: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file: an 8-byte little-endian header size, then JSON."""
    try:
        (size,) = struct.unpack("<Q", blob[:8])
        header = json.loads(blob[8 : 8 + size])
        metadata = header.get("__metadata__") or {}
    except (struct.error, ValueError, AttributeError) as exc:
        raise ValueError("not a safetensors file") from exc
    if not isinstance(metadata, dict):
        raise ValueError("not a safetensors file")
    return {str(k): str(v) for k, v in metadata.items()}


def resolve_top_k(num_classes: int, top_k: int | None) -> int | None:
    """The ``k`` used for ``num_classes`` classes: ``None`` (full logits) or a ``k`` below the class count.

    ``top_k=None``: :data:`TOPK` when there are more than :data:`TOPK_THRESHOLD` classes, else full.
    """
    if top_k is None:
        return TOPK if num_classes > TOPK_THRESHOLD else None
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}")
    return top_k if top_k < num_classes else None


def pack_logits(logits: torch.Tensor, k: int | None) -> dict[str, torch.Tensor]:
    """One teacher's ``[n, classes]`` logits as stored: ``{"logits"}``, or (``k`` given) its top ``k``
    ``{"topk_values", "topk_indices", "tail"}`` with the probability mass of the other classes at T = 1."""
    logits = logits.float()
    if k is None:
        return {"logits": logits}
    values, indices = logits.topk(k, dim=1)
    others = logits.scatter(1, indices, float("-inf"))
    log_tail = torch.logsumexp(others, dim=1) - torch.logsumexp(logits, dim=1)
    return {"topk_values": values, "topk_indices": indices, "tail": log_tail.exp()}


def signals_from_logits(
    logits: Sequence[torch.Tensor],
    weights: Sequence[float],
    *,
    top_k: int | None = None,
    features: dict[str, torch.Tensor] | None = None,
    capture: Sequence[str] = (),
) -> TeacherSignals:
    """:class:`TeacherSignals` from each teacher's ``[n, classes]`` logits (computed elsewhere: a text
    teacher's pass over tokenized texts, say), stored dense or as top-k by :func:`resolve_top_k`."""
    if not logits or len(logits) != len(weights):
        raise ValueError(f"{len(logits)} teacher(s) but {len(weights)} weight(s)")
    num_classes = int(logits[0].shape[1])
    if any(int(t.shape[1]) != num_classes for t in logits):
        raise ValueError("the teachers predict different numbers of classes")
    k = resolve_top_k(num_classes, top_k)
    packed = [pack_logits(t.detach().cpu(), k) for t in logits]
    return _from_packed(num_classes, weights, k, packed, dict(features or {}), list(capture))


def _from_packed(
    num_classes: int,
    weights: Sequence[float],
    k: int | None,
    packed: Sequence[dict[str, torch.Tensor]],
    features: dict[str, torch.Tensor],
    capture: list[str],
) -> TeacherSignals:
    """:class:`TeacherSignals` from each teacher's :func:`pack_logits` parts over every example."""

    def stacked(name: str) -> torch.Tensor:
        return torch.stack([p[name] for p in packed])

    return TeacherSignals(
        num_classes=num_classes,
        weights=[float(w) for w in weights],
        logits=stacked("logits") if k is None else None,
        topk_values=None if k is None else stacked("topk_values"),
        topk_indices=None if k is None else stacked("topk_indices"),
        tail_mass=None if k is None else stacked("tail"),
        features=features,
        capture=capture,
    )


def compute_signals(
    teachers: Sequence[nn.Module],
    weights: Sequence[float],
    x: np.ndarray,
    device: torch.device,
    *,
    capture: Sequence[str] = (),
    top_k: int | None = None,
    batch_size: int = 1024,
) -> TeacherSignals:
    """Run each teacher once over ``x`` (eval mode, no grad, bf16 autocast on CUDA) and keep its signals.

    ``capture``: teacher layer names (or :data:`~worker.engine.features.ATTENTIONS`) whose outputs are
    kept; only with a single teacher (features of different teachers cannot be mixed). ``top_k``: see
    :func:`resolve_top_k`. A missing layer raises ``ValueError`` naming it and listing the teacher's layers.
    """
    if not teachers or len(weights) != len(teachers):
        raise ValueError(f"{len(teachers)} teacher(s) but {len(weights)} weight(s)")
    capture = list(capture)
    if capture and len(teachers) > 1:
        raise ValueError(
            f"hint and attention losses need a single teacher (got {len(teachers)}): "
            "the layers of different teachers cannot be mixed"
        )
    inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    if len(inputs) == 0:
        raise ValueError("compute_signals: no examples")
    num_classes: int | None = None
    k: int | None = None
    per_teacher: list[dict[str, list[torch.Tensor]]] = []
    features: dict[str, list[torch.Tensor]] = {}
    for ti, teacher in enumerate(teachers):
        parts: dict[str, list[torch.Tensor]] = {
            "logits": [],
            "topk_values": [],
            "topk_indices": [],
            "tail": [],
        }
        teacher.to(device)
        with eval_mode(teacher), torch.no_grad(), FeatureCapture(teacher, capture, role="teacher") as hooks:
            for start in range(0, len(inputs), batch_size):
                batch = inputs[start : start + batch_size].to(device, non_blocking=True)
                with autocast(device):
                    logits = teacher(batch).float()
                if num_classes is None:
                    num_classes = int(logits.shape[1])
                    k = resolve_top_k(num_classes, top_k)
                elif logits.shape[1] != num_classes:
                    raise ValueError(
                        f"teacher {ti} predicts {logits.shape[1]} classes "
                        f"but teacher 0 predicts {num_classes}"
                    )
                for name, value in pack_logits(logits, k).items():
                    parts[name].append(value.cpu())
                for key, value in hooks.outputs.items():
                    value = value.detach().float()
                    if key.startswith(ATTENTIONS):
                        value = value.mean(dim=1, keepdim=True)  # the attention loss averages heads anyway
                    features.setdefault(key, []).append(value.cpu())
                hooks.outputs.clear()
        per_teacher.append(parts)
    assert num_classes is not None
    packed = [{name: torch.cat(chunks) for name, chunks in parts.items() if chunks} for parts in per_teacher]
    return _from_packed(
        num_classes, weights, k, packed, {key: torch.cat(chunks) for key, chunks in features.items()}, capture
    )
