"""A stateful causal-LM IR (``backends/openvino_llm_compile.py``) run by OpenVINO's CPU plugin, one sequence at a
time, as ``backends/generative.CausalLM``.

The KV cache is the infer request's state: ``start`` resets it and runs the prompt, ``step`` feeds one token with
the whole attention mask and its position. Precision is explicit: f32 inference (the CPU plugin would pick bf16 on
a CPU with bf16) and an f32 KV cache (it would quantize the cache to u8 by default), so an uncompressed IR gives
transformers' own greedy tokens. A weight-compressed IR keeps the plugin's dynamic quantization of activations, as
openvino-genai runs it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optkit.backends.generative import CausalLM
from optkit.types.errors import UsageError
from optkit.types.lazy import require
from optkit.types.sidecar import checked_runtime

if TYPE_CHECKING:
    import numpy as np

    from optkit.types.artifact import Artifact


def sequence_feed(input_ids: "np.ndarray", cached: int) -> dict[str, "np.ndarray"]:
    """One request's inputs for batch-1 tokens ``input_ids`` ([1, T]) after ``cached`` tokens already in the state."""
    import numpy as np

    n = input_ids.shape[1]
    return {"input_ids": input_ids.astype(np.int64), "attention_mask": np.ones((1, cached + n), dtype=np.int64),
            "position_ids": np.arange(cached, cached + n, dtype=np.int64)[None], "beam_idx": np.zeros(1, np.int32)}


def whole_sequence_feed(feed: dict[str, "np.ndarray"]) -> dict[str, "np.ndarray"]:
    """A batch of whole (right-padded) sequences from an empty cache, as the plain runner feeds the data splits:
    positions 0..T-1 and each row its own cache row (``beam_idx``), where the feed has only ids and mask."""
    import numpy as np

    batch, length = feed["input_ids"].shape
    return {"attention_mask": np.ones((batch, length), dtype=np.int64),
            "position_ids": np.broadcast_to(np.arange(length, dtype=np.int64), (batch, length)).copy(),
            "beam_idx": np.arange(batch, dtype=np.int32), **feed}


class OVCausalLM(CausalLM):
    format = "openvino"

    def __init__(self, artifact: "Artifact", threads: int = 1) -> None:
        ov = require("openvino", "OpenVINO artifacts")
        precision = checked_runtime(artifact.runtime).get("inference_precision", "f32")
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "KV_CACHE_PRECISION": "f32",
                                  "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            core = ov.Core()
            model = core.read_model(str(artifact.path))
            self.compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:
            raise UsageError(f"OpenVINO cannot load {artifact.path}: {str(exc).strip().splitlines()[0][:200]}",
                             hint="Re-create it with 'optkit compile --target openvino-cpu'") from exc
        names = {name for port in self.compiled.inputs for name in port.get_names()}
        missing = {"input_ids", "attention_mask", "position_ids", "beam_idx"} - names
        if missing:
            raise UsageError(f"{artifact.path} is not a stateful causal-LM IR (no input {', '.join(sorted(missing))})",
                             hint="Compile the Hugging Face folder with 'optkit compile --target openvino-cpu'")
        self.request = self.compiled.create_infer_request()
        self.logits = self.compiled.output("logits")
        self.cached = 0

    def _run(self, input_ids: "np.ndarray") -> "np.ndarray":
        import numpy as np

        self.request.infer(sequence_feed(input_ids, self.cached))
        self.cached += input_ids.shape[1]
        return np.array(self.request.get_tensor(self.logits).data[0], dtype=np.float32)

    def start(self, input_ids: "np.ndarray") -> "np.ndarray":
        self.request.reset_state()
        self.cached = 0
        return self._run(input_ids)

    def step(self, token: int) -> "np.ndarray":
        import numpy as np

        return self._run(np.array([[token]], dtype=np.int64))[-1]

    def close(self) -> None:
        self.request = self.compiled = None
