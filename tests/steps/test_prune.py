"""prune: structured channel pruning that really shrinks layers, unstructured sparsity, fine-tuning."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import yaml

from optkit.backends.torch import load_module
from optkit.backends.opening import open_artifact
from tests.conftest import FAST, invoke, run_cli, sidecar

NO_MEASURE = ["--no-measure"]


def _module(folder):
    return load_module(open_artifact(folder))


def _outputs(folder, x):
    with torch.no_grad():
        return _module(folder)(torch.from_numpy(x)).numpy()


def test_structured_ratio_shrinks_coupled_layers_and_reloads(tiny_res, tmp_path):
    out = tmp_path / "pruned"
    result = invoke("prune", str(tiny_res["folder"]), "-o", str(out), "--ratio", "0.5", "--round-to", "1", *FAST)
    assert result.exit_code == 0, result.output
    spec = yaml.safe_load((out / "optkit.yaml").read_text())
    # the residual add couples stem and conv2: both shrink together, and the fc's inputs with them
    assert spec["structure"]["stem.0"]["out_channels"] == 8
    assert spec["structure"]["conv2"]["out_channels"] == 8
    assert spec["structure"]["fc"]["in_features"] == 8
    assert "out_features" not in spec["structure"].get("fc", {})  # the output layer is never pruned
    row = sidecar(out)["record"]
    assert row["metrics"]["macs"] < 0.5 * row["details"]["macs_before"]
    assert row["metrics"]["params"] < row["details"]["params_before"]
    # reloads from the factory + plain tensors, with the pruned shapes
    module = _module(out)
    assert module.conv1.weight.shape == (8, 8, 3, 3)
    state = torch.load(out / "weights.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    # and exports: the ONNX model agrees with the reloaded torch model
    onnx_path = tmp_path / "pruned.onnx"
    assert invoke("export", str(out), "-o", str(onnx_path), *NO_MEASURE).exit_code == 0
    onnx.checker.check_model(str(onnx_path))
    x = np.load(tiny_res["eval"])["input"]
    got = ort.InferenceSession(str(onnx_path)).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, _outputs(out, x), atol=1e-4, rtol=1e-4)


def test_target_macs_is_met(tiny_res, tmp_path):
    out = tmp_path / "pruned"
    result = invoke("prune", str(tiny_res["folder"]), "-o", str(out), "--target-macs", "0.4", "--round-to", "2",
                    "--json", *FAST)
    assert result.exit_code == 0, result.output
    row = sidecar(out)["record"]
    assert row["metrics"]["macs"] <= 0.4 * row["details"]["macs_before"]
    assert 0 < row["details"]["ratio"] < 1


def test_finetune_recovers_and_is_deterministic(tiny_res, tmp_path):
    args = ["--ratio", "0.5", "--round-to", "1", "--finetune-epochs", "4", "--lr", "0.01", "--seed", "3"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert invoke("prune", str(tiny_res["folder"]), "-o", str(a), *args, *FAST).exit_code == 0
    assert invoke("prune", str(tiny_res["folder"]), "-o", str(b), *args, *NO_MEASURE).exit_code == 0
    sa, sb = (torch.load(p / "weights.pt", weights_only=True) for p in (a, b))
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    details = sidecar(a)["record"]["details"]
    history = details["finetune"]["history"]
    assert len(history) == 5 and history[0]["epoch"] == 0
    assert details["finetune"]["best_val_top1"] >= details["val_top1_before_finetune"]


def test_unstructured_reports_sparsity_honestly(tiny_res, tmp_path):
    out = tmp_path / "sparse"
    result = invoke("prune", str(tiny_res["folder"]), "-o", str(out), "--unstructured", "--sparsity", "0.6", *FAST)
    assert result.exit_code == 0, result.output
    details = sidecar(out)["record"]["details"]
    assert details["weights_sparsity"] == pytest.approx(0.6, abs=0.02)
    assert details["compressed_weights_bytes"] < details["raw_weights_bytes"]
    assert "dense runtimes do not get faster" in sidecar(out)["record"]["summary"]
    assert not yaml.safe_load((out / "optkit.yaml").read_text())["structure"]  # shapes unchanged
    zeros = sum(int((p == 0).sum()) for n, p in _module(out).named_parameters() if n.endswith("weight") and p.ndim > 1)
    assert zeros > 0


def test_transformer_prunes_mlp_widths_and_keeps_attention(tiny, tmp_path):
    out = tmp_path / "vit"
    result = invoke("prune", f"{tiny['model_py']}:build_vit", "--eval-data", str(tiny["eval"]), "-o", str(out),
                    "--ratio", "0.5", "--round-to", "1", *NO_MEASURE)
    assert result.exit_code == 0, result.output
    structure = yaml.safe_load((out / "optkit.yaml").read_text())["structure"]
    assert structure["blocks.0.mlp.0"]["out_features"] == 16
    assert not any(k.endswith(("query", "key", "value")) for k in structure)
    x = np.load(tiny["eval"])["input"]
    assert _outputs(out, x).shape == (len(x), 3)


def test_taylor_importance(tiny_res, tmp_path):
    out = tmp_path / "t"
    result = invoke("prune", str(tiny_res["folder"]), "-o", str(out), "--ratio", "0.25", "--round-to", "1",
                    "--importance", "taylor", *NO_MEASURE)
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((out / "optkit.yaml").read_text())["structure"]["conv1"]["out_channels"] == 12


def test_prune_export_quantize_chain(tiny_res, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": str(tiny_res["folder"]), "output_dir": str(tmp_path / "out"),
        "measure": {"batch_sizes": [1], "budget_s": 0.05},
        "steps": [{"prune": {"ratio": 0.5, "round_to": 1, "finetune_epochs": 2}}, "export",
                  {"quantize": {"mode": "static", "max_accuracy_drop": 100}}]}))
    result = invoke("run", str(recipe), "--json")
    assert result.exit_code == 0, result.output
    import json

    rows = json.loads(result.stdout)["steps"]
    assert [r["step"] for r in rows] == ["original", "prune", "export", "quantize"]
    assert all(r["accuracy"] is not None and r["speedup_vs_original"] is not None for r in rows)
    assert rows[2]["macs"] == rows[1]["macs"] < rows[0]["macs"]  # export keeps the pruned MACs


@pytest.mark.parametrize("args, message", [
    (["--ratio", "1.2"], "--ratio"),
    (["--ratio", "0"], "--ratio"),
    (["--target-macs", "1"], "--target-macs"),
    ([], "exactly one of ratio"),
    (["--ratio", "0.3", "--target-macs", "0.5"], "exactly one of ratio"),
    (["--unstructured"], "needs sparsity"),
    (["--ratio", "0.3", "--ignore", "nope*"], "matches no module"),
])
@pytest.mark.slow
def test_bad_options_exit_2_and_write_nothing(tiny_res, tmp_path, args, message):
    out = tmp_path / "p"
    result = run_cli("prune", str(tiny_res["folder"]), "-o", str(out), *args, "--round-to", "1", *NO_MEASURE)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_training_data_that_does_not_fit_exits_2(tiny_res, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, image=np.zeros((4, 1, 8, 8), np.float32), labels=np.zeros(4, np.int64))
    wrong_shape = tmp_path / "shape.npz"
    np.savez(wrong_shape, input=np.zeros((4, 1, 9, 9), np.float32))
    for data, message in ((bad, "no array 'input'"), (wrong_shape, "has shape 4x1x9x9")):
        out = tmp_path / "p"
        result = run_cli("prune", str(tiny_res["folder"]), "-o", str(out), "--ratio", "0.3", "--finetune-epochs", "1",
                         "--train-data", str(data))
        assert result.returncode == 2, result.stderr
        assert "training data" in result.stderr and message in result.stderr and "Traceback" not in result.stderr
        assert not out.exists() and not (tmp_path / "p.optkit.json").exists()


def test_distill_narrows_with_prunes_defaults():
    """distill derives its student with ChannelPruning's defaults: they are prune's own."""
    from optkit.steps._pruning import ChannelPruning
    from optkit.steps.prune import PruneConfig

    assert PruneConfig(ratio=0.5).channel_pruning() == ChannelPruning()


def test_max_drop_is_the_task_metric_drop_vs_the_input(tiny_res, tmp_path):
    """One budget for every lossy step: --max-drop judges the task metric (--metric picks it) of the pruned model
    against its input, as quantize and compile do, and a miss writes nothing."""
    out = tmp_path / "pruned"
    args = ["prune", str(tiny_res["folder"]), "-o", str(out), "--ratio", "0.75", "--round-to", "1", *FAST]
    cosine = invoke(*args, "--metric", "cosine", "--max-drop", "0")
    assert cosine.exit_code == 1, cosine.output
    assert "pruning is outside tolerance: cosine fell" in cosine.output and "limit cosine drop <= 0 pt" in cosine.output
    assert not out.exists()
    assert invoke(*args, "--metric", "cosine", "--max-drop", "10").exit_code == 0


def test_a_top1_budget_miss_reads_as_it_always_has(monkeypatch):
    from types import SimpleNamespace

    from optkit.steps import prune
    from optkit.types.errors import StepError
    from optkit.types.records import Check

    missed = Check(ok=False, limit="top1 drop <= 0.5 pt", metric="top1", input_value=0.99, value=0.95, drop=4.0)
    monkeypatch.setattr(prune, "check_vs_input", lambda *_: missed)
    ctx = SimpleNamespace(settings=SimpleNamespace(metric="top1"))
    with pytest.raises(StepError) as failed:
        prune.PruneStep._check_accuracy(ctx, None, prune.PruneConfig(ratio=0.5, max_drop=0.5))
    assert failed.value.message == "pruned top-1 95.00% is 4.00 points below the input's 99.00% (--max-drop 0.5)"
    assert failed.value.hint == "Prune less, fine-tune longer (--finetune-epochs) or distill"
