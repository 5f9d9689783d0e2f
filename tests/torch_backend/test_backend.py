"""torch.compile(model, backend="optkit") on the sample models and a transformers encoder: the same answers as
eager (fp32 within tolerance, int8 within its budget), graph breaks, two sequence lengths, eager fallbacks with
their reason, and a second process that reuses the on-disk cache without exporting anything."""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]


def sample(name: str):
    from optkit.backends.torch import load_module
    from optkit.backends.opening import open_artifact

    module = load_module(open_artifact(ROOT / "sample_models" / name)).eval()
    with np.load(ROOT / "sample_models" / name / "eval.npz") as data:
        return module, torch.from_numpy(data["input"][:8]), data["labels"][:8]


def compiled(model, cache: Path, **options):
    torch._dynamo.reset()
    return torch.compile(model, backend="optkit", options={"cache_dir": str(cache), **options})


def cosine(a, b) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.fixture(scope="module")
def cnn_cache(tmp_path_factory) -> Path:
    """One cache folder for digits_cnn in fp32: the tolerances of the first-call check are not build options, so
    the test of that check reuses the entry the first test built (either test builds it when it runs alone)."""
    return tmp_path_factory.mktemp("cnn_cache")


@pytest.mark.slow
def test_digits_cnn_fp32_matches_eager_and_a_second_process_reuses_the_cache(cnn_cache, capsys):
    """Also: the build says what it builds and where it went, on one stderr line; the second process needs no
    import of optkit (the entry point registers the backend) and exports nothing; `optkit report` shows the
    entry's ledger."""
    model, x, _ = sample("digits_cnn")
    with torch.no_grad():
        fast = compiled(model, cnn_cache)
        for _ in range(3):
            got = fast(x)
        want = model(x)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-3)
    (entry,) = [p for p in cnn_cache.iterdir() if p.is_dir()]
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("optkit:")]
    assert len(said) == 1 and re.fullmatch(
        rf"optkit: building subgraph \d+ \(\d+ ops, inputs x:\[8,1,32,32\]\) for ort-cpu \.\.\. "
        rf"done in [\d.]+s, cached at {re.escape(str(entry))}", said[0]), said
    record = json.loads((entry / "entry.json").read_text())
    assert record["format"] == "onnx" and record["steps"] == ["original", "export", "fuse", "compile"]
    assert (entry / "build" / "report.json").is_file()  # the build's ledger, as optkit run writes it
    from tests.conftest import invoke

    shown = invoke("report", str(entry / record["artifact"]), "--markdown")
    assert shown.exit_code == 0 and "| export |" in shown.output and "| compile |" in shown.output
    env = {**os.environ, "OPTKIT_DEBUG": "1"}
    warm = subprocess.run([sys.executable, "-c", SECOND_PROCESS.format(root=str(ROOT), cache=str(cnn_cache))],
                          capture_output=True, text=True, env=env, timeout=300)
    assert warm.returncode == 0, warm.stderr[-2000:]
    assert "cache hit" in warm.stderr and "building" not in warm.stderr and "exporting" not in warm.stderr


@pytest.mark.slow
def test_int8_with_calib_data_builds_on_the_first_call(tmp_path):
    pytest.importorskip("openvino")
    model, x, _ = sample("digits_cnn")
    with torch.no_grad():
        fast = compiled(model, tmp_path, target="openvino-cpu", precision="int8",
                        calib_data=str(ROOT / "sample_models" / "digits_cnn" / "calib.npz"))
        got, want = fast(x), model(x)
        got = fast(x)  # the first call was checked against eager; this one ran the int8 IR
    assert cosine(got, want) > 0.99 and not torch.equal(got, want)
    (entry,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    with np.load(entry / "calib.npz") as calib:
        assert calib.files == ["x"] and len(calib["x"]) > 100  # the given data, under the subgraph's input name


@pytest.mark.slow
def test_digits_cnn_int8_is_within_budget_on_the_labelled_data(tmp_path):
    model, x, labels = sample("digits_cnn")
    with torch.no_grad():
        fast = compiled(model, tmp_path, precision="int8", calib_calls=4)
        for i in range(6):  # 4 recorded for calibration (eager), then built and checked, then int8
            got = fast(x)
        want = model(x)
    assert cosine(got, want) > 0.99
    assert (got.argmax(1).numpy() == labels).mean() >= (want.argmax(1).numpy() == labels).mean() - 1 / 8
    (entry,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    steps = json.loads((entry / "entry.json").read_text())["steps"]
    assert steps == ["original", "export", "fuse", "quantize", "compile"]
    with np.load(entry / "calib.npz") as calib:  # the recorded calls, 4 batches of 8
        assert calib["x"].shape == (32, 1, 32, 32)


@pytest.mark.slow
def test_digits_vit_on_openvino_matches_eager(tmp_path):
    pytest.importorskip("openvino")
    model, x, _ = sample("digits_vit")
    with torch.no_grad():
        fast = compiled(model, tmp_path, target="openvino-cpu")
        got, want = fast(x), model(x)
        got = fast(x)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-3)
    (entry,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert json.loads((entry / "entry.json").read_text())["format"] == "openvino"


@pytest.mark.slow
def test_digits_vit_int8_is_within_budget(tmp_path):
    pytest.importorskip("openvino")
    model, x, labels = sample("digits_vit")
    with torch.no_grad():
        fast = compiled(model, tmp_path, target="openvino-cpu", precision="int8", calib_calls=2)
        for _ in range(4):  # 2 recorded (eager), then built and checked, then the int8 IR
            got = fast(x)
        want = model(x)
    assert cosine(got, want) > 0.99 and not torch.equal(got, want)
    assert (got.argmax(1).numpy() == labels).mean() >= (want.argmax(1).numpy() == labels).mean() - 1 / 8


@pytest.mark.slow
def test_a_transformers_encoder_int8_is_within_budget(tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("transformers")
    import transformers

    from tests.hf_models import bert_folder

    model = transformers.AutoModel.from_pretrained(str(bert_folder(tmp_path / "bert"))).eval()
    batches = [torch.randint(1, 90, (4, 16), generator=torch.Generator().manual_seed(i)) for i in range(4)]
    with torch.no_grad():
        fast = compiled(model, tmp_path / "c", target="openvino-cpu", precision="int8", calib_calls=3)
        for ids in batches:  # 3 recorded, the 4th builds, is checked against eager, and then runs in int8
            fast(input_ids=ids, attention_mask=torch.ones_like(ids))
        ids = batches[0]
        got = fast(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
        want = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    assert cosine(got, want) > 0.99 and not torch.equal(got, want)
    (entry,) = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert json.loads((entry / "entry.json").read_text())["format"] == "openvino"


class Branchy(torch.nn.Module):
    """A data-dependent Python branch: dynamo breaks the graph there and hands over two subgraphs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 3)

    def forward(self, x):
        y = torch.relu(self.a(x))
        if y.sum() > 10:
            y = y * 2
        return self.b(y)


@pytest.mark.slow
def test_a_graph_break_compiles_each_subgraph_and_keeps_both_branches_right(tmp_path):
    model = Branchy().eval()
    small, large = torch.randn(4, 8) * 0.01, torch.randn(4, 8) * 10
    with torch.no_grad():
        fast = compiled(model, tmp_path)
        for x in (small, large, small, large):
            assert torch.allclose(fast(x), model(x), atol=1e-4, rtol=1e-3)
    entries = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert len(entries) >= 3  # the part before the break and each branch's tail
    assert all((e / "entry.json").is_file() for e in entries)


@pytest.mark.slow
def test_a_transformers_encoder_at_two_sequence_lengths(tmp_path):
    pytest.importorskip("transformers")
    import transformers

    from tests.hf_models import bert_folder

    model = transformers.AutoModel.from_pretrained(str(bert_folder(tmp_path / "bert"))).eval()
    with torch.no_grad():
        torch._dynamo.reset()
        fast = torch.compile(model, backend="optkit", dynamic=True, options={"cache_dir": str(tmp_path / "c")})
        for length in (12, 20, 12):
            ids = torch.randint(1, 90, (2, length), generator=torch.Generator().manual_seed(length))
            mask = torch.ones_like(ids)
            got = fast(input_ids=ids, attention_mask=mask).last_hidden_state
            want = model(input_ids=ids, attention_mask=mask).last_hidden_state
            assert got.shape == want.shape and torch.allclose(got, want, atol=1e-4, rtol=1e-3)
    entries = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert len(entries) == 1  # one artifact, dynamic in the sequence: no rebuild for the second length
    recipe = (entries[0] / "recipe.yaml").read_text()
    assert "dynamic_axes" in recipe and ":1:" in recipe


def test_grad_mode_runs_eagerly_with_the_reason_logged_once(tmp_path, caplog):
    model, x, _ = sample("digits_cnn")
    fast = compiled(model, tmp_path)
    with caplog.at_level(logging.WARNING, logger="optkit.torch"):
        out = fast(x)  # parameters require grad and grad mode is on: inference only
        out.sum().backward()  # autograd still works: eager ran
        fast(x)
    assert any(p.grad is not None for p in model.parameters())
    said = [r.message for r in caplog.records if "autograd" in r.message]
    assert len(said) == 1 and "torch.no_grad()" in said[0]
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # nothing was built


def test_a_subgraph_that_disagrees_with_eager_runs_eagerly(cnn_cache, caplog):
    model, x, _ = sample("digits_cnn")
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="optkit.torch"):
        fast = compiled(model, cnn_cache, atol=0.0, rtol=0.0)  # ONNX Runtime's float sums differ in the last bits
        first, second = fast(x), fast(x)
        want = model(x)
    assert torch.equal(first, want) and torch.equal(second, want)  # eager answers, never the artifact's
    assert any("disagrees with eager" in r.message for r in caplog.records)


def test_a_bad_option_is_an_error_naming_the_options(tmp_path):
    model, x, _ = sample("digits_cnn")
    with pytest.raises(Exception, match="option target"):
        with torch.no_grad():
            compiled(model, tmp_path, target="tpu")(x)


def test_a_reused_entry_says_so_and_quiet_says_nothing(cnn_cache, capsys):
    model, x, _ = sample("digits_cnn")
    with torch.no_grad():
        compiled(model, cnn_cache, quiet=True)(x)  # builds the entry when this test runs alone
        assert "optkit:" not in capsys.readouterr().err
        compiled(model, cnn_cache)(x)
    (entry,) = [p for p in cnn_cache.iterdir() if p.is_dir()]
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("optkit:")]
    assert len(said) == 1 and "inputs x:[8,1,32,32]" in said[0], said
    assert f"reused from the on-disk cache at {entry} (built in" in said[0] and "building" not in said[0]


def test_a_misspelt_option_gets_a_did_you_mean(tmp_path):
    from optkit.torch_backend.options import parse_options
    from optkit.types.errors import UsageError

    with pytest.raises(UsageError, match="unknown option 'treads': did you mean 'threads'\\?"):
        parse_options({"treads": 2})
    with pytest.raises(UsageError) as far:
        parse_options({"zzzz": 1})
    assert "did you mean" not in far.value.one_line() and "threads" in far.value.one_line()  # the list, no guess
    with pytest.raises(Exception, match="did you mean 'quiet'"), torch.no_grad():  # via torch.compile, before work
        compiled(Branchy().eval(), tmp_path, quite=True)(torch.randn(4, 8))
    assert not list(tmp_path.iterdir())


def test_training_mode_is_the_reason_given_for_batch_norm(tmp_path, caplog, monkeypatch):
    """A BatchNorm in train() also adds to its num_batches_tracked buffer in place: the reason must be the
    training mode and its remedy, not "in-place add_"."""
    from optkit.torch_backend import runtime

    monkeypatch.setattr(runtime, "_said", set())  # said once per process: this test must hear it
    model, x, _ = sample("digits_cnn")
    model.train()
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="optkit.torch"):
        compiled(model, tmp_path)(x)
    said = [r.message for r in caplog.records if "runs eagerly" in r.message]
    assert said and "training mode (BatchNorm updates its running statistics)" in said[0], said
    assert "model.eval()" in said[0] and not any("in-place" in m for m in said)
    assert not list(tmp_path.iterdir())  # nothing was built


SECOND_PROCESS = """
import sys, torch, numpy as np
sys.path.insert(0, {root!r})
from tests.torch_backend.test_backend import sample
model, x, _ = sample("digits_cnn")
with torch.no_grad():
    fast = torch.compile(model, backend="optkit", options={{"cache_dir": {cache!r}}})
    got = fast(x); got = fast(x)
    assert torch.allclose(got, model(x), atol=1e-4, rtol=1e-3)
print("ok")
"""
