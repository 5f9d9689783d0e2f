"""Bring your own model (issue 31, items 5 and 12): ``optimize`` takes export's options and passes them to every
candidate's export and into best.yaml; a factory without data is told its own input names, and optimized on
seeded random inputs it can see; the README's quick start only uses options that exist."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import FAST, invoke

README = Path(__file__).resolve().parents[2] / "README.md"


class _Sent(Exception):
    pass


def test_a_factory_without_shapes_is_told_its_own_input_names(tiny, tmp_path):
    """The tiny factory's forward is forward(self, x): the hint names x, not an example model's input."""
    result = invoke("optimize", f"{tiny['model_py']}:build", "-o", str(tmp_path / "o"), "--targets", "ort-cpu")
    assert result.exit_code == 2, result.output
    assert "--input-shape x:DIMS" in result.output and "an array named x" in result.output, result.output
    assert "1x1x32x32" not in result.output


def test_optimize_hands_the_export_options_to_the_search(monkeypatch, tmp_path):
    import optkit.optimize.search as engine

    seen: dict = {}

    def record(run):
        seen.update(vars(run))
        raise _Sent

    monkeypatch.setattr(engine, "optimize", record)
    with pytest.raises(_Sent):
        invoke("optimize", "model.py:build", "-o", str(tmp_path / "o"), "--input-shape", "x:1x1x8x8,mask:1x8",
               "--exporter", "torchscript", "--opset", "17", "--dynamic-axis", "none")
    assert seen["input_shapes"] == {"x": [1, 1, 8, 8], "mask": [1, 8]}
    assert seen["export"] == {"exporter": "torchscript", "opset": 17, "dynamic_axes": []}


@pytest.mark.slow
def test_optimize_a_factory_without_data(tiny, tmp_path, monkeypatch):
    """Seeded random inputs in DIR/work/synthetic_eval.npz, said so, judged by cosine; the export options reach the
    shared export and best.yaml, which rebuilds from the cache."""
    import optkit.optimize.search as engine

    real = engine.candidate_space

    def fp32_only(facts, targets, budget, calib_data=None):
        cands, skipped = real(facts, targets, budget, calib_data)
        return [c for c in cands if c.name == "ort-fp32"], skipped

    monkeypatch.setattr(engine, "candidate_space", fp32_only)
    out = tmp_path / "opt"
    result = invoke("optimize", f"{tiny['model_py']}:build", "-o", str(out), "--targets", "ort-cpu",
                    "--input-shape", "x:1x1x8x8", "--exporter", "torchscript", "--opset", "17", "--json", *FAST)
    assert result.exit_code == 0, result.output
    data = out / "work" / "synthetic_eval.npz"
    with np.load(data) as npz:
        assert npz.files == ["x"] and npz["x"].shape == (16, 1, 8, 8)
    said = " ".join(result.stderr.split())
    assert f"written to {data}" in said and "cosine" in said and "--calib-data" in said, said
    export = yaml.safe_load((out / "work" / "00_export.onnx.optkit.json").read_text())["record"]["params"]
    assert (export["exporter"], export["opset"]) == ("torchscript", 17)
    best = yaml.safe_load((out / "best.yaml").read_text())
    assert best["input_shapes"] == {"x": [1, 1, 8, 8]} and best["eval_data"] == str(data)
    assert best["steps"][0] == {"export": {"exporter": "torchscript", "opset": 17}}
    rebuilt = invoke("run", str(out / "best.yaml"), "--json")
    assert rebuilt.exit_code == 0 and "from the cache" in rebuilt.output, rebuilt.output


# ----------------------------------------------------------------------------- the README's quick start

def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"## {title}")
    return text[start:text.index("\n## ", start + 1)]


def test_the_quick_start_comes_before_the_command_table():
    text = README.read_text()
    assert text.index("## Bring your own model") < text.index("## Commands")


def test_each_quick_start_line_uses_real_optimize_options():
    from optkit.cli.app import load_command

    known = {opt for param in load_command("optimize").params for opt in param.opts}
    block = re.search(r"```bash\n(.*?)```", _section("Bring your own model"), re.S).group(1).replace("\\\n", " ")
    lines = [line.split("#")[0].split() for line in block.splitlines() if line.strip().startswith("optkit optimize")]
    models = [words[2] for words in lines]
    assert models == ["model.py:build", "path/to/bert-folder", "model.onnx"]  # factory, Hugging Face, ONNX
    for words in lines:
        flags = [w for w in words if w.startswith("-")]
        assert set(flags) <= known, set(flags) - known
        assert {"--eval-data", "--text-data"} & set(flags), words  # each says which data it needs


def test_the_readme_says_how_to_keep_the_pinned_torch():
    text = _section("Bring your own model")
    assert "torch==2.13.0" in text and "-c torch-pin.txt" in text
    assert "operator torchvision::nms does not exist" in text  # what was seen: PyPI's torchvision beside CPU torch
