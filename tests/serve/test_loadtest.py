"""optkit loadtest end to end: the batching sweep on an artifact (the serve.yaml it writes, served back with --config,
and the best setting in the artifact's ledger), closed and open loop against a running server, the SLO gate, and
what it refuses."""
from __future__ import annotations

import pytest

import json

import yaml

from tests.conftest import FAST, invoke, run_cli
from tests.serve.conftest import served


@pytest.mark.slow
def test_the_sweep_finds_the_best_setting_records_it_and_serve_takes_it_back(tiny, tmp_path):
    model = tmp_path / "tiny.onnx"  # its own copy: the sweep records its result in the artifact's sidecar
    assert invoke("export", str(tiny["folder"]), "-o", str(model), *FAST).exit_code == 0
    out = tmp_path / "lt"
    proc = run_cli("loadtest", str(model), "--max-batch", "1,8", "--max-queue-delay-ms", "2", "--concurrency", "4",
                   "--batch-policy", "adaptive,delay", "--duration", "1s", "--warmup", "0.2s", "--slo-p99-ms", "2000",
                   "-o", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((out / "loadtest.json").read_text())
    assert [(p["config"]["max_batch"], p["config"]["batch_policy"]) for p in doc["points"]] == [
        (1, "adaptive"), (8, "adaptive"), (8, "delay")]
    assert all(p["ok"] > 0 and not p["errors"] and p["p99_ms"] for p in doc["points"])
    assert doc["points"][0]["mean_batch"] == 1.0 and doc["points"][2]["mean_batch"] > 1.0  # 4 clients, batches form
    assert doc["cpu"]["model"] and "| 8 | 2.0 | delay | 4 clients |" in (out / "loadtest.md").read_text()
    section = yaml.safe_load((out / "serve.yaml").read_text())["serve"]
    assert section["max_batch"] == doc["best"]["config"]["max_batch"]
    assert section["batch_policy"] == doc["best"]["config"]["batch_policy"]
    # the best setting is in the artifact's ledger, in every view of `optkit report`
    rows = json.loads(invoke("report", str(model), "--json").output)["steps"]
    serving = rows[-1]["serving"]
    assert serving["config"] == doc["best"]["config"] and serving["throughput"] == doc["best"]["throughput"]
    assert serving["settings_tried"] == 3 and serving["slo_p99_ms"] == 2000 and serving["cpu"]
    assert f"served {serving['throughput']:.0f} requests/s" in invoke("report", str(model)).output
    assert "Serving (optkit loadtest):" in invoke("report", str(model), "--markdown").output
    with served(model, "--config", str(out / "serve.yaml"), "--max-queue", "7") as s:
        meta = json.loads(s.get(f"/v2/models/{s.model}")[1])
        assert meta["parameters"]["max_batch_size"] == section["max_batch"]
        assert meta["parameters"]["batch_policy"] == section["batch_policy"]


@pytest.mark.slow
def test_closed_and_open_loop_against_a_running_server(tiny_onnx, tmp_path):
    with served(tiny_onnx, "--max-batch", "8") as s:
        proc = run_cli("loadtest", s.base, "--concurrency", "2", "--duration", "1s", "--warmup", "0s", "--json")
        assert proc.returncode == 0, proc.stderr[-2000:]
        point = json.loads(proc.stdout)["points"][0]
        assert point["mode"] == "closed" and point["ok"] > 10 and point["ok"] == point["sent"]
        proc = run_cli("loadtest", s.base, "--rate", "40", "--duration", "1s", "--warmup", "0s", "--json",
                       "--slo-p99-ms", "0.001")  # a p99 no server meets: the gate fails, exit 3
        assert proc.returncode == 3, proc.stderr[-2000:]
        doc = json.loads(proc.stdout)
        assert doc["points"][0]["mode"] == "open" and 20 <= doc["points"][0]["sent"] <= 70 and doc["best"] is None


def test_what_loadtest_and_serve_refuse(tiny_onnx, tmp_path):
    for args, words in [
        (["loadtest", "http://10.1.2.3:8000"], "only ever targets this machine"),
        (["loadtest", "http://127.0.0.1:1"], "no server answers"),
        (["loadtest", str(tmp_path / "none.onnx")], "neither a file nor"),
        (["loadtest", str(tiny_onnx), "--concurrency", "0"], "at least 1"),
        (["loadtest", str(tiny_onnx), "--duration", "forever"], "not a duration"),
        (["loadtest", str(tiny_onnx), "--batch-policy", "greedy"], "policies are adaptive and delay"),
        (["serve", str(tiny_onnx), "--batch-policy", "greedy"], "not a policy"),
        (["serve", str(tmp_path / "none.onnx")], "no such file"),
    ]:
        result = invoke(*args)
        assert result.exit_code == 2 and words in result.output, (args, result.output)
    bad = tmp_path / "bad.yaml"
    for text, words in [("steps: [export]\n", "no serve: section"), ("serve: {max_batch: 0}\n", "serve.max_batch"),
                        ("serve: {batch: 4}\n", "serve.batch")]:
        bad.write_text(text)
        result = invoke("serve", str(tiny_onnx), "--config", str(bad))
        assert result.exit_code == 2 and words in result.output, (text, result.output)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "loadtest.json").write_text("{}")
    with served(tiny_onnx) as s:
        result = invoke("loadtest", s.base, "--concurrency", "1", "--duration", "0.2s", "--warmup", "0s",
                        "-o", str(foreign))
    assert result.exit_code == 2 and "optkit did not write it" in result.output
    assert (foreign / "loadtest.json").read_text() == "{}"
