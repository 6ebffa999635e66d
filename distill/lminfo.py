"""What a causal language model is, as the API records it and :mod:`distill.plan` checks it: no torch.

A ``causal_lm`` job's result carries it (``result["lm_model"]``); an uploaded Hugging Face archive's file
metadata describes the same things (``tokenizer_sha256``, vocabulary, layers...). Two models can teach each
other only when their tokenizers are the same, which :func:`distill.plan.plan` checks by
``tokenizer_sha256``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CausalLMInfo:
    architecture: str
    """``model_type`` of its Hugging Face config (``gpt2``, ``llama``, ``qwen2``...)."""
    vocab_size: int
    layers: int | None
    """Decoder layers (``num_hidden_layers`` / ``n_layer``)."""
    parameters: int | None
    tokenizer_sha256: str | None
    """Identifies the tokenizer (see :func:`worker.engine.lm.tokenizer_sha256`); None: unknown."""

    def to_meta(self) -> dict[str, Any]:
        return {"task": "causal_lm", **asdict(self)}

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> CausalLMInfo:
        """From a job's ``result["lm_model"]`` or an uploaded archive's file metadata (either spelling of
        the architecture and layer keys)."""
        layers = meta.get("layers", meta.get("num_hidden_layers"))
        vocab = meta.get("vocab_size") or 0
        parameters = meta.get("parameters")
        return cls(
            architecture=str(meta.get("model_type") or meta.get("architecture") or "unknown"),
            vocab_size=int(vocab),
            layers=None if layers is None else int(layers),
            parameters=None if parameters is None else int(parameters),
            tokenizer_sha256=meta.get("tokenizer_sha256"),
        )


def is_causal_lm_meta(meta: dict[str, Any]) -> bool:
    """Whether a model file's metadata describes a causal language model (``task``/``kind``
    ``"causal_lm"``, as an uploaded Hugging Face archive's metadata says, or a ``*ForCausalLM`` class)."""
    if meta.get("task") == "causal_lm" or meta.get("kind") == "causal_lm":
        return True
    names = meta.get("architectures") or [meta.get("architecture") or ""]
    return any(isinstance(n, str) and n.endswith("ForCausalLM") for n in names)
