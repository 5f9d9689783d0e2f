"""The ledger of a recipe run on fake models, read from its outputs (report.json, report.md, sidecars,
``optkit report``): latency from the run's interleaved pass, step-time figures where no pass was made or a
row could not be timed again, a speed step slower than its input flagged. Records are never built by hand."""
from __future__ import annotations

import json

from tests.conftest import invoke
from tests.fakes import FakeProject, fake_engine  # noqa: F401 (fixture)


def test_interleaved_latency_replaces_step_time_figures(fake_engine):
    fake_engine.recipe("[fake_export, {fake: {cost: 0.5}}]")
    result, report = fake_engine.run()
    assert result.exit_code == 0, result.output
    rows = report["steps"]
    assert [r["timing"] for r in rows] == ["interleaved"] * 3
    assert "one interleaved round-robin pass over all 3 rows" in (fake_engine.out / "report.md").read_text()
    final = fake_engine.out / "01_fake.fake.json"
    sidecar = json.loads((final.parent / (final.name + ".optkit.json")).read_text())
    # the sidecar keeps what was measured when the step ran
    assert sidecar["record"]["metrics"]["latency"][0]["p50_ms"] != rows[2]["latency"]["p50_ms"]
    step_time = invoke("report", str(final), "--json")  # no run, no pass: the figures the sidecars hold
    assert step_time.exit_code == 0, step_time.output
    again = json.loads(step_time.stdout)["steps"]
    assert [r["timing"] for r in again] == ["step time"] * 3
    assert again[2]["latency"]["p50_ms"] == sidecar["record"]["metrics"]["latency"][0]["p50_ms"]
    assert "as measured when each step ran" in invoke("report", str(final), "--markdown").stdout


def test_a_row_that_cannot_be_timed_again_keeps_its_step_time(fake_engine):
    fake_engine.recipe("[fake_export]")
    assert fake_engine.run()[0].exit_code == 0
    fake_engine.model.unlink()  # the original of the chain the next run continues
    second = FakeProject(fake_engine.folder / "second")
    second.folder.mkdir()
    second.recipe("[fake]", model=fake_engine.out / "00_fake_export.fake.json", eval_data=fake_engine.data)
    result, report = second.run()
    assert result.exit_code == 0, result.output
    assert "not timed with the others (file moved or changed since): original" in result.stderr
    assert [r["timing"] for r in report["steps"]] == ["step time", "interleaved", "interleaved"]
    assert "except rows 0 (measured when built)" in (second.out / "report.md").read_text()


def test_a_speed_step_slower_than_its_input_is_flagged(fake_engine, monkeypatch):
    from optkit.steps.base import STEPS

    monkeypatch.setitem(STEPS, "quantize", "tests.fakes:FakeQuantizeStep")
    fake_engine.recipe("[{fake: {cost: 2}}, {quantize: {cost: 2}}]")
    result, report = fake_engine.run()
    assert result.exit_code == 0, result.output
    _, slower_fake, slower_quantize = report["steps"]
    assert slower_quantize["slower"] and slower_quantize["speedup_vs_parent"] < 0.8
    assert any("SLOWER than its input" in n and "measured interleaved" in n for n in slower_quantize["notes"])
    assert "quantize (01_quantize.fake.json) is SLOWER than its input" in result.stderr
    assert "SLOWER" in (fake_engine.out / "report.md").read_text()
    assert slower_fake["speedup_vs_parent"] < 0.8 and not slower_fake.get("slower")  # not a speed step: no flag
