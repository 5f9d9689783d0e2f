"""Hugging Face model folders as a MODEL argument: recognised from their files, without importing transformers.

A folder holding ``config.json`` and weights (``model.safetensors``, or ``pytorch_model.bin``, which is only ever
read with ``torch.load(weights_only=True)``) is a torch artifact of source kind ``hf``. ``hf:ORG/NAME[@REV]`` is
resolved through ``huggingface_hub`` (its local cache when offline). The task decides the head, the exported
outputs and the default metric; it is detected from the folder when not given:

- ``modules.json`` (a sentence-transformers folder): ``sentence-embedding``, pooled and normalised as its modules say;
- ``architectures`` ending in ``ForSequenceClassification`` / ``ForTokenClassification`` / ``ForImageClassification``;
- ``architectures`` ending in ``ForCausalLM``: ``text-generation`` (a decoder-only language model, safetensors only;
  its tokenizer, chat template and generation config are among its files);
- otherwise ``feature-extraction`` (the encoder's last hidden state).

A config that names its own code (``auto_map``) is refused unless ``trust_remote_code`` is given.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from optkit.types.errors import UsageError
from optkit.types.source import HF, TorchSource

HF_PREFIX = "hf:"
TASKS = ("feature-extraction", "sentence-embedding", "text-classification", "token-classification",
         "image-classification", "text-generation")
TEXT_TASKS = (*TASKS[:4], "text-generation")  # --text-data: tokenized as for every text model
GENERATION = "text-generation"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
                   "merges.txt", "added_tokens.json", "spiece.model", "sentencepiece.bpe.model",
                   "preprocessor_config.json", "chat_template.jinja", "chat_template.json",
                   "generation_config.json")
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
_HEADS = {"ForSequenceClassification": "text-classification", "ForTokenClassification": "token-classification",
          "ForImageClassification": "image-classification", "ForCausalLM": GENERATION}


def is_hf_folder(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (
        any((folder / f).is_file() for f in WEIGHT_FILES + INDEX_FILES) or (folder / "modules.json").is_file())


def read_config(folder: Path) -> dict[str, Any]:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{folder / 'config.json'} is not readable JSON ({type(exc).__name__})",
                         hint="Re-save the model with save_pretrained") from exc
    if not isinstance(config, dict):
        raise UsageError(f"{folder / 'config.json'} is not a JSON object", hint="Re-save the model with save_pretrained")
    return config


def detect_task(folder: Path, config: dict[str, Any]) -> str:
    if (folder / "modules.json").is_file():
        return "sentence-embedding"
    for arch in config.get("architectures") or []:
        for ending, task in _HEADS.items():
            if str(arch).endswith(ending):
                return task
    return "feature-extraction"


def weight_files(folder: Path) -> list[Path]:
    """The weight files, safetensors first (a .bin only when no safetensors exist), shards from the index."""
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            try:
                shards = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
                raise UsageError(f"{folder / index} is not a weight index ({type(exc).__name__})",
                                 hint="Re-save the model with save_pretrained") from exc
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise UsageError(f"{folder}: weight shard {missing[0]} is missing", hint="Download the whole model")
            return [folder / index, *(folder / s for s in shards)]
    raise UsageError(f"{folder} has config.json but no weights (model.safetensors or pytorch_model.bin)",
                     hint="Save the model with save_pretrained, or download its weights")


def sentence_modules(folder: Path) -> list[dict[str, Any]]:
    """A sentence-transformers folder's modules: Transformer (at the root), Pooling, Normalize. Others (Dense,
    custom modules) are refused: the export would not match what the folder defines."""
    try:
        modules = json.loads((folder / "modules.json").read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{folder / 'modules.json'} is not readable JSON", hint="Re-save with SentenceTransformer.save") from exc
    out = []
    for m in sorted(modules, key=lambda m: m.get("idx", 0)):
        kind = str(m.get("type", "")).rsplit(".", 1)[-1]
        if kind not in ("Transformer", "Pooling", "Normalize"):
            raise UsageError(f"{folder}: sentence-transformers module '{kind}' is not supported "
                             f"(optkit exports Transformer, Pooling and Normalize)",
                             hint="Export the transformer alone with --task feature-extraction")
        if kind == "Transformer" and m.get("path", "") not in ("", "0_Transformer"):
            raise UsageError(f"{folder}: the Transformer module lives in '{m['path']}'",
                             hint=f"Pass {folder / m['path']} with --task feature-extraction")
        entry: dict[str, Any] = {"type": kind}
        if kind == "Pooling":
            try:
                entry["config"] = json.loads((folder / m["path"] / "config.json").read_text())
            except (OSError, ValueError, KeyError) as exc:
                raise UsageError(f"{folder}: the Pooling module's config.json is missing or unreadable",
                                 hint="Re-save with SentenceTransformer.save") from exc
        out.append(entry)
    return out


def hf_files(folder: Path, task: str | None = None) -> list[Path]:
    """Every file the model's bytes depend on: config, weights, sentence-transformers modules (digests, cache).
    A causal LM's text also depends on its tokenizer, chat template and generation config: they are recorded too."""
    files = [folder / "config.json", *weight_files(folder)]
    files += [folder / f for f in ST_FILES if (folder / f).is_file()]
    files += sorted(p for p in folder.glob("*_Pooling/config.json"))
    if task == GENERATION:
        files += tokenizer_files(folder)
    return files


def tokenizer_files(folder: Path) -> list[Path]:
    return [folder / f for f in TOKENIZER_FILES if (folder / f).is_file()]


def resolve_hub(ref: str) -> Path:
    """``hf:ORG/NAME[@REVISION]`` -> the local snapshot folder (the cache when offline; a download only where the
    network and HF_HUB_OFFLINE allow)."""
    from optkit.types.lazy import require

    repo, _, revision = ref[len(HF_PREFIX):].partition("@")
    if not repo or repo.count("/") > 1:
        raise UsageError(f"bad model id '{ref}'", hint="Write hf:ORG/NAME or hf:ORG/NAME@REVISION")
    hub = require("huggingface_hub", "hf: model ids")
    patterns = ["*.json", "*.safetensors", "*.txt", "*.model", "*_Pooling/*", "pytorch_model.bin"]
    try:
        return Path(hub.snapshot_download(repo, revision=revision or None, allow_patterns=patterns))
    except Exception as exc:  # offline without a cached copy, unknown repo, gated model...
        raise UsageError(f"cannot get {ref}: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}",
                         hint="Download it once where the network allows (huggingface-cli download "
                              f"{repo}), or pass the model's local folder") from exc


def hf_source(folder: Path, task: str | None = None, trust_remote_code: bool = False) -> TorchSource:
    """The ``source`` of a torch artifact for a Hugging Face folder (checked: weights present, task known, no
    remote code unless trusted)."""
    folder = folder.resolve()
    config = read_config(folder)
    if task is not None and task not in TASKS:
        raise UsageError(f"--task {task}: not one of {', '.join(TASKS)}", hint=f"Use one of {', '.join(TASKS)}")
    if config.get("auto_map") and not trust_remote_code:
        raise UsageError(f"{folder.name} ships its own model code (auto_map in config.json), which optkit does not "
                         "run by default", hint="Pass --trust-remote-code if you trust its authors")
    task = task or detect_task(folder, config)
    if task == GENERATION:
        _check_causal_weights(folder)
    return TorchSource(kind=HF, folder=str(folder), task=task, name=folder.name, model_type=config.get("model_type"),
                       trust_remote_code=trust_remote_code, files=[str(p) for p in hf_files(folder, task)],
                       modules=sentence_modules(folder) if task == "sentence-embedding" else [])


def _check_causal_weights(folder: Path) -> None:
    """A causal LM is read from safetensors only: its weights are what later steps compress, and a pickled
    ``.bin`` of a multi-gigabyte model is not worth optkit's own careful reader."""
    if not any(p.name.endswith((".safetensors", ".safetensors.index.json")) for p in weight_files(folder)):
        raise UsageError(f"{folder.name} is a causal language model with pytorch_model.bin weights only; optkit reads "
                         "a causal LM's weights from safetensors", hint="Re-save it with save_pretrained "
                         "(safe_serialization=True), which writes model.safetensors")


def optkit_task(task: str) -> str:
    """The artifact's task (what picks the default metric and the export): classification heads are judged on top-1;
    a causal LM is exported with its KV cache."""
    if task == "text-generation":
        return task
    return "classification" if task in ("text-classification", "image-classification") else "other"


def hf_specs(source: TorchSource, config: dict[str, Any]) -> tuple[list[tuple], list[tuple]]:
    """(inputs, outputs) as (name, shape, dtype): token inputs dynamic in batch and sequence (``token_type_ids``
    where the model has segment embeddings), the task's one output."""
    task = source.hf_task
    inputs: list[tuple[str, tuple[int | str, ...], str]]
    if task == "image-classification":
        channels, size = int(config.get("num_channels", 3)), config.get("image_size", 224)
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        inputs = [("pixel_values", ("batch", channels, h, w), "float32")]
    else:
        names = ["input_ids", "attention_mask"] + (["token_type_ids"] if int(config.get("type_vocab_size", 0)) > 1 else [])
        inputs = [(n, ("batch", "sequence"), "int64") for n in names]
    hidden = config.get("hidden_size") or config.get("dim") or config.get("d_model") or "hidden"
    labels = len(config.get("id2label") or {}) or int(config.get("num_labels", 2))
    shape = {"feature-extraction": ("batch", "sequence", hidden), "sentence-embedding": ("batch", "embedding"),
             "text-classification": ("batch", labels), "token-classification": ("batch", "sequence", labels),
             "image-classification": ("batch", labels),
             GENERATION: ("batch", "sequence", config.get("vocab_size") or "vocab")}[task]
    name = {"feature-extraction": "last_hidden_state", "sentence-embedding": "sentence_embedding"}.get(task, "logits")
    return inputs, [(name, shape, "float32")]
