"""One ServeConfig: a recipe's serve: section validates into it, `optkit serve`'s options are generated from its fields
(unset unless given, so --config stands), the server and the sweep are configured from it; loadtest's typed results
write the same files as the dicts did. No server is started here."""
from __future__ import annotations

import json

import pytest
import yaml
from optkit.cli.app import all_commands
from optkit.engine.recipe import Recipe
from optkit.serve.loadtest import LoadPoint, LoadtestResult
from optkit.serve.report import markdown, serve_yaml
from optkit.serve.sweep import SweepPlan, serve_command
from optkit.types.records import CpuInfo
from optkit.types.serve_config import ServeConfig
from tests.conftest import invoke


def test_every_field_is_a_serve_option_left_unset_with_its_description_as_help():
    params = {p.name: p for p in all_commands()["serve"].params}
    for name, field in ServeConfig.model_fields.items():
        assert field.description, f"ServeConfig.{name} has no description"
        param = params[name]
        assert param.opts[0] == "--" + name.replace("_", "-")
        assert param.default is None, f"--{name} has a default: it would override --config"
        start = " ".join(field.description.split())[:40].lower()
        assert start in " ".join(param.help.split()).lower(), f"--{name}: help is not its description"


def test_a_recipes_serve_section_is_a_serve_config():
    assert Recipe.model_fields["serve"].annotation == ServeConfig | None


@pytest.fixture
def handed(monkeypatch, tmp_path):
    """The ServeConfig `optkit serve` hands to the server (which is not started)."""
    seen: dict = {}

    def fake(artifact, config, **kwargs):
        seen["config"] = config

    monkeypatch.setattr("optkit.serve.server.serve", fake)
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")

    def run(*args: str) -> tuple[int, ServeConfig | None, str]:
        seen.clear()
        result = invoke("serve", str(model), *args)
        return result.exit_code, seen.get("config"), result.output
    return run


def test_options_override_the_config_file_and_only_when_given(handed, tmp_path):
    config = tmp_path / "serve.yaml"
    config.write_text("serve: {max_batch: 8, batch_policy: delay, threads: 2}\n")
    code, got, _ = handed("--config", str(config), "--max-queue", "7", "--preferred-batch", "2,4",
                          "--no-pad-sequences")
    assert code == 0 and got == ServeConfig(max_batch=8, batch_policy="delay", threads=2, max_queue=7,
                                            preferred_batch=[2, 4], pad_sequences=False)
    code, got, _ = handed()
    assert code == 0 and got == ServeConfig()


@pytest.mark.parametrize("args, words", [
    (["--max-batch", "0"], "greater than or equal to 1"),
    (["--threads", "2000"], "less than or equal to 1024"),
    (["--batch-policy", "greedy"], "not a policy"),
    (["--preferred-batch", "0"], "sizes must be at least 1"),
    (["--preferred-batch", "x"], "not a list of integers"),
])
def test_bad_options_are_refused_before_serving(handed, args, words):
    code, got, output = handed(*args)
    assert code == 2 and got is None and words in output, output


def test_the_sweep_plan_sets_only_the_swept_keys_and_starts_servers_with_those_options():
    plan = SweepPlan(max_batches=(1, 8), delays_ms=(2.0, 4.0), policies=("adaptive", "delay"), threads=2)
    settings = plan.settings()
    assert [(s.max_batch, s.max_queue_delay_ms, s.batch_policy) for s in settings] == [
        (1, 2.0, "adaptive"), (8, 2.0, "adaptive"), (8, 2.0, "delay"), (8, 4.0, "adaptive"), (8, 4.0, "delay")]
    cmd = serve_command("m.onnx", settings[2])
    assert cmd[cmd.index("--max-batch"):] == ["--max-batch", "8", "--max-queue-delay-ms", "2.0", "--batch-policy",
                                              "delay", "--instances", "1", "--threads", "2"]
    assert serve_command("m.onnx", ServeConfig(pad_sequences=False))[-1] == "--no-pad-sequences"


def _point(config: ServeConfig | None, throughput: float) -> LoadPoint:
    return LoadPoint("closed", 4, None, 1.0, 10, 10, {}, throughput, 1.0, 2.0, 3.0, {"<=4": 3}, 3.3, config)


def test_typed_results_write_the_documented_files():
    fast = _point(ServeConfig(max_batch=8, max_queue_delay_ms=2.0, batch_policy="delay", threads=1, instances=1), 900)
    result = LoadtestResult("m.onnx", [_point(None, 500), fast], fast, 50.0, CpuInfo(machine="x86_64", model="cpu", logical_cores=2))
    doc = json.loads(json.dumps(result.to_json()))
    assert list(doc) == ["written_by", "target", "cpu", "slo_p99_ms", "points", "best"]
    assert doc["points"][0]["config"] == {} and list(doc["points"][1]) == [
        "mode", "concurrency", "rate", "duration_s", "sent", "ok", "errors", "throughput", "p50_ms", "p90_ms",
        "p99_ms", "batch_sizes", "mean_batch", "config"]
    assert list(doc["best"]["config"].items()) == [("max_batch", 8), ("max_queue_delay_ms", 2.0),
                                                   ("batch_policy", "delay"), ("threads", 1), ("instances", 1)]
    md = markdown(result)
    assert "| - | - | - | 4 clients | 500 |" in md and "| 8 | 2.0 | delay | 4 clients | 900 **best** |" in md
    assert md.rstrip().endswith("p99 SLO: 50 ms - met by the best row")
    assert yaml.safe_load(serve_yaml(fast))["serve"] == doc["best"]["config"]
    assert ServeConfig(**yaml.safe_load(serve_yaml(fast))["serve"]) == fast.config
    assert result.settings_tried == 2 and result.cpu_text == "cpu, 2 cores, "
