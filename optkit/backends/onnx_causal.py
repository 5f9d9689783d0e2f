"""ONNX Runtime on a causal-LM export with past key/values (``steps/_causal_export.py``), as a ``CausalLM``.

The graph's inputs are ``input_ids``, ``attention_mask``, ``position_ids`` and ``past_key_values.{i}.key/value``
(batch, kv_heads, past_sequence, head_dim); its outputs ``logits`` and ``present.{i}.key/value``. The prompt runs
against an empty past (length 0), then each new token against the presents of the call before: one graph, the KV
cache held here as numpy arrays. The fp32 export and a weight-only quantized one (MatMulNBits) run alike.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from optkit.backends.generative import CausalLM
from optkit.types.errors import UsageError
from optkit.types.lazy import require

if TYPE_CHECKING:
    from optkit.types.artifact import Artifact

from optkit.backends.onnx_io import KV_INPUT_PREFIX, KV_OUTPUT_PREFIX


def _np_dtype(ort_type: str) -> type:
    return {"tensor(float16)": np.float16, "tensor(float)": np.float32}.get(ort_type, np.float32)


class OrtCausalLM(CausalLM):
    format = "onnx"

    def __init__(self, artifact: "Artifact", threads: int = 1) -> None:
        from optkit.backends.onnxruntime import session_options

        ort = require("onnxruntime", "running ONNX models")
        try:
            self.session = ort.InferenceSession(str(artifact.path), sess_options=session_options(threads),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:
            text = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"ONNX Runtime cannot load {artifact.path}: {text}",
                             hint="Re-export the model with 'optkit export'") from exc
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.past_names = [n for n in inputs if n.startswith(KV_INPUT_PREFIX)]
        if "input_ids" not in inputs or not self.past_names:
            raise UsageError(f"{artifact.path} is not a causal-LM export with a KV cache (inputs: "
                             f"{', '.join(list(inputs)[:6])})",
                             hint="Export a text-generation model with 'optkit export' (past_key_values inputs)")
        self.output_names = [o.name for o in self.session.get_outputs()]
        # present.{i}.key answers past_key_values.{i}.key of the next call
        self.present_for = {n: KV_OUTPUT_PREFIX + n[len(KV_INPUT_PREFIX):] for n in self.past_names}
        missing = [p for p in self.present_for.values() if p not in self.output_names]
        if missing or "logits" not in self.output_names:
            raise UsageError(f"{artifact.path} lacks outputs {', '.join(missing or ['logits'])}",
                             hint="Re-export the model with 'optkit export'")
        self.has_mask = "attention_mask" in inputs
        self.has_positions = "position_ids" in inputs
        self._empty: dict[str, np.ndarray] = {}
        for name in self.past_names:
            shape = inputs[name].shape  # (batch, kv_heads, past_sequence, head_dim)
            if not (isinstance(shape[1], int) and isinstance(shape[3], int)):
                raise UsageError(f"{artifact.path}: {name} has no fixed heads/head size ({shape})",
                                 hint="Re-export the model with 'optkit export'")
            self._empty[name] = np.zeros((1, shape[1], 0, shape[3]), dtype=_np_dtype(inputs[name].type))
        self._past: dict[str, np.ndarray] = {}
        self._length = 0

    def _run(self, ids: np.ndarray) -> np.ndarray:
        count = ids.shape[1]
        feed: dict[str, np.ndarray] = {"input_ids": ids.astype(np.int64), **self._past}
        if self.has_mask:
            feed["attention_mask"] = np.ones((1, self._length + count), dtype=np.int64)
        if self.has_positions:
            feed["position_ids"] = np.arange(self._length, self._length + count, dtype=np.int64)[None]
        outs = dict(zip(self.output_names, self.session.run(self.output_names, feed)))
        self._past = {n: outs[p] for n, p in self.present_for.items()}
        self._length += count
        return np.asarray(outs["logits"][0], dtype=np.float32)

    def start(self, input_ids: np.ndarray) -> np.ndarray:
        self._past = dict(self._empty)
        self._length = 0
        return self._run(np.asarray(input_ids).reshape(1, -1))

    def step(self, token: int) -> np.ndarray:
        if not self._past:
            raise RuntimeError("step() before start()")
        return self._run(np.array([[token]], dtype=np.int64))[-1]

    def close(self) -> None:
        self.session = None
        self._past = {}
