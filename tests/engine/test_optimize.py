"""optkit optimize: the candidate space follows the model and the CPU, the search judges and times, the winner's
recipe rebuilds it."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import yaml

from optkit.engine.optimize import NOISE, _choose, parse_duration
from optkit.engine.optimize_space import Budget, ModelFacts, candidate_space
from optkit.types.errors import UsageError
from tests.conftest import invoke, sidecar

VNNI = frozenset({"avx2", "avx512f", "avx512_vnni"})
AVX2 = frozenset({"avx2", "fma"})


def _facts(ops=("Conv", "Relu", "Gemm"), attention=False, calibration=True, flags=VNNI) -> ModelFacts:
    return ModelFacts(ops=frozenset(ops), attention=attention, calibration=calibration, flags=flags)


def _names(cands) -> list[str]:
    return [c.name for c in cands]


def _options(cands, name: str, step: str) -> dict:
    cand = next(c for c in cands if c.name == name)
    return next(s[step] for s in cand.steps if step in s)


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("1.5h", 5400), ("45", 45)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "-5s", "ten minutes", "0"])
def test_a_bad_duration_is_a_usage_error(text):
    with pytest.raises(UsageError, match="--time-budget"):
        parse_duration(text)


def test_a_conv_net_skips_dynamic_int8_and_follows_the_cpu_flags():
    cands, skipped = candidate_space(_facts(flags=VNNI), ("ort-cpu", "openvino-cpu"), Budget(max_drop=0.5))
    assert "ort-int8-dynamic" not in _names(cands)
    assert any(s.name == "ort-int8-dynamic" and "ConvInteger" in s.why for s in skipped)
    full = _options(cands, "ort-int8-static", "quantize")
    assert full["skip_small_convs"] == 0 and full["reduce_range"] is False and full["max_accuracy_drop"] == 0.5
    no_vnni, _ = candidate_space(_facts(flags=AVX2), ("ort-cpu",), Budget())
    assert "skip_small_convs" not in _options(no_vnni, "ort-int8-static", "quantize")  # the saturation-safe default


def test_a_transformer_gets_dynamic_int8_and_the_guard_only_as_a_fallback():
    cands, _ = candidate_space(_facts(ops=("MatMul", "Softmax", "Add"), attention=True), ("ort-cpu",), Budget(max_drop=1))
    assert _names(cands)[:2] == ["ort-fp32", "ort-int8-dynamic"]
    guarded = next(c for c in cands if c.name == "ort-int8-guarded")
    assert guarded.fallback_for == "ort-int8-static-entropy" and _options(cands, "ort-int8-guarded", "quantize")["max_drop"] == 1


def test_without_calibration_data_static_int8_is_skipped_with_the_fix():
    cands, skipped = candidate_space(_facts(calibration=False), ("ort-cpu", "openvino-cpu"), Budget())
    assert not [n for n in _names(cands) if "static" in n or n == "openvino-int8"]
    assert all("--calib-data" in s.why for s in skipped if s.name in ("ort-int8-static", "openvino-int8"))


def test_bf16_only_where_the_cpu_has_it(monkeypatch):
    without, skipped = candidate_space(_facts(flags=VNNI), ("openvino-cpu",), Budget())
    assert "openvino-bf16" not in _names(without) and any("emulated" in s.why for s in skipped)
    with_bf16, _ = candidate_space(_facts(flags=VNNI | {"amx_bf16"}), ("openvino-cpu",), Budget())
    assert "openvino-bf16" in _names(with_bf16)


def test_a_missing_runtime_is_skipped_naming_the_extra(monkeypatch):
    import optkit.engine.optimize_space as space

    monkeypatch.setattr(space, "_installed", lambda module: module != "openvino")
    cands, skipped = candidate_space(_facts(), ("openvino-cpu",), Budget())
    assert cands == [] and "pip install 'optkit[openvino]'" in skipped[0].why


def test_within_noise_the_simpler_candidate_wins():
    def outcome(name, p50, simplicity, size=100):
        return SimpleNamespace(status="built", p50_ms=p50, name=name, candidate=SimpleNamespace(simplicity=simplicity),
                               artifact=SimpleNamespace(size_bytes=lambda: size))

    fast_int8, fp32 = outcome("int8", 1.0, 2), outcome("fp32", 1.0 + NOISE / 2, 0)
    assert _choose([fast_int8, fp32]).name == "fp32"
    clearly_faster = outcome("int8", 0.5, 2)
    assert _choose([clearly_faster, fp32]).name == "int8"
    assert _choose([SimpleNamespace(status="rejected", p50_ms=None)]) is None


def test_optimize_finds_a_winner_and_its_recipe_rebuilds_it(tiny_onnx, tmp_path):
    out = tmp_path / "opt"
    result = invoke("optimize", str(tiny_onnx), "-o", str(out), "--targets", "ort-cpu", "--max-drop", "100",
                    "--budget-s", "0.2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    by_name = {c["name"]: c for c in report["candidates"]}
    assert {"ort-fp32", "ort-int8-static"} <= set(by_name) and report["winner"] in by_name
    assert all(c["p50_ms"] for c in report["candidates"] if c["status"] == "built")  # timed in the one pass
    if by_name["ort-int8-static"]["status"] == "built":  # its costlier fallbacks are not built, and say why
        assert by_name["ort-int8-static-entropy"]["why"] == by_name["ort-int8-guarded"]["why"] == \
            "not needed: ort-int8-static is within budget"
    assert report["environment"]["cpu"]["model"] and {"ort-int8-dynamic", "ort-fp16"} <= {s["name"] for s in report["skipped"]}
    winner = by_name[report["winner"]]
    best = out / "best.onnx"
    assert best.read_bytes() == open(winner["artifact"], "rb").read()
    recipe = yaml.safe_load((out / "best.yaml").read_text())
    assert recipe["model"] == str(tiny_onnx) and recipe["steps"] == winner["steps"]
    rebuilt = invoke("run", str(out / "best.yaml"), "--set", "measure.budget_s=0.05")
    assert rebuilt.exit_code == 0, rebuilt.output
    final = sorted((out / "best").glob("0*_*.onnx"))[-1]
    assert sidecar(final)["record"]["sha256"] == sidecar(winner["artifact"])["record"]["sha256"]
    assert report["judged_on"].startswith("the calibration split") and report["timing_reused_from"] is None
    assert all([v["split"] for v in c["verdicts"]] == ["calibration", "evaluation"]
               for c in report["candidates"] if c["status"] == "built")
    again = invoke("optimize", str(tiny_onnx), "-o", str(out), "--targets", "ort-cpu", "--max-drop", "100",
                   "--budget-s", "0.2", "--json")
    assert again.exit_code == 0, again.output
    rerun = json.loads(again.stdout)
    assert all(c["cached"] for c in rerun["candidates"] if c["status"] == "built")
    # a rerun with every candidate cached reuses the pass's figures and says when they were measured
    assert rerun["timing_reused_from"] and "timings reused from the pass measured at" in rerun["timing"]
    assert [c["p50_ms"] for c in rerun["candidates"]] == [c["p50_ms"] for c in report["candidates"]]
    retimed = json.loads(invoke("optimize", str(tiny_onnx), "-o", str(out), "--targets", "ort-cpu", "--max-drop",
                                "100", "--budget-s", "0.2", "--json", "--retime").stdout)
    assert retimed["timing_reused_from"] is None and retimed["winner"]


@pytest.mark.parametrize("only", ["ort-fp32", "ort-int8-static"])
def test_the_winners_recipe_pins_what_was_chosen_by_timing_and_rebuilds_it(only, tiny_onnx, tmp_path, monkeypatch):
    """compile ort-cpu picks session settings by timing, which can differ between runs: best.yaml names the one
    chosen (ort_session), so `optkit run best.yaml` writes the same bytes."""
    import optkit.engine.optimize as opt

    def just(facts, targets, budget, calib_data=None):
        cands, skipped = candidate_space(facts, targets, budget, calib_data)
        return [c for c in cands if c.name == only], skipped

    monkeypatch.setattr(opt, "candidate_space", just)
    out = tmp_path / "opt"
    result = invoke("optimize", str(tiny_onnx), "-o", str(out), "--targets", "ort-cpu", "--max-drop", "100",
                    "--budget-s", "0.05", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["winner"] == only
    steps = yaml.safe_load((out / "best.yaml").read_text())["steps"]
    if only == "ort-fp32":
        assert steps[-1]["compile"]["ort_session"] in ("default", "extended", "no-mem-pattern", "no-spinning")
    assert invoke("run", str(out / "best.yaml"), "--set", "measure.budget_s=0.05").exit_code == 0
    final = sorted((out / "best").glob("0*_*.onnx"))[-1]
    assert final.read_bytes() == (out / "best.onnx").read_bytes()


def test_no_candidate_within_budget_exits_3_and_still_reports(tiny_onnx, tmp_path, monkeypatch):
    import optkit.engine.optimize as opt

    def int8_only(facts, targets, budget, calib_data=None):  # one candidate that cannot keep cosine 1.0
        cands, skipped = candidate_space(facts, targets, budget, calib_data)
        return [c for c in cands if c.name == "ort-int8-static"], skipped

    monkeypatch.setattr(opt, "candidate_space", int8_only)
    out = tmp_path / "opt"
    result = invoke("optimize", str(tiny_onnx), "-o", str(out), "--targets", "ort-cpu", "--min-cosine", "1.0",
                    "--budget-s", "0.05")
    assert result.exit_code == 3, result.output
    assert "no candidate is within the budget" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["winner"] is None and not (out / "best.yaml").exists()
    assert [c["status"] for c in report["candidates"]] == ["rejected"] and "cosine" in report["candidates"][0]["why"]


def test_timings_are_not_reused_when_what_they_depend_on_changed(tiny_onnx, tmp_path, monkeypatch):
    """The key covers the timed artifacts, the data, the settings and the CPU: any change times again."""
    out = tmp_path / "opt"
    args = ("optimize", str(tiny_onnx), "-o", str(out), "--targets", "ort-cpu", "--max-drop", "100", "--json")
    assert invoke(*args, "--budget-s", "0.05").exit_code == 0
    other_budget = json.loads(invoke(*args, "--budget-s", "0.06").stdout)
    assert other_budget["timing_reused_from"] is None
    import optkit.types.machine as machine

    same = json.loads(invoke(*args, "--budget-s", "0.06").stdout)
    assert same["timing_reused_from"] and all(c["cached"] for c in same["candidates"] if c["status"] == "built")
    real = machine.cpu_info
    monkeypatch.setattr(machine, "cpu_info", lambda: {**real(), "model": "another CPU"})
    other_cpu = json.loads(invoke(*args, "--budget-s", "0.06").stdout)
    assert other_cpu["timing_reused_from"] is None
    (out / "work" / "timing.json").write_text("{not json")
    assert json.loads(invoke(*args, "--budget-s", "0.06").stdout)["timing_reused_from"] is None


def test_a_candidate_outside_the_budget_on_the_calibration_split_is_rejected_and_its_fallback_built(
        tiny_onnx, tmp_path, monkeypatch):
    import optkit.engine.optimize as opt
    from optkit.engine.optimize_judge import CalibrationJudge, Verdict

    real = CalibrationJudge.verdict
    seen = []

    def verdict(self, artifact):
        got = real(self, artifact)
        seen.append(got)
        if "int8" in str(artifact.path) and "entropy" not in str(artifact.path):  # minmax: pretend it drifted
            return Verdict("calibration", cosine=0.5)
        return got

    def static_only(facts, targets, budget, calib_data=None):
        cands, skipped = candidate_space(facts, targets, budget, calib_data)
        return [c for c in cands if c.name in ("ort-int8-static", "ort-int8-static-entropy")], skipped

    monkeypatch.setattr(CalibrationJudge, "verdict", verdict)
    monkeypatch.setattr(opt, "candidate_space", static_only)
    result = invoke("optimize", str(tiny_onnx), "-o", str(tmp_path / "opt"), "--targets", "ort-cpu",
                    "--min-cosine", "0.9", "--budget-s", "0.05", "--json")
    assert result.exit_code == 0, result.output
    by_name = {c["name"]: c for c in json.loads(result.stdout)["candidates"]}
    assert by_name["ort-int8-static"]["status"] == "rejected"
    assert "on the calibration split: cosine 0.50000 < 0.9" in by_name["ort-int8-static"]["why"]
    assert by_name["ort-int8-static-entropy"]["status"] == "built"  # the fallback ran because of it
    assert all(v.split == "calibration" and v.cosine > 0.9 for v in seen)  # real verdicts: tiny int8 agrees
