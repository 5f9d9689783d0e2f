"""KServe's Open Inference Protocol (v2) over REST: JSON tensors and the binary tensor data extension.

``parse_infer`` turns a request body into named numpy arrays checked against the model's inputs (name, datatype,
rank, fixed dimensions, element count); anything wrong raises ``ProtocolError`` whose message names the problem
(the server answers 400 with it). ``encode_infer`` builds the response, JSON or binary per output as asked.
No web framework is imported here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from optkit.types.artifact import TensorSpec

# v2 datatype <-> numpy dtype (BYTES is not served: optkit's models take numeric tensors)
DATATYPES: dict[str, str] = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64",
}
V2_OF = {np.dtype(v).name: k for k, v in DATATYPES.items()}
HEADER_LENGTH = "Inference-Header-Content-Length"


class ProtocolError(ValueError):
    """A request the model cannot take; ``status`` is the HTTP status it is answered with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: list[str]                                  # names asked for, in order (empty: all)
    binary: dict[str, bool] = field(default_factory=dict)  # per output: answer as binary data
    binary_default: bool = False

    @property
    def rows(self) -> int:
        return int(next(iter(self.inputs.values())).shape[0])


def v2_shape(spec: TensorSpec) -> list[int]:
    return [d if isinstance(d, int) else -1 for d in spec.shape]


def tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": V2_OF.get(np.dtype(spec.dtype).name, "FP32"), "shape": v2_shape(spec)}


def _json_header(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} is not a number: {header_length[:40]!r}") from None
        if not 0 < n <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {n} does not fit a body of {len(body)} bytes")
        head, rest = body[:n], body[n:]
    else:
        head, rest = body, b""
    try:
        doc = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"the body is not valid JSON ({exc})") from None
    except RecursionError:  # [[[[...]]]] 100,000 deep: the parser's own limit, not a server failure
        raise ProtocolError("the body's JSON is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ProtocolError("the body must be a JSON object with an 'inputs' list")
    return doc, rest


def _check_shape(name: str, shape: Any, spec: TensorSpec) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise ProtocolError(f"input '{name}': shape must be a list of non-negative integers")
    if len(shape) != len(spec.shape):
        raise ProtocolError(f"input '{name}': shape {shape} has rank {len(shape)}; the model takes "
                            f"{v2_shape(spec)}")
    for axis, (got, want) in enumerate(zip(shape, spec.shape)):
        if isinstance(want, int) and axis > 0 and got != want:
            raise ProtocolError(f"input '{name}': dimension {axis} is {got}; the model takes {v2_shape(spec)}")
    if not shape or shape[0] < 1:
        raise ProtocolError(f"input '{name}': the first (batch) dimension must be at least 1")
    return tuple(shape)


def _json_data(name: str, data: Any, dtype: np.dtype, want_type: str) -> np.ndarray:
    """JSON numbers as ``dtype``: strings, nested objects and (for integer inputs) non-integer numbers are refused,
    not converted (numpy would read "1" as 1 and truncate 1.7 to 1); integers beyond the type's range too."""
    try:
        raw = np.asarray(data)
    except (TypeError, ValueError, OverflowError, RecursionError):
        raise ProtocolError(f"input '{name}': data is not a list of {want_type} numbers") from None
    if raw.dtype.kind not in "biuf":
        raise ProtocolError(f"input '{name}': data is not a list of {want_type} numbers")
    if dtype.kind in "biu" and raw.dtype.kind == "f" and (not np.isfinite(raw).all() or (raw != np.round(raw)).any()):
        raise ProtocolError(f"input '{name}': {want_type} data holds non-integer values")
    if dtype.kind in "iu" and raw.size:
        info = np.iinfo(dtype)
        if raw.min() < info.min or raw.max() > info.max:
            raise ProtocolError(f"input '{name}': data holds values beyond {want_type}'s range")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # FP16 overflow is refused as non-finite next
            return raw.astype(dtype, copy=False)
    except (TypeError, ValueError, OverflowError):
        raise ProtocolError(f"input '{name}': data is not a list of {want_type} numbers") from None


def parse_infer(body: bytes, header_length: str | None, specs: dict[str, TensorSpec]) -> InferRequest:
    doc, binary = _json_header(body, header_length)
    items = doc.get("inputs")
    if not isinstance(items, list) or not items:
        raise ProtocolError("'inputs' must be a non-empty list of tensors")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError("every input needs a 'name'")
        name = item["name"]
        if name not in specs:
            raise ProtocolError(f"unknown input '{name}'; the model takes {', '.join(specs)}")
        if name in arrays:
            raise ProtocolError(f"input '{name}' is given twice")
        spec = specs[name]
        want_type = V2_OF.get(np.dtype(spec.dtype).name)
        if item.get("datatype") != want_type:
            raise ProtocolError(f"input '{name}': datatype {item.get('datatype')!r}; the model takes {want_type}")
        shape = _check_shape(name, item.get("shape"), spec)
        count = int(np.prod(shape))
        dtype = np.dtype(spec.dtype)
        params = item.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            if not isinstance(size, int) or size != count * dtype.itemsize or offset + size > len(binary):
                raise ProtocolError(f"input '{name}': binary_data_size {size!r} does not match shape {list(shape)} "
                                    f"of {want_type} or the bytes sent")
            arr = np.frombuffer(binary, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += size
        else:
            data = item.get("data")
            if data is None:
                raise ProtocolError(f"input '{name}' has no 'data' (nor binary_data_size)")
            arr = _json_data(name, data, dtype, str(want_type))
            if arr.size != count:
                raise ProtocolError(f"input '{name}': {arr.size} values for shape {list(shape)} ({count} expected)")
            arr = arr.reshape(shape)
        if dtype.kind == "f" and not np.isfinite(arr).all():
            raise ProtocolError(f"input '{name}': data holds NaN or infinite values"
                                + (f" (or values beyond {want_type}'s range)" if dtype.itemsize < 8 else ""))
        arrays[name] = arr
    missing = [n for n in specs if n not in arrays]
    if missing:
        raise ProtocolError(f"missing input{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes of binary data are not claimed by any input")
    rows = {a.shape[0] for a in arrays.values()}
    if len(rows) > 1:
        raise ProtocolError(f"inputs disagree on the batch dimension: {sorted(rows)}")
    params = doc.get("parameters") or {}
    binary_default = bool(params.get("binary_data_output")) if isinstance(params, dict) else False
    outputs, flags = [], {}
    for item in doc.get("outputs") or []:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise ProtocolError("every requested output needs a 'name'")
        outputs.append(item["name"])
        p = item.get("parameters") or {}
        if isinstance(p, dict) and "binary_data" in p:
            flags[item["name"]] = bool(p["binary_data"])
    rid = doc.get("id")
    return InferRequest(str(rid) if rid is not None else None, arrays, outputs, flags, binary_default)


def encode_infer(model: str, request: InferRequest, outputs: dict[str, np.ndarray],
                 order: list[str]) -> tuple[bytes, dict[str, str]]:
    """(body, headers): JSON, or JSON header + raw bytes when any output is asked as binary data."""
    names = request.outputs or order
    unknown = [n for n in names if n not in outputs]
    if unknown:
        raise ProtocolError(f"unknown output '{unknown[0]}'; the model gives {', '.join(order)}")
    items, blobs = [], []
    for name in names:
        arr = np.ascontiguousarray(outputs[name])
        item: dict[str, Any] = {"name": name, "datatype": V2_OF.get(arr.dtype.name, "FP32"), "shape": list(arr.shape)}
        if request.binary.get(name, request.binary_default):
            blob = arr.tobytes()
            item["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            item["data"] = arr.ravel().tolist()
        items.append(item)
    doc: dict[str, Any] = {"model_name": model, "outputs": items}
    if request.id is not None:
        doc["id"] = request.id
    head = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
