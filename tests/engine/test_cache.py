"""The step cache of ``optkit run`` on fake models: what is reused, what is rebuilt and why, in a fraction
of a second per test. The same properties on the shipped digits_cnn recipe: tests/cli/test_run_ci.py."""
from __future__ import annotations

import json

import pytest
from tests.fakes import fake_engine  # noqa: F401 (fixture)

# five steps like digits_cnn_cpu.yaml (export, simplify, fuse, quantize, profile): four artifacts, one profile
STEPS = "[fake, fake, fake, {fake: {cost: 0.5}}, profile]"


@pytest.fixture
def cold(fake_engine):
    fake_engine.recipe(STEPS, gates="[{max_accuracy_drop: 1.0}, {max_drift: 0.5, step: '0'}]")
    result, report = fake_engine.run()
    assert result.exit_code == 0, result.output
    assert report["cached_steps"] == [] and report["status"] == "passed"
    return fake_engine, report


def test_unchanged_recipe_is_served_from_the_cache(cold):
    project, first = cold
    result, report = project.run()
    assert result.exit_code == 0, result.output
    assert report["cached_steps"] == [0, 1, 2, 3, 4]
    assert "reused" in result.stderr and "measuring the original" not in result.stderr
    assert [s["sha256"] for s in report["steps"]] == [s["sha256"] for s in first["steps"]]
    assert report["profiles"] == first["profiles"]


def test_corrupted_cache_entry_is_rebuilt_never_used(cold):
    project, first = cold
    target = project.out / "01_fake.fake.json"
    target.write_text(target.read_text() + " ")  # still a valid model file, different bytes
    result, report = project.run()
    assert result.exit_code == 0, result.output
    assert "01_fake.fake.json not reused (its files do not match the sha256" in result.stderr, result.stderr
    assert 1 not in report["cached_steps"] and 0 in report["cached_steps"]
    # the rebuild is byte-identical, so the steps after it are still valid cache entries
    assert report["steps"][2]["sha256"] == first["steps"][2]["sha256"] and 2 in report["cached_steps"]


def test_corrupted_reference_outputs_are_not_reused(cold):
    project, first = cold
    ref = project.out / "00_fake.fake.json.optkit-ref.npz"
    ref.write_bytes(ref.read_bytes()[:-16])
    result, report = project.run()
    assert result.exit_code == 0, result.output
    assert "00_fake.fake.json not reused (the reference outputs beside it are missing or changed)" in result.stderr
    assert 0 not in report["cached_steps"] and report["steps"][1]["sha256"] == first["steps"][1]["sha256"]


def test_changing_one_option_reruns_that_step_and_the_ones_after(cold):
    project, first = cold
    result, report = project.run("--set", "steps.3.tag=entropy")
    assert result.exit_code == 0, result.output
    assert report["cached_steps"] == [0, 1, 2]
    assert report["steps"][4]["artifact"].endswith("03_fake.fake.json")
    assert "03_fake.fake.json not reused (inputs or options changed)" in result.stderr
    assert report["steps"][4]["sha256"] != first["steps"][4]["sha256"] and len(report["profiles"]) == 1


def test_a_changed_input_reruns_every_step(cold):
    project, first = cold
    project.model.write_text(project.model.read_text() + " ")
    result, report = project.run()
    assert result.exit_code == 0, result.output
    assert report["cached_steps"] == [] and "measuring the original" in result.stderr
    assert report["steps"][0]["sha256"] != first["steps"][0]["sha256"]


def test_changed_evaluation_data_reruns_every_step(cold):
    from tests.fakes import fake_data

    project, first = cold
    fake_data(project.data, seed=1)
    result, report = project.run()
    assert result.exit_code == 0, result.output
    assert report["cached_steps"] == []
    assert report["steps"][1]["sha256"] == first["steps"][1]["sha256"]  # same artifact, measured on new data


def test_rebuild_without_cache_is_byte_identical(cold):
    project, first = cold
    result, report = project.run("--no-cache")
    assert result.exit_code == 0, result.output
    assert report["cached_steps"] == [] and "reused" not in result.stderr
    assert [s["sha256"] for s in report["steps"]] == [s["sha256"] for s in first["steps"]]


def test_a_cached_step_keeps_the_sidecar_it_was_built_with(cold):
    project, _ = cold
    sidecar = project.out / "02_fake.fake.json.optkit.json"
    before = sidecar.read_text()
    result, _ = project.run()
    assert result.exit_code == 0, result.output
    assert sidecar.read_text() == before
    raw = json.loads(before)
    assert raw["record"]["cache_key"] and [r["step"] for r in raw["lineage"]] == ["original", "fake", "fake"]


def test_a_fully_cached_run_reuses_the_ledger_timings_and_says_when(cold):
    project, first = cold
    stored = json.loads((project.out / "ledger_timing.json").read_text())
    result, report = project.run()
    assert result.exit_code == 0, result.output
    assert "reusing the ledger timings measured at " + stored["measured_at"] in result.stderr
    assert report["timing_measured_at"] == stored["measured_at"]
    assert all(s.get("latency") for s in first["steps"])
    assert [s.get("latency_all") for s in report["steps"]] == [s.get("latency_all") for s in first["steps"]]
    assert "ledger_timing.json" in json.loads((project.out / "manifest.json").read_text())["files"]


def test_retime_or_a_rebuilt_step_times_the_ledger_again(cold):
    project, first = cold
    result, report = project.run("--retime")
    assert result.exit_code == 0, result.output
    assert "reusing the ledger timings" not in result.stderr and "timing_measured_at" not in report
    assert report["cached_steps"] == [0, 1, 2, 3, 4]
    project.recipe(STEPS.replace("cost: 0.5", "cost: 0.6"), gates="[{max_accuracy_drop: 1.0}]")
    result, report = project.run()
    assert result.exit_code == 0, result.output
    assert "reusing the ledger timings" not in result.stderr and 3 not in report["cached_steps"]


def test_ledger_timings_from_another_machine_or_setting_are_not_reused(cold):
    project, _ = cold
    path = project.out / "ledger_timing.json"
    stored = json.loads(path.read_text())
    path.write_text(json.dumps({**stored, "key": "0" * 64}))  # what another CPU, data or budget would key
    result, report = project.run()
    assert result.exit_code == 0, result.output
    assert "reusing the ledger timings" not in result.stderr and "timing_measured_at" not in report
    assert json.loads(path.read_text())["key"] == stored["key"]  # measured again, recorded under the right key


def test_a_stored_timing_pass_is_read_only_under_its_key_and_within_its_size(tmp_path):
    """engine/cache.keyed_entry serves the ledger's and optimize's stored timings: another key, a file that is not
    optkit's (no measured_at, not an object) or one over KEYED_MAX_BYTES is never read as figures."""
    from optkit.engine.cache import KEYED_MAX_BYTES, keyed_entry, save_keyed

    path = tmp_path / "timing.json"
    save_keyed(path, "k" * 64, {"latency": [[{"p50_ms": 1.0}]]})
    entry = keyed_entry(path, "k" * 64)
    assert entry["latency"] == [[{"p50_ms": 1.0}]] and isinstance(entry["measured_at"], str)
    assert keyed_entry(path, "0" * 64) is None
    assert keyed_entry(tmp_path / "missing.json", "k" * 64) is None
    for text in ('{"key": "' + "k" * 64 + '", "latency": []}', '["not", "an", "object"]', "{not json"):
        path.write_text(text)
        assert keyed_entry(path, "k" * 64) is None, text
    path.write_text(json.dumps({"key": "k" * 64, "measured_at": "now", "pad": "x" * KEYED_MAX_BYTES}))
    assert keyed_entry(path, "k" * 64) is None
