"""Tiny Hugging Face language models and tokenizers, built offline for tests and benchmarks.

Nothing here downloads: the tokenizer is a character-level BPE (no merges) over a fixed alphabet, with a
chat template; models are drawn at random from small configs (``gpt2``, ``llama``, ``qwen2`` causal LMs,
a BERT sequence classifier). ``archive`` packs a ``save_pretrained`` folder the way a user would upload it.

Note: transformers 5's ``AutoTokenizer`` swaps in ``Qwen2Tokenizer`` (byte-level pre-tokenizer) for a
``qwen2`` config whatever ``tokenizer.json`` says, which splits this character tokenizer differently;
``PreTrainedTokenizerFast.from_pretrained`` reads ``tokenizer.json`` as written for every arch.

    tok = char_tokenizer()
    teacher = tiny_causal_lm(tok, arch="gpt2", n_layer=4, n_embd=128)
    blob = archive(teacher, tok)            # zip bytes: config.json, model.safetensors, tokenizer files
"""

from __future__ import annotations

import io
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Literal

ALPHABET = "0123456789+-*=/()<>.,:;?! abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ\n"
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}Q: {{ m['content'] }}\n"
    "{% elif m['role'] == 'system' %}{{ m['content'] }}\n"
    "{% else %}A: {{ m['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}A: {% endif %}"
)


def char_tokenizer(alphabet: str = ALPHABET, *, chat_template: bool = True) -> Any:
    """A ``PreTrainedTokenizerFast`` with one token per character of ``alphabet`` plus pad/unk/bos/eos."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *dict.fromkeys(alphabet)])}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_causal_lm(
    tokenizer: Any,
    *,
    arch: Literal["gpt2", "llama", "qwen2"] = "gpt2",
    layers: int = 2,
    hidden: int = 64,
    heads: int = 4,
    context: int = 128,
    seed: int = 0,
) -> Any:
    """A randomly initialised causal LM over ``tokenizer``'s vocabulary."""
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, Qwen2Config

    ids = {
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config: Any
    if arch == "gpt2":
        config = GPT2Config(n_layer=layers, n_embd=hidden, n_head=heads, n_positions=context, **ids)
    else:
        kind = LlamaConfig if arch == "llama" else Qwen2Config
        config = kind(
            num_hidden_layers=layers,
            hidden_size=hidden,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            intermediate_size=hidden * 4,
            max_position_embeddings=context,
            tie_word_embeddings=True,
            **ids,
        )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def tiny_classifier(
    tokenizer: Any, *, num_labels: int = 2, layers: int = 2, hidden: int = 64, seed: int = 0
) -> Any:
    """A randomly initialised BERT sequence classifier over ``tokenizer``'s vocabulary."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=hidden * 4,
        max_position_embeddings=128,
        num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


def save_pretrained(model: Any, tokenizer: Any, folder: Path) -> Path:
    """``model.save_pretrained`` (safetensors) and ``tokenizer.save_pretrained`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def archive(
    model: Any, tokenizer: Any, *, fmt: Literal["zip", "tar", "tar.gz"] = "zip", prefix: str = ""
) -> bytes:
    """The bytes of a zip or tar of ``save_pretrained``'s output (entries under ``prefix`` if given)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_pretrained(model, tokenizer, Path(tmp) / "model")
        return pack_folder(folder, fmt=fmt, prefix=prefix)


def unpack(blob: bytes, folder: Path) -> Path:
    """A model archive's bytes (a job's ``model.hf.zip``) unpacked into ``folder``, ready for
    ``from_pretrained``."""
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        zf.extractall(folder)
    return folder


def pack_folder(folder: Path, *, fmt: Literal["zip", "tar", "tar.gz"] = "zip", prefix: str = "") -> bytes:
    """A zip or tar of the regular files in ``folder`` (names relative to it, under ``prefix``)."""
    buffer = io.BytesIO()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if fmt == "zip":
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, prefix + str(path.relative_to(folder)))
    else:
        with tarfile.open(fileobj=buffer, mode="w:gz" if fmt == "tar.gz" else "w") as tf:
            for path in files:
                tf.add(path, prefix + str(path.relative_to(folder)))
    return buffer.getvalue()
