"""Hugging Face models as ``nn.Module``s that take the tokenizer's tensors and return what the task exports.

The model class follows the task (``AutoModel`` for features and sentence embeddings, ``AutoModelFor...`` for
classification heads). Weights come from safetensors; a ``pytorch_model.bin`` is read by optkit itself with
``torch.load(weights_only=True)`` and handed over as a state dict, never unpickled by anyone else. A
sentence-transformers folder's Pooling and Normalize modules are applied exactly as its config says (CLS, mean,
max or mean-sqrt-len pooling over the attention mask, then L2 normalisation), so the exported embedding is the
one ``SentenceTransformer.encode`` returns.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from optkit.types.artifact import Artifact
from optkit.types.errors import UsageError, first_line
from optkit.types.lazy import require

_AUTO = {"feature-extraction": "AutoModel", "sentence-embedding": "AutoModel",
         "text-classification": "AutoModelForSequenceClassification",
         "token-classification": "AutoModelForTokenClassification",
         "image-classification": "AutoModelForImageClassification",
         "text-generation": "AutoModelForCausalLM"}


def _pool(hidden, mask, config: dict[str, Any]):
    import torch

    mask = mask.unsqueeze(-1).to(hidden.dtype)
    parts = []
    if config.get("pooling_mode_cls_token"):
        parts.append(hidden[:, 0])
    if config.get("pooling_mode_max_tokens"):
        parts.append(torch.where(mask > 0, hidden, torch.full_like(hidden, -1e9)).max(dim=1).values)
    if config.get("pooling_mode_mean_tokens") or config.get("pooling_mode_mean_sqrt_len_tokens"):
        summed, count = (hidden * mask).sum(dim=1), mask.sum(dim=1).clamp(min=1e-9)
        if config.get("pooling_mode_mean_tokens"):
            parts.append(summed / count)
        if config.get("pooling_mode_mean_sqrt_len_tokens"):
            parts.append(summed / count.sqrt())
    if not parts:
        raise UsageError("the sentence-transformers Pooling config enables no pooling mode optkit supports "
                         "(cls, mean, max, mean_sqrt_len)", hint="Export with --task feature-extraction")
    return torch.cat(parts, dim=1)


def _wrapper(model, task: str, input_names: list[str], modules: list[dict[str, Any]]):
    torch = require("torch", "Hugging Face models")

    module_base: Any = torch.nn.Module

    class HFTask(module_base):
        """Positional tensors in ``input_names`` order -> the task's one output."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.config = model.config  # export switches attention implementations through it

        def forward(self, *args):
            kwargs = dict(zip(input_names, args))
            if task == "text-generation":  # the plain runner's logits of every position; generating keeps a cache
                return self.model(**kwargs, use_cache=False, return_dict=True).logits
            out = self.model(**kwargs, return_dict=True)
            if task in ("text-classification", "token-classification", "image-classification"):
                return out.logits
            hidden = out.last_hidden_state
            if task == "feature-extraction":
                return hidden
            result = hidden
            for module in modules:
                if module["type"] == "Pooling":
                    result = _pool(hidden, kwargs["attention_mask"], module["config"])
                elif module["type"] == "Normalize":
                    result = torch.nn.functional.normalize(result, p=2, dim=1)
            return result

    # torch.export matches inputs to forward's parameters: give it the tensors' names, not *args
    import inspect

    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in input_names]
    setattr(HFTask.forward, "__signature__", inspect.Signature(params))
    return HFTask()


def load_hf_module(artifact: Artifact):
    """The artifact's Hugging Face model with its task head, in eval mode, fp32."""
    transformers = require("transformers", "Hugging Face models")
    transformers.utils.logging.disable_progress_bar()  # optkit's own progress lines say what is happening
    transformers.utils.logging.set_verbosity_error()
    src = artifact.source
    folder, task = src.hf_folder, src.hf_task
    kwargs: dict[str, Any] = {"trust_remote_code": src.trust_remote_code}
    bins = [Path(f) for f in src.files if Path(f).name == "pytorch_model.bin"]
    auto = getattr(transformers, _AUTO[task])
    try:
        if bins:
            model = _from_bin(auto, folder, bins[0], kwargs)
        else:
            model = auto.from_pretrained(str(folder), use_safetensors=True, **kwargs)
    except (OSError, ValueError, KeyError, TypeError, ImportError, RuntimeError) as exc:
        raise UsageError(f"transformers cannot load {folder.name} for {task}: {first_line(exc, 200)}",
                         hint="Check --task, or re-save the model with save_pretrained") from exc
    names = [t.name for t in artifact.inputs] or default_input_names(artifact)
    return _wrapper(model.float().eval(), task, names, src.modules).eval()


def _from_bin(auto, folder: Path, weights: Path, kwargs: dict[str, Any]):
    """A ``pytorch_model.bin`` folder: optkit reads the weights with ``torch.load(weights_only=True)`` and hands
    transformers a safetensors copy in a scratch folder, so nothing else ever unpickles the file."""
    import shutil

    from safetensors.torch import save_file

    from optkit.backends.torch_factory import load_state_dict
    from optkit.types.files import scratch_folder

    state = load_state_dict(weights)  # refuses anything but tensors
    with scratch_folder() as tmp:
        for name in ("config.json", "generation_config.json"):
            if (folder / name).is_file():
                shutil.copyfile(folder / name, tmp / name)
        save_file({k: v.detach().clone().contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        return auto.from_pretrained(str(tmp), use_safetensors=True, **kwargs)


def default_input_names(artifact: Artifact) -> list[str]:
    if artifact.source.is_image_model:
        return ["pixel_values"]
    return ["input_ids", "attention_mask"]
