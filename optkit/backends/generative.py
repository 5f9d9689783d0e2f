"""Generative (causal language model) artifacts as the evaluation loop drives them: a prompt in, then one token at
a time, with the runtime keeping its own KV cache.

Every runtime that runs a causal LM (transformers on torch, ONNX Runtime on an export with past key/values,
OpenVINO on a stateful IR, later openvino-genai or onnxruntime-genai) implements ``CausalLM``; the loop that picks
tokens, the perplexity, the token agreement and the timing (time to first token, decode tokens/s) live once in
``eval/generation.py``, so every artifact is measured on the same prompts with the same method. A backend says it
can run generative artifacts of its format through ``GENERATORS`` (format -> dotted path of its ``CausalLM``
subclass), imported only when used.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

from optkit.types.errors import UsageError
from optkit.types.lazy import load_dotted

if TYPE_CHECKING:
    import numpy as np

    from optkit.types.artifact import Artifact

# format -> "module:CausalLM subclass"; a new generative runtime adds one line (tests register fakes here too)
GENERATORS: dict[str, str] = {
    "torch": "optkit.backends.hf_causal:TorchCausalLM",
    "onnx": "optkit.backends.onnx_causal:OrtCausalLM",
    "openvino": "optkit.backends.openvino_causal:OVCausalLM",
}


class CausalLM(ABC):
    """One loaded generative model with one sequence in flight (batch 1)."""

    format: ClassVar[str]

    @abstractmethod
    def __init__(self, artifact: "Artifact", threads: int = 1) -> None:
        """Load ``artifact`` for ``threads`` CPU threads."""

    @abstractmethod
    def start(self, input_ids: np.ndarray) -> np.ndarray:
        """Forget any earlier sequence, run the prompt (int64 ``[1, T]``) and return the logits of every position
        (float32 ``[T, vocab]``): the last row picks the first new token, all rows give the perplexity."""

    @abstractmethod
    def step(self, token: int) -> np.ndarray:
        """Append ``token`` to the sequence in flight and return the next position's logits (``[vocab]``)."""

    def close(self) -> None:
        """Release the runtime's resources."""

    def __enter__(self) -> "CausalLM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_causal_lm(artifact: "Artifact", threads: int = 1) -> CausalLM:
    target = GENERATORS.get(artifact.format)
    if target is None:
        raise UsageError(f"no runtime optkit knows generates text from a {artifact.format} artifact",
                         hint=f"Generative formats: {', '.join(GENERATORS) or 'none installed'}")
    cls: type[CausalLM] = load_dotted(target)
    return cls(artifact, threads=threads)


def greedy(lm: CausalLM, input_ids: np.ndarray, max_new_tokens: int, stop: tuple[int, ...] = ()) -> list[int]:
    """The greedy continuation of a prompt (``[1, T]``): at most ``max_new_tokens`` new tokens, ending at the first
    of ``stop`` (kept). What an export is verified with against transformers' own ``generate(do_sample=False)``."""
    out: list[int] = []
    logits = lm.start(input_ids)[-1]
    while len(out) < max_new_tokens:
        token = int(logits.argmax())
        out.append(token)
        if token in stop or len(out) == max_new_tokens:
            break
        logits = lm.step(token)
    return out
