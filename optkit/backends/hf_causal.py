"""A Hugging Face causal LM run by transformers on torch, one token at a time with its own KV cache.

``TorchCausalLM`` is the torch entry of ``backends/generative.GENERATORS``: the folder's ``AutoModelForCausalLM``
(fp32, eval mode, no gradients) fed the prompt once and then one token per step with the ``past_key_values`` the
previous call returned (``use_cache=True``), which is what ``generate`` does; greedy decoding through it gives
``generate(do_sample=False)``'s tokens.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optkit.backends.generative import CausalLM
from optkit.types.errors import UsageError, first_line
from optkit.types.lazy import require

if TYPE_CHECKING:
    import numpy as np

    from optkit.types.artifact import Artifact

GENERATION = "text-generation"


def load_causal_model(artifact: Artifact) -> Any:
    """The artifact's ``AutoModelForCausalLM`` (safetensors, fp32, eval mode); a UsageError for anything that is
    not a Hugging Face causal LM folder."""
    src = artifact.source
    if artifact.format != "torch" or not src.is_hf or src.task != GENERATION:
        what = f"a {src.task} model" if src.is_hf else f"not a Hugging Face causal language model ({artifact.format})"
        raise UsageError(f"{artifact.path.name} is {what}; text generation needs a causal LM",
                         hint="Pass a folder whose config.json names a *ForCausalLM architecture "
                              "(or --task text-generation)")
    transformers = require("transformers", "Hugging Face causal language models")
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(src.hf_folder), use_safetensors=True, trust_remote_code=src.trust_remote_code)
    except (OSError, ValueError, KeyError, TypeError, ImportError, RuntimeError) as exc:
        raise UsageError(f"transformers cannot load {src.hf_folder.name} as a causal LM: {first_line(exc, 200)}",
                         hint="Re-save the model with save_pretrained") from exc
    return model.float().eval()


class TorchCausalLM(CausalLM):
    format = "torch"

    def __init__(self, artifact: Artifact, threads: int = 1) -> None:
        torch = require("torch", "Hugging Face causal language models")
        if threads > 0:
            torch.set_num_threads(threads)
        self._torch = torch
        self.model = load_causal_model(artifact)
        # transformers 5.x names the KV cache argument ``cache`` (``past_key_values`` is deprecated); a model class
        # that still has only the old name gets that
        import inspect

        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._past: Any = None

    def _forward(self, ids: Any) -> Any:
        with self._torch.inference_mode():
            out = self.model(input_ids=ids, use_cache=True, return_dict=True, **{self._cache_arg: self._past})
        self._past = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
        return out.logits[0].float().numpy()

    def start(self, input_ids: np.ndarray) -> np.ndarray:
        self._past = None
        return self._forward(self._torch.as_tensor(input_ids, dtype=self._torch.long).reshape(1, -1))

    def step(self, token: int) -> np.ndarray:
        if self._past is None:
            raise RuntimeError("step() before start()")
        return self._forward(self._torch.tensor([[int(token)]], dtype=self._torch.long))[-1]

    def close(self) -> None:
        self._past = None
