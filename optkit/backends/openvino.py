"""OpenVINO backend: convert ONNX to IR (.xml + .bin) and run it on the CPU plugin (compile --target openvino-cpu).

Precision is explicit. The CPU plugin's default inference precision on CPUs with bf16 support is
bf16, which changes outputs; optkit always sets ``INFERENCE_PRECISION_HINT`` from the artifact's
runtime record (f32 unless compiled for bf16). ``ov.save_model`` compresses weights to fp16
unless told not to; optkit saves full precision unless ``compress_to_fp16`` is asked.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from optkit.backends import Backend, Runner
from optkit.backends.compiling import AccuracyControl, Compiled, CompileFacts, CompileRequest, CompileTarget, Feed
from optkit.types.artifact import Artifact, TensorSpec
from optkit.types.errors import UsageError
from optkit.types.lazy import require
from optkit.types.sidecar import checked_runtime

PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8 layers run int8; the rest f32


def cpu_capabilities() -> list[str]:
    """OpenVINO's view of this CPU (e.g. FP32, INT8, BF16): bf16 without 'BF16' here is emulated."""
    return list(_ov().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def _ov():
    return require("openvino", "OpenVINO artifacts")


def read_io_specs(xml: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    ov = _ov()
    try:
        model = ov.Core().read_model(str(xml))
    except Exception as exc:
        raise UsageError(f"{xml} is not a readable OpenVINO IR ({str(exc).strip().splitlines()[0][:160]})",
                         hint="Re-create it with 'optkit compile --target openvino-cpu'") from exc

    def spec(port, i: int, prefix: str) -> TensorSpec:
        shape = tuple(d.get_length() if d.is_static else "batch" if j == 0 else f"dim{j}"
                      for j, d in enumerate(port.get_partial_shape()))
        name = next(iter(port.get_names()), f"{prefix}_{i}")
        return TensorSpec(name, shape, port.get_element_type().to_dtype().name)

    return ([spec(p, i, "input") for i, p in enumerate(model.inputs)],
            [spec(p, i, "output") for i, p in enumerate(model.outputs)])


def convert(onnx_path: Path, xml_out: Path, *, compress_to_fp16: bool = False, quantize_with: list[Feed] | None = None,
            transformer: bool = False, accuracy_control: AccuracyControl | None = None, preset: str = "performance",
            fast_bias_correction: bool = True) -> dict[str, Any]:
    """ONNX -> IR. ``quantize_with``: the calibration feeds for NNCF post-training int8 (all of them are used);
    ``transformer`` selects NNCF's transformer scheme (keeps sensitive ops such as Softmax/LayerNorm float);
    ``accuracy_control``: NNCF's quantization with accuracy control, validated on the same feeds, which returns
    the most harmful layers to float until the score is within the drop. ``preset``: NNCF's
    performance (symmetric activations) or mixed (asymmetric activations: for non-ReLU, shifted ranges);
    ``fast_bias_correction`` off runs NNCF's slower, more exact bias correction."""
    ov = _ov()
    try:
        model = ov.convert_model(str(onnx_path))
    except Exception as exc:  # OpConversionFailure and friends: the graph holds ops OpenVINO cannot read
        text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        ops = sorted({w.strip("(),.") for w in text.split() if w.startswith("com.microsoft")})
        raise UsageError(f"OpenVINO cannot convert {Path(onnx_path).name}"
                         + (f": unsupported ops {', '.join(ops)}" if ops else f" ({text[:200]})"),
                         hint="Compile a model with standard ONNX ops (before 'fuse --level extended' or dynamic "
                              "'quantize', whose ONNX Runtime-only ops OpenVINO does not read)") from exc
    details: dict[str, Any] = {"compress_to_fp16": compress_to_fp16}
    if quantize_with is not None:
        nncf = require("nncf", "OpenVINO int8 post-training quantization")
        feeds, subset = quantize_with, len(quantize_with)
        names = [p.get_any_name() for p in model.inputs]
        dataset = nncf.Dataset(feeds, lambda feed: {n: feed[n] for n in names})
        kind = {"model_type": nncf.ModelType.TRANSFORMER} if transformer else {}
        kind.update({"preset": nncf.QuantizationPreset(preset), "fast_bias_correction": fast_bias_correction})
        if accuracy_control is None:
            model = nncf.quantize(model, dataset, subset_size=subset, **kind)
        else:
            model, facts = _quantize_with_accuracy_control(nncf, model, dataset, feeds, accuracy_control, names, kind)
            details["accuracy_control"] = facts
        details["nncf"] = {"version": getattr(nncf, "__version__", "?"), "subset_size": subset, "preset": preset,
                           "model_type": "transformer" if transformer else "default",
                           **({} if fast_bias_correction else {"fast_bias_correction": False})}
    _stable_names(model)
    ov.save_model(model, str(xml_out), compress_to_fp16=compress_to_fp16)
    fq = sum(1 for op in model.get_ops() if op.get_type_name() == "FakeQuantize")
    details["fake_quantize_nodes"] = fq
    return details


def _stable_names(model) -> None:
    """OpenVINO names the nodes it creates '<Type>_<process-wide counter>' (a folded constant keeps the name of
    the op it came from, e.g. 'Reshape_5090'), so one model converted in two processes, or after another
    conversion, writes different XML. Every 'Word_123' name is renumbered per word in graph order: the same model
    then writes the same bytes. Other names (those the ONNX graph gave, e.g. '/conv1/Conv') are kept."""
    import re

    counts: dict[str, int] = {}
    for op in model.get_ordered_ops():
        auto = re.fullmatch(r"([A-Za-z]+)_\d+", op.get_friendly_name())
        if auto:
            word = auto.group(1)
            counts[word] = counts.get(word, 0) + 1
            op.set_friendly_name(f"{word}_{counts[word]}")


def _quantize_with_accuracy_control(nncf, model, dataset, feeds: list[Feed], control: AccuracyControl,
                                    names: list[str], kind: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    import numpy as np

    subset, score = len(feeds), control.score
    scores: list[float] = []

    def validate(compiled, items) -> float:
        indices: list[int] = []
        chunks: dict[int, list[np.ndarray]] = {}
        for index, feed in items:  # NNCF ranks layers on subsets: the score is told which samples it sees
            indices.append(index)
            result = compiled(feed)
            for i, port in enumerate(compiled.outputs):
                chunks.setdefault(i, []).append(result[port])
        outputs = {compiled.outputs[i].get_any_name(): np.concatenate(v) for i, v in chunks.items()}
        scores.append(score(indices, outputs))
        return scores[-1]

    validation = nncf.Dataset(list(enumerate(feeds)), lambda item: {n: item[1][n] for n in names})
    quantized = nncf.quantize_with_accuracy_control(
        model, dataset, validation, validation_fn=lambda compiled, items: validate(compiled, list(items)),
        max_drop=control.max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=subset, **kind)
    float_ops = [op.get_friendly_name() for op in quantized.get_ops()
                 if op.get_type_name() in ("Convolution", "MatMul") and not any(
                     i.get_node().get_type_name() == "FakeQuantize" for i in op.input_values())]
    return quantized, {"budget": control.budget, "validation_samples": len(feeds),
                       "validation_calls": len(scores), "kept_float_compute_ops": float_ops}


class OpenVINORunner(Runner):
    format = "openvino"

    @classmethod
    def preload(cls) -> None:
        _ov()

    def __init__(self, artifact: Artifact, threads: int = 1) -> None:
        ov = _ov()
        precision = checked_runtime(artifact.runtime).get("inference_precision", "f32")  # only the hints compile writes
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
                                  "NUM_STREAMS": 1}
        if threads > 0:
            config["INFERENCE_NUM_THREADS"] = threads
        try:
            core = ov.Core()
            self.compiled = core.compile_model(core.read_model(str(artifact.path)), "CPU", config)
        except Exception as exc:
            raise UsageError(f"OpenVINO cannot load {artifact.path}: {str(exc).strip().splitlines()[0][:200]}",
                             hint="Re-create it with 'optkit compile --target openvino-cpu'") from exc
        self.request = self.compiled.create_infer_request()
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]
        self.output_names = [p.get_any_name() for p in self.compiled.outputs]
        self.stateful = bool(self.request.query_state())  # a causal LM's KV cache (backends/openvino_llm_compile)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.stateful:  # a whole sequence from an empty cache: the logits of every position, as torch's runner
            from optkit.backends.openvino_causal import whole_sequence_feed

            self.request.reset_state()
            feed = whole_sequence_feed(feed)
        result = self.request.infer({n: feed[n] for n in self.input_names})
        return {name: np.array(result[port]) for name, port in zip(self.output_names, self.compiled.outputs)}

    def close(self) -> None:
        self.request = self.compiled = None


def open_ir(xml: Path) -> Artifact:
    inputs, outputs = read_io_specs(xml)
    return Artifact(path=xml, format="openvino", inputs=inputs, outputs=outputs, companions=(".bin",))


def _is_ir(path: Path) -> bool:
    return path.suffix.lower() == ".xml" and path.with_suffix(".bin").is_file()


def compile_cpu(request: CompileRequest) -> Compiled:
    """openvino-cpu: the IR at an explicit precision; int8 converts a QDQ input directly, or quantizes a float one
    with NNCF on the calibration feeds (with accuracy control when the calibration carries one)."""
    from optkit.backends.onnx_io import is_qdq
    from optkit.types.ui import quiet_libraries

    source, options, ui = request.source, request.options, request.ui
    calibration, int8_source = None, "fp32 model"
    if request.precision == "int8":
        if is_qdq(source.path):
            int8_source = "QDQ model (quantized by optkit quantize)"
            for flag, given in (("--calib-data", options.calib_data_given),
                                ("accuracy control", options.accuracy_control_asked)):
                if given:
                    ui.warn(f"{flag} is ignored: the input is already quantized (QDQ), so nothing is calibrated")
        else:
            if request.calibration is None:
                raise ValueError("OpenVINO int8 from a float model needs calibration data")
            dims = [spec.shape[0] for spec in source.inputs if spec.shape]
            static = dims[0] if dims and isinstance(dims[0], int) else None
            calibration = request.calibration(static or 1)  # a fixed batch dimension is fed whole batches
            how = "quantization with accuracy control" if calibration.accuracy_control else "post-training quantization"
            int8_source = f"NNCF {how} on {len(calibration.feeds)} samples of {calibration.source}"
    with quiet_libraries(), ui.status(f"OpenVINO: converting{' and quantizing (NNCF)' if calibration else ''}"):
        facts = convert(source.path, request.out, compress_to_fp16=options.compress_to_fp16,
                        quantize_with=calibration.feeds if calibration else None, transformer=options.transformer,
                        accuracy_control=calibration.accuracy_control if calibration else None,
                        preset=options.nncf_preset, fast_bias_correction=options.fast_bias_correction)
    assert request.out.with_suffix(".bin").is_file(), "OpenVINO wrote its weights under another name"
    out = open_ir(request.out).with_(task=source.task, runtime={"inference_precision": PRECISION_HINT[request.precision],
                                                                "device": "CPU"})
    facts["int8_source"] = int8_source if request.precision == "int8" else None
    if request.precision == "bf16":
        caps = cpu_capabilities()
        facts["bf16_native"] = "BF16" in caps
        if not facts["bf16_native"]:
            ui.warn(f"this CPU has no native bf16 (OpenVINO CPU capabilities: {', '.join(caps)}): bf16 runs "
                    "emulated, measured 4-18x slower than fp32 on such a CPU; use --precision fp32 or int8")
    return Compiled(out, CompileFacts.model_validate(facts))


def _require() -> None:
    require("openvino", "--target openvino-cpu")


BACKEND = Backend(format="openvino", runner=OpenVINORunner, recognises=_is_ir, open=open_ir, companions=(".bin",),
                  compile_targets={"openvino-cpu": CompileTarget(compile_cpu, require=_require)})
