from __future__ import annotations

import pytest
import torch

from optkit.backends.opening import open_artifact
from optkit.types.artifact import parse_input_shape
from optkit.types.errors import UsageError


def test_parse_input_shape():
    assert parse_input_shape("input:1x1x32x32") == ("input", (1, 1, 32, 32))
    assert parse_input_shape("a:b:2X3") == ("a:b", (2, 3))
    for bad in ("input", "input:", ":1x2", "input:1xa", "input:0x3"):
        with pytest.raises(UsageError):
            parse_input_shape(bad)


def test_folder_is_a_torch_artifact(tiny):
    art = open_artifact(tiny["folder"])
    assert art.format == "torch" and art.source.kind == "factory"
    assert [i.name for i in art.inputs] == ["input"] and art.inputs[0].dynamic_batch
    assert art.eval_data == tiny["eval"].resolve()
    assert art.size_bytes() == tiny["weights"].stat().st_size + tiny["model_py"].stat().st_size
    assert len(art.digest()) == 64


def test_recognises_saved_programs_and_refuses_pickles(tmp_path):
    net = torch.nn.Linear(4, 2).eval()
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 4)), str(tmp_path / "ts.pt"))
    torch.export.save(torch.export.export(net, (torch.zeros(2, 4),)), str(tmp_path / "ep.pt2"))
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    assert open_artifact(tmp_path / "ts.pt").source.kind == "torchscript"
    assert open_artifact(tmp_path / "ep.pt2").source.kind == "exported_program"
    with pytest.raises(UsageError, match="pickled PyTorch checkpoint"):
        open_artifact(tmp_path / "sd.pt")


def test_factory_references(tiny):
    art = open_artifact(f"{tiny['model_py']}:build", weights=tiny["weights"])
    assert art.source.weights == str(tiny["weights"].resolve())
    assert open_artifact("some.module:build").source.factory == "some.module:build"
    with pytest.raises(UsageError, match="does not exist"):
        open_artifact("missing_dir/model.py:build")


def test_folder_without_spec(tmp_path):
    with pytest.raises(UsageError, match="optkit.yaml"):
        open_artifact(tmp_path)


def test_bad_spec_names_the_key(tmp_path):
    (tmp_path / "optkit.yaml").write_text("name: x\nfactory: m.py:build\ninputs: []\nweigths: w.pt\n")
    with pytest.raises(UsageError, match="weigths"):
        open_artifact(tmp_path)


def test_empty_and_foreign_files(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    with pytest.raises(UsageError, match="empty"):
        open_artifact(tmp_path / "empty.onnx")
    (tmp_path / "x.bin").write_bytes(b"\x00\x01\x02")
    with pytest.raises(UsageError, match="not a model"):
        open_artifact(tmp_path / "x.bin")


def test_onnx_specs_and_sidecar(tiny_onnx):
    art = open_artifact(tiny_onnx)
    assert art.format == "onnx"
    assert art.inputs[0].shape == ("batch", 1, 8, 8) and art.outputs[0].name == "logits"
    assert art.record.step == "export" and art.lineage[0].step == "original"
    assert art.reference is not None and art.eval_data is not None and art.eval_data.name == "eval.npz"
    assert [r.step for r in art.chain()] == ["original", "export"]


def test_corrupt_sidecar(tiny_onnx, tmp_path):
    copy = tmp_path / "m.onnx"
    copy.write_bytes(tiny_onnx.read_bytes())
    (tmp_path / "m.onnx.optkit.json").write_text("{not json")
    with pytest.raises(UsageError, match="sidecar"):
        open_artifact(copy)
