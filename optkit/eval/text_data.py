"""Text files as the data of a Hugging Face text model: read, tokenized with the model's own tokenizer, split.

``--text-data FILE``: ``.txt`` (one text per line), ``.jsonl`` (objects with ``text`` and optionally ``label``) or
``.csv`` (a header naming ``text`` and optionally ``label``). Labels may be class ids or the names in the model's
``label2id``. The texts are tokenized with the folder's tokenizer (truncated to ``--max-length``, padded to the
longest text, or to exactly ``--seq-len`` when given, for comparisons at one length), then split: the first half
evaluates, the second half calibrates (at most ``CALIB_MAX`` texts; fewer than ``MIN_SPLIT`` texts serve both).
Evaluation batches keep that padding; timing trims each batch to its longest real text, so latency follows the
data's real length distribution (see ``EvalData.timing_batches``).

The arrays are written as ``.npz`` files named after the text file and a digest of everything that made them
(text bytes, tokenizer files, lengths) in ``optkit-data/`` beside the output, so the sidecars of every later
artifact point at them and a recipe rebuilds exactly.
"""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from optkit.types.errors import UsageError
from optkit.types.files import Staging, sha256_file

CALIB_MAX = 300
MIN_SPLIT = 8
DATA_FOLDER = "optkit-data"


def read_texts(path: Path) -> tuple[list[str], list[Any] | None]:
    """(texts, labels or None) from a .txt, .jsonl or .csv file."""
    if not path.is_file():
        raise UsageError(f"--text-data {path}: no such file", hint="Check the path")
    suffix = path.suffix.lower()
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--text-data {path.name}: not readable UTF-8 text ({type(exc).__name__})",
                         hint="Save it as UTF-8") from exc
    texts: list[str] = []
    labels: list[Any] = []
    if suffix == ".jsonl":
        for n, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise UsageError(f"--text-data {path.name}: line {n} is not JSON",
                                 hint='Write one object per line, e.g. {"text": "...", "label": 1}') from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise UsageError(f"--text-data {path.name}: line {n} has no string 'text' field",
                                 hint='Write one object per line, e.g. {"text": "...", "label": 1}')
            texts.append(row["text"])
            labels.append(row.get("label"))
    elif suffix == ".csv":
        rows = list(csv.DictReader(raw.splitlines()))
        if not rows or "text" not in rows[0]:
            raise UsageError(f"--text-data {path.name}: no 'text' column", hint="Give the CSV a header: text,label")
        texts = [r["text"] for r in rows]
        labels = [r.get("label") for r in rows]
    else:
        texts = [line for line in raw.splitlines() if line.strip()]
    if not texts:
        raise UsageError(f"--text-data {path.name} holds no text", hint="Write one text per line")
    if any(label is not None and label != "" for label in labels):
        if any(label is None or label == "" for label in labels):
            raise UsageError(f"--text-data {path.name}: some rows have a label and some do not",
                             hint="Label every row, or none")
        return texts, labels
    return texts, None


def label_ids(labels: list[Any], label2id: dict[str, int] | None, path: Path,
              option: str = "--text-data") -> np.ndarray:
    out = []
    for label in labels:
        if isinstance(label, (int, np.integer)) or (isinstance(label, str) and label.strip().lstrip("-").isdigit()):
            out.append(int(label))
        elif isinstance(label, str) and label2id and label in label2id:
            out.append(int(label2id[label]))
        else:
            known = ", ".join(sorted(label2id or {})[:6])
            raise UsageError(f"{option} {path.name}: label {label!r} is not a class id"
                             + (f" or one of the model's labels ({known})" if known else ""),
                             hint="Use the class ids of the model's config (label2id)")
    return np.asarray(out, dtype=np.int64)


def tokenize(folder: Path, texts: list[str], input_names: list[str] | None, *, max_length: int,
             seq_len: int | None) -> dict[str, np.ndarray]:
    from optkit.types.lazy import require

    transformers = require("transformers", "tokenizing --text-data")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # no tokenizer files, or files transformers cannot read
        raise UsageError(f"{folder.name} has no tokenizer transformers can load ({type(exc).__name__})",
                         hint="Save the tokenizer into the model folder (tokenizer.save_pretrained)") from exc
    enc = tokenizer(texts, padding="max_length" if seq_len else "longest", truncation=True,
                    max_length=seq_len or max_length, return_tensors="np")
    names = input_names or [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in enc]
    if "token_type_ids" in names and "token_type_ids" not in enc and "input_ids" in enc:
        # a tokenizer whose model_input_names leave them out: every text is segment 0, which is what the model
        # itself uses when it is not given them (BERT's token_type_ids default to zeros)
        enc["token_type_ids"] = np.zeros_like(enc["input_ids"])
    missing = [n for n in names if n not in enc]
    if missing:
        raise UsageError(f"the tokenizer of {folder.name} gives no {', '.join(missing)}",
                         hint="Pass the model's own tokenizer folder")
    return {n: np.ascontiguousarray(enc[n], dtype=np.int64) for n in names}


def _digest(path: Path, folder: Path, tokenizer_files: list[Path], extra: dict[str, Any]) -> str:
    h = hashlib.sha256(sha256_file(path).encode())
    for f in tokenizer_files:
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode())
    h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()[:12]


def split_rows(n: int) -> dict[str, slice]:
    """The first half evaluates, the second calibrates (at most CALIB_MAX); below MIN_SPLIT all serve both."""
    if n < MIN_SPLIT:
        return {"eval": slice(0, n), "calib": slice(0, n)}
    half = n // 2
    return {"eval": slice(0, half), "calib": slice(half, min(n, half + CALIB_MAX))}


def write_npz(path: Path, arrays: dict[str, np.ndarray], option: str = "--text-data") -> None:
    if path.is_file():  # named by the digest of what made it: the same name holds the same arrays
        try:
            with np.load(path, allow_pickle=False) as old:
                if set(old.files) == set(arrays) and all(np.array_equal(old[k], v) for k, v in arrays.items()):
                    return
        except (OSError, ValueError):
            pass
        raise UsageError(f"{path} exists and holds other data", hint=f"Remove it (optkit writes {path.parent.name}/ "
                                                                      f"for {option})")
    with Staging() as stage:
        tmp = stage.path_for(path)
        with open(tmp, "wb") as fh:
            # mypy matches **arrays against savez's allow_pickle: bool as well; these are arrays named after model inputs
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        stage.commit()


def prepare(text_path: Path, folder: Path, out_folder: Path, *, input_names: list[str] | None,
            label2id: dict[str, int] | None, max_length: int = 128, seq_len: int | None = None,
            tokenizer_files: Sequence[Path] = ()) -> dict[str, Any]:
    """Tokenize ``text_path`` with the tokenizer in ``folder`` into eval and calib .npz files in ``out_folder``;
    {"eval": path, "calib": path, "texts": n, "labels": bool, "digest": ..., "tokenizer": {file: sha256}}."""
    texts, labels = read_texts(text_path)
    ids = label_ids(labels, label2id, text_path) if labels is not None else None
    arrays = tokenize(folder, texts, input_names, max_length=max_length, seq_len=seq_len)
    digest = _digest(text_path, folder, list(tokenizer_files), {"max_length": max_length, "seq_len": seq_len,
                                                               "inputs": input_names, "version": 1})
    out: dict[str, Any] = {"texts": len(texts), "labels": ids is not None, "digest": digest, "max_length": max_length,
                           "seq_len": seq_len, "source": str(text_path.resolve()),
                           "tokenizer": {f.name: sha256_file(f) for f in tokenizer_files}}
    for split, rows in split_rows(len(texts)).items():
        part = {k: v[rows] for k, v in arrays.items()}
        if ids is not None:
            part["labels"] = ids[rows]
        path = out_folder / DATA_FOLDER / f"{text_path.stem}-{digest}-{split}.npz"
        write_npz(path, part)
        out[split] = path
    return out
