"""Fail closed: no code runs from a model file, optkit never overwrites what it did not write, and a
killed run leaves nothing that lasts."""
from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_models" / "digits_cnn"


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _one_error(proc) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


class _Payload:
    """Unpickling this creates the marker file: what a malicious model file would do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.slow
def test_pt2_with_a_malicious_pickled_member_runs_no_code(tmp_path):
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)

    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(Net(), (torch.randn(2, 4),)), good)
    marker = tmp_path / "PWNED"
    payload = io.BytesIO()
    torch.save({"x": _Payload(marker)}, payload)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        members = [i.filename for i in src.infolist()]
        target = next(m for m in members if "/data/sample_inputs/" in m)
        for info in src.infolist():
            dst.writestr(info, payload.getvalue() if info.filename == target else src.read(info))
    out = tmp_path / "out.onnx"
    proc = run_cli("export", str(evil), "--input-shape", "x:2x4", "-o", str(out))
    assert proc.returncode == 2, proc.stderr
    line = _one_error(proc)
    assert target in line and "weights_only" in line
    assert not marker.exists(), "the pickle in the model file ran"
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["evil.pt2", "good.pt2"]


def test_no_unsafe_unpickling_anywhere_in_optkit():
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in (ROOT / "optkit").rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if "weights_only=False" in line]
    assert hits == []


@pytest.mark.parametrize("target", ["/dev/null", "WEIGHTS", "", "DIR", "SPEC"])
def test_export_refuses_outputs_it_must_not_write(target, tmp_path):
    before = _digests(SAMPLE)
    out = {"WEIGHTS": str(SAMPLE / "weights.pt"), "DIR": str(tmp_path), "SPEC": str(SAMPLE / "optkit.yaml")}.get(target, target)
    start = time.perf_counter()
    proc = run_cli("export", str(SAMPLE), "-o", out)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2, proc.stderr
    _one_error(proc)
    assert elapsed < 2.0, f"took {elapsed:.1f}s: the check must come before any work"
    assert _digests(SAMPLE) == before
    assert Path("/dev/null").is_char_device()
    assert list(tmp_path.iterdir()) == []


def _recipe(tmp_path: Path, tiny, out: Path, budget: float, name: str = "r.yaml") -> Path:
    recipe = tmp_path / name
    recipe.write_text(f"model: {tiny['folder']}\noutput_dir: {out}\nmeasure: {{budget_s: {budget}}}\n"
                      "steps:\n  - export\n  - quantize: {mode: dynamic}\n")
    return recipe


def test_run_into_a_users_folder_changes_nothing(tiny, tmp_path):
    users = tmp_path / "users"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    (users / "report.json").write_text("{\"mine\": true}")
    before = _digests(users)
    proc = run_cli("run", str(_recipe(tmp_path, tiny, users, 0.05)))
    assert proc.returncode == 2, proc.stderr
    assert "--force" in _one_error(proc)
    assert _digests(users) == before and sorted(p.name for p in users.iterdir()) == ["notes.txt", "report.json"]


@pytest.mark.slow
def test_a_killed_run_leaves_nothing_that_lasts(tiny, tmp_path):
    out = tmp_path / "out"
    scratch_tmp = tmp_path / "tmpdir"
    scratch_tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch_tmp)}
    env.pop("OPTKIT_DEBUG", None)
    proc = subprocess.Popen([sys.executable, "-m", "optkit", "run", str(_recipe(tmp_path, tiny, out, 3.0))],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.is_dir() and any(".tmp-" in p.name for p in out.iterdir()):
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before a temporary file was seen"
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    left = [p.name for p in out.iterdir() if ".tmp-" in p.name]
    assert left, "expected the killed run's temporary files"
    rerun = subprocess.run([sys.executable, "-m", "optkit", "run", str(_recipe(tmp_path, tiny, out, 0.05, "r2.yaml"))],
                           env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "killed" in rerun.stderr and left[0] in rerun.stderr
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name or "scratch" in p.name]
    # (onnxruntime's import leaves a '.ses' file there: not optkit's)
    assert [p.name for p in scratch_tmp.iterdir() if "optkit" in p.name] == [], "scratch belongs in the run's folder"


@pytest.mark.parametrize("redirect", ["> /dev/full", ">&-"], ids=["stdout-full", "stdout-closed"])
def test_a_full_or_closed_stdout_is_one_error_line(redirect, tiny_onnx):
    for args in (["recipe", "schema"], ["report", str(tiny_onnx), "--json"]):
        cmd = " ".join([sys.executable, "-m", "optkit", *args])
        proc = subprocess.run(["bash", "-c", f"{cmd} {redirect}"], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "standard output" in _one_error(proc)


def test_more_threads_than_cpus_are_clamped_with_a_warning(tiny_onnx):
    proc = run_cli("profile", str(tiny_onnx), "--threads", str((os.cpu_count() or 1) * 8), "--budget-s", "0.05", "--json")
    assert proc.returncode == 0, proc.stderr
    assert f"using {os.cpu_count()}" in proc.stderr
