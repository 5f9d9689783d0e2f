"""Measuring generative language models, the same way for every runtime (``backends/generative.CausalLM``).

- ``tokenizer_for(artifact)``: the tokenizer of the Hugging Face folder the artifact came from (its own source, or
  the chain's original's ``details.source``: an export keeps its model's tokenizer), ``stop_tokens`` its eos ids;
- ``generate_stream``: tokens as they are picked, greedy by default, or sampled (temperature, top-p, seed);
- ``perplexity``: exp of the mean negative log-likelihood of every next token of some token windows;
- ``token_agreement``: the share of the original's greedy tokens a model reproduces (common prefix per prompt);
- ``time_generation``: time to first token at each prompt length and decode tokens/s at batch 1, the models
  interleaved round-robin (as ``eval/timing.measure_interleaved`` times fixed-shape models) on one core.
"""
from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Sequence

import numpy as np

from optkit.types.errors import UsageError
from optkit.types.generative import GenerationQuality, GenerationTiming, Perplexity
from optkit.types.source import TorchSource

if TYPE_CHECKING:
    from optkit.backends.generative import CausalLM
    from optkit.types.artifact import Artifact

GENERATION = "text-generation"


def source_of(artifact: Artifact) -> TorchSource:
    """The Hugging Face causal-LM source the artifact comes from: its own, or its chain's original's."""
    chain = artifact.chain()
    src = artifact.source if artifact.source.is_hf else (TorchSource.recorded_in(chain[0]) if chain else TorchSource())
    if not src.is_hf or src.task != GENERATION:
        what = f"a {src.task} model" if src.is_hf else "not made from a Hugging Face causal language model"
        raise UsageError(f"{artifact.path.name} is {what}; text generation needs a causal LM",
                         hint="Pass a folder whose config.json names a *ForCausalLM architecture, or an artifact "
                              "optkit made from one")
    if not src.hf_folder.is_dir():
        raise UsageError(f"{artifact.path.name}: its original folder {src.hf_folder} (tokenizer) is gone",
                         hint="Restore the model folder it was made from")
    return src


def tokenizer_for(artifact: Artifact) -> Any:
    """The transformers tokenizer of the folder the artifact comes from (chat template included)."""
    from optkit.types.lazy import require

    folder = source_of(artifact).hf_folder
    transformers = require("transformers", "tokenizing text for a causal LM")
    try:
        return transformers.AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:  # no tokenizer files, or files transformers cannot read
        raise UsageError(f"{folder.name} has no tokenizer transformers can load ({type(exc).__name__})",
                         hint="Save the tokenizer into the model folder (tokenizer.save_pretrained)") from exc


def stop_tokens(artifact: Artifact, tokenizer: Any = None) -> tuple[int, ...]:
    """The ids generation stops at: ``generation_config.json``'s ``eos_token_id`` (one or a list), else the
    config's, else the tokenizer's eos token."""
    folder = source_of(artifact).hf_folder
    for name in ("generation_config.json", "config.json"):
        try:
            eos = json.loads((folder / name).read_text()).get("eos_token_id")
        except (OSError, ValueError, AttributeError):
            continue
        if eos is not None:
            return tuple(int(e) for e in (eos if isinstance(eos, list) else [eos]))
    eos_id = getattr(tokenizer, "eos_token_id", None)
    return () if eos_id is None else (int(eos_id),)


def prompt_ids(tokenizer: Any, text: str, *, chat: bool = False) -> np.ndarray:
    """The prompt's token ids (``[1, T]``): the text as the tokenizer encodes it, or with ``chat`` the folder's chat
    template around it as the user's message, the assistant's turn to follow."""
    if chat:
        if not getattr(tokenizer, "chat_template", None):
            raise UsageError("--chat: the model's folder has no chat template",
                             hint="Drop --chat, or save a chat template with the tokenizer (chat_template.jinja)")
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(text)["input_ids"]
    if not ids:
        raise UsageError("--prompt: the prompt is empty once tokenized", hint="Give some text to continue")
    return np.asarray(ids, dtype=np.int64).reshape(1, -1)


def decode_stream(tokenizer: Any, tokens: Iterable[int]) -> Iterator[str]:
    """Text as tokens arrive: each piece is what the tokens so far decode to (special tokens skipped) beyond what
    was given before, held back while it ends inside a multi-byte character; the pieces join to the whole text."""
    got: list[int] = []
    shown = ""
    for token in tokens:
        got.append(token)
        text = tokenizer.decode(got, skip_special_tokens=True)
        if text.endswith("\ufffd") or not text.startswith(shown):
            continue
        if len(text) > len(shown):
            yield text[len(shown):]
            shown = text
    text = tokenizer.decode(got, skip_special_tokens=True) if got else ""
    if text.startswith(shown) and len(text) > len(shown):
        yield text[len(shown):]


def check_sampling(temperature: float, top_p: float) -> None:
    if not temperature >= 0 or not np.isfinite(temperature):
        raise UsageError(f"--temperature {temperature}: must be 0 (greedy) or more", hint="Use e.g. 0.7")
    if not 0 < top_p <= 1:
        raise UsageError(f"--top-p {top_p}: must be in (0, 1]", hint="Use e.g. 0.9, or 1 for no nucleus cut")


def _pick(logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator) -> int:
    if temperature == 0:
        return int(logits.argmax())
    scaled = logits.astype(np.float64) / temperature
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if top_p < 1:
        order = np.argsort(-probs, kind="stable")
        keep = int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1  # the smallest set reaching top_p
        cut = np.zeros_like(probs)
        cut[order[:keep]] = probs[order[:keep]]
        probs = cut / cut.sum()
    return int(rng.choice(probs.size, p=probs))


def generate_stream(lm: CausalLM, ids: np.ndarray, max_new_tokens: int, *, temperature: float = 0.0,
                    top_p: float = 1.0, seed: int | None = None, stop: Sequence[int] = ()) -> Iterator[int]:
    """The new tokens after prompt ``ids`` (``[1, T]`` or ``[T]``), each yielded as soon as it is picked: at most
    ``max_new_tokens``, ending with the first of ``stop`` (yielded). Greedy at temperature 0 (``greedy``'s tokens)."""
    check_sampling(temperature, top_p)
    rng = np.random.default_rng(seed)
    if max_new_tokens <= 0:
        return
    logits = lm.start(np.asarray(ids, dtype=np.int64).reshape(1, -1))[-1]
    for n in range(1, max_new_tokens + 1):
        token = _pick(logits, temperature, top_p, rng)
        yield token
        if token in stop or n == max_new_tokens:
            return
        logits = lm.step(token)


def _nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Negative log-likelihood of each target under each row of logits (float64 log-softmax)."""
    x = logits.astype(np.float64)
    top = x.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(x - top).sum(axis=-1)) + top[:, 0]
    return np.asarray(log_z - x[np.arange(len(targets)), targets])


def perplexity(lm: CausalLM, token_windows: Iterable[Sequence[int] | np.ndarray]) -> Perplexity:
    """exp(mean NLL) of every next token of each window (a window of T tokens gives T-1 predictions)."""
    total, count, windows = 0.0, 0, 0
    for window in token_windows:
        ids = np.asarray(window, dtype=np.int64).reshape(-1)
        if ids.size < 2:
            continue
        logits = lm.start(ids.reshape(1, -1))
        total += float(_nll(logits[:-1], ids[1:]).sum())
        count += ids.size - 1
        windows += 1
    if count == 0:
        raise UsageError("no text to measure perplexity on: every window is shorter than 2 tokens",
                         hint="Give longer evaluation texts")
    mean = total / count
    return Perplexity(perplexity=float(np.exp(mean)), nll=mean, tokens=count, windows=windows)


def token_agreement(ref: Sequence[Sequence[int]], got: Sequence[Sequence[int]]) -> float:
    """The share of the reference's greedy tokens (one sequence per prompt) that ``got`` reproduces before it first
    differs: after a different token the two continue different texts, so later positions are not compared."""
    if len(ref) != len(got):
        raise ValueError(f"{len(ref)} reference sequences but {len(got)} to compare")
    total = sum(len(r) for r in ref)
    if total == 0:
        return 1.0
    same = 0
    for r, g in zip(ref, got):
        for a, b in zip(r, g):
            if a != b:
                break
            same += 1
    return same / total


def generation_quality(lm: CausalLM, windows: Sequence[Sequence[int] | np.ndarray],
                       prompts: Sequence[np.ndarray], new_tokens: int, *,
                       reference: Sequence[Sequence[int]] | None = None,
                       stop: Sequence[int] = ()) -> tuple[GenerationQuality, list[list[int]]]:
    """The model's perplexity on ``windows`` and its greedy continuations of ``prompts`` (returned, to serve as
    the reference of later models), with their agreement with ``reference`` (1.0 when it is the reference)."""
    ppl = perplexity(lm, windows)
    got = [list(generate_stream(lm, p, new_tokens, stop=stop)) for p in prompts]
    agreement = token_agreement(reference, got) if reference is not None else 1.0
    return GenerationQuality(perplexity=ppl.perplexity, tokens=ppl.tokens, token_agreement=agreement,
                             prompts=len(prompts), new_tokens=new_tokens), got


def windows_of(token_ids: Sequence[int], length: int, count: int | None = None) -> list[np.ndarray]:
    """Consecutive, non-overlapping windows of ``length`` tokens (the last partial one dropped when there are
    full ones), at most ``count``."""
    ids = np.asarray(token_ids, dtype=np.int64)
    out = [ids[i:i + length] for i in range(0, max(len(ids) - length + 1, 1), length)]
    return out[:count] if count else out


def read_eval_texts(path: Path) -> list[str]:
    """The texts of a ``--text-data`` file (.txt one per line, .jsonl ``text`` fields), through ``text_data``."""
    from optkit.eval.text_data import read_texts

    return read_texts(path)[0]


def _prompt(length: int, vocab: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(3, max(vocab, 4), size=(1, length), dtype=np.int64)


def _one_run(lm: CausalLM, prompt: np.ndarray, new_tokens: int) -> tuple[int, list[int]]:
    """(ns to the first token, ns of each decode step) of one greedy run."""
    start = time.perf_counter_ns()
    token = int(lm.start(prompt)[-1].argmax())
    first = time.perf_counter_ns() - start
    steps = []
    for _ in range(new_tokens):
        t0 = time.perf_counter_ns()
        token = int(lm.step(token).argmax())
        steps.append(time.perf_counter_ns() - t0)
    return first, steps


def _timing(prompt_tokens: int, new_tokens: int, threads: int, budget_s: float, firsts: list[int],
            steps: list[list[int]]) -> GenerationTiming:
    ttft = np.asarray(firsts, dtype=np.float64) / 1e6
    per_run = [len(s) / (sum(s) / 1e9) for s in steps if s and sum(s) > 0]
    every = np.asarray([x for s in steps for x in s] or [0], dtype=np.float64) / 1e6
    return GenerationTiming(prompt_tokens=prompt_tokens, new_tokens=new_tokens, threads=threads,
                            ttft_ms=float(np.percentile(ttft, 50)), ttft_p90_ms=float(np.percentile(ttft, 90)),
                            decode_tokens_per_s=float(np.median(per_run)) if per_run else 0.0,
                            decode_ms_per_token=float(np.percentile(every, 50)), runs=len(firsts), budget_s=budget_s)


def time_generation(lms: Sequence[CausalLM], prompt_lengths: Sequence[int] = (128, 512), new_tokens: int = 32,
                    budget_s: float = 5.0, *, threads: int = 1, min_runs: int = 3,
                    vocab: int | None = None, seed: int = 0) -> list[list[GenerationTiming]]:
    """For each model, one ``GenerationTiming`` per prompt length: prompts of seeded random token ids (the same for
    every model), then ``new_tokens`` greedy decode steps. Runs alternate between the models (one run each per
    round) until every model has had ``budget_s`` of timed runs at that length and ``min_runs`` runs; one untimed
    run each first. With one thread everything runs pinned to one core (``eval.timing.one_core``)."""
    from optkit.eval.timing import one_core

    if not lms:
        return []
    if vocab is None:
        vocab = int(lms[0].start(np.zeros((1, 1), dtype=np.int64)).shape[-1])
    out: list[list[GenerationTiming]] = [[] for _ in lms]
    with one_core(threads):
        for n, length in enumerate(prompt_lengths):
            prompt = _prompt(int(length), vocab, seed + n)
            for lm in lms:
                _one_run(lm, prompt, min(new_tokens, 2))  # warm-up: allocations, kernel selection
            firsts: list[list[int]] = [[] for _ in lms]
            steps: list[list[list[int]]] = [[] for _ in lms]
            spent = [0] * len(lms)
            gc_was_enabled = gc.isenabled()
            gc.collect()
            gc.disable()
            try:
                while min(spent) < budget_s * 1e9 or min(len(f) for f in firsts) < min_runs:
                    for i, lm in enumerate(lms):
                        first, decode = _one_run(lm, prompt, new_tokens)
                        firsts[i].append(first)
                        steps[i].append(decode)
                        spent[i] += first + sum(decode)
            finally:
                if gc_was_enabled:
                    gc.enable()
            for i in range(len(lms)):
                out[i].append(_timing(int(length), new_tokens, threads, budget_s, firsts[i], steps[i]))
    return out
