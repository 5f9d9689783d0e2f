"""OpenVINO conversion writes the same bytes for the same model, whatever ran before it in the process."""
from __future__ import annotations

import re

import pytest


@pytest.mark.slow
def test_one_model_converts_to_the_same_xml_after_other_conversions(tiny_onnx, tmp_path):
    pytest.importorskip("openvino")
    from optkit.backends.openvino import convert

    convert(tiny_onnx, tmp_path / "first.xml")
    convert(tiny_onnx, tmp_path / "other.xml", compress_to_fp16=True)  # advances OpenVINO's name counters
    convert(tiny_onnx, tmp_path / "again.xml")
    first, again = (tmp_path / "first.xml").read_bytes(), (tmp_path / "again.xml").read_bytes()
    assert first == again and (tmp_path / "first.bin").read_bytes() == (tmp_path / "again.bin").read_bytes()
    numbered = re.findall(rb'name="Constant_(\d+)"', first)
    assert numbered and sorted(map(int, numbered))[0] == 1  # renumbered from 1 in graph order
