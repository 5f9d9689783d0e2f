"""What optkit accepts from a sidecar: the runtime settings compile writes (typed), files it may read (regular
.npz files, no links out, under a size cap), whose sidecar makes a file optkit's, and the digest checks that
report/compare run (types/integrity.py)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from optkit.types import sidecar as art_mod
from optkit.types.sidecar import SidecarRefused, checked_runtime, checked_sidecar_file
from optkit.backends.opening import open_artifact
from optkit.backends.ownership import optkit_wrote
from optkit.types.artifact import sidecar_path
from optkit.types.errors import UsageError
from optkit.types.runfolder import RUN_MARKER
from optkit.types.files import sha256_file
from optkit.backends.integrity import check_digests, verify_digests


def _copy(tiny_onnx: Path, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in tiny_onnx.parent.iterdir():
        if f.name.startswith(tiny_onnx.name):
            shutil.copy(f, folder / f.name)
    return folder / tiny_onnx.name


# ----------------------------------------------------------------------------------------- runtime

def test_every_runtime_setting_compile_writes_is_accepted():
    from optkit.backends.openvino import PRECISION_HINT
    from optkit.backends.onnxruntime import ORT_SESSIONS

    for session in ORT_SESSIONS.values():
        runtime = {"session": session, "providers": ["CPUExecutionProvider"]}
        assert checked_runtime(runtime) == runtime
    for hint in PRECISION_HINT.values():
        assert checked_runtime({"inference_precision": hint, "device": "CPU"})["inference_precision"] == hint
    assert checked_runtime({"providers": ["CUDAExecutionProvider", "CPUExecutionProvider"]})
    assert checked_runtime({"device": "cuda"}) == {"device": "cuda"}
    assert checked_runtime({"layout": "nhwc", "delegate": "xnnpack"}) == {"layout": "nhwc", "delegate": "xnnpack"}
    assert checked_runtime(None) == {} and checked_runtime({}) == {}


@pytest.mark.parametrize("runtime,key", [
    ({"session": {"optimized_model_filepath": "/tmp/x"}}, "runtime.session.optimized_model_filepath"),
    ({"session": {"intra_op_num_threads": 256}}, "runtime.session.intra_op_num_threads"),
    ({"session": {"enable_mem_pattern": "false"}}, "runtime.session.enable_mem_pattern"),
    ({"session": {"graph_optimization_level": 99}}, "runtime.session.graph_optimization_level"),
    ({"providers": ["DnnlExecutionProvider"]}, "runtime.providers.0"),
    ({"layout": "nchw", "extra": 1}, "runtime.extra"),
])
def test_other_runtime_settings_are_refused_by_name(runtime, key):
    with pytest.raises(UsageError, match=key.replace(".", r"\.")):
        checked_runtime(runtime)


def test_session_options_apply_only_typed_settings():
    pytest.importorskip("onnxruntime")
    from optkit.backends.onnxruntime import session_options

    so = session_options(2, {"graph_optimization_level": "extended", "enable_mem_pattern": False,
                             "allow_spinning": False})
    assert so.intra_op_num_threads == 2 and so.enable_mem_pattern is False
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.optimized_model_filepath == ""
    for bad in ({"optimized_model_filepath": "/tmp/victim"}, {"profile_file_prefix": "/tmp/p"},
                {"intra_op_num_threads": 256}, {"enable_cpu_mem_arena": "no"}):
        with pytest.raises(UsageError, match=next(iter(bad))):
            session_options(1, bad)


# ----------------------------------------------------------------------------------- named files

def _npz(path: Path) -> Path:
    np.savez(path, x=np.zeros(2, np.float32))
    return path


def test_files_a_sidecar_names(tmp_path, monkeypatch):
    base = tmp_path / "run"
    base.mkdir()
    outside = _npz(tmp_path / "outside.npz")
    assert checked_sidecar_file("data.eval", "../outside.npz", base) == outside.resolve()  # as optkit writes them
    assert checked_sidecar_file("data.eval", "missing.npz", base) == (base / "missing.npz").resolve()
    _npz(base / "inside.npz")
    (base / "alias.npz").symlink_to(base / "inside.npz")
    assert checked_sidecar_file("data.eval", "alias.npz", base) == (base / "inside.npz").resolve()

    (base / "out.npz").symlink_to(outside)
    with pytest.raises(SidecarRefused, match="symbolic link"):
        checked_sidecar_file("data.eval", "out.npz", base)
    os.mkfifo(base / "pipe.npz")
    with pytest.raises(SidecarRefused, match="not a regular file"):  # refused by stat: a FIFO is never opened
        checked_sidecar_file("data.eval", "pipe.npz", base)
    with pytest.raises(SidecarRefused, match="not a regular file"):
        checked_sidecar_file("data.calib", "/dev/zero", base)
    (base / "text.npz").write_text("root:x:0:0\n")
    with pytest.raises(SidecarRefused, match="not an .npz"):
        checked_sidecar_file("data.eval", "text.npz", base)
    monkeypatch.setattr(art_mod, "MAX_SIDECAR_FILE_BYTES", 64)
    with pytest.raises(SidecarRefused, match="limit"):
        checked_sidecar_file("reference.path", "inside.npz", base)


# -------------------------------------------------------------------------------- ownership

def test_only_a_matching_sidecar_makes_a_file_optkits(tiny_onnx, tmp_path):
    model = _copy(tiny_onnx, tmp_path / "a")
    assert optkit_wrote(model)
    user = tmp_path / "user.onnx"
    user.write_bytes(b"mine")
    assert not optkit_wrote(user)  # no sidecar
    sidecar_path(user).write_text("{}")
    assert not optkit_wrote(user)
    shutil.copy(sidecar_path(model), sidecar_path(user))
    assert not optkit_wrote(user)  # a genuine sidecar of another file
    (tmp_path / RUN_MARKER).write_text("x")
    assert optkit_wrote(user)  # in a run folder optkit made, the step cache rebuilds a changed entry
    sidecar_path(user).write_text("{}")
    assert not optkit_wrote(user)


# ---------------------------------------------------------------------------------- digests

def test_check_digests_names_the_artifact_and_its_ancestors(tiny_onnx, tmp_path):
    model = _copy(tiny_onnx, tmp_path / "a")
    assert check_digests(open_artifact(model)) == []
    raw = json.loads(sidecar_path(model).read_text())
    raw["record"]["sha256"] = "0" * 64
    sidecar_path(model).write_text(json.dumps(raw))
    (mismatch,) = check_digests(open_artifact(model))
    assert mismatch.path == model.resolve() and mismatch.recorded == "0" * 64
    assert mismatch.actual == sha256_file(model) and not mismatch.ancestor
    warned: list[str] = []
    verify_digests(open_artifact(model), warned.append)
    assert len(warned) == 1 and "0" * 64 in warned[0] and sha256_file(model) in warned[0]
    with pytest.raises(UsageError, match="0" * 64):
        verify_digests(open_artifact(model), warned.append, strict=True)


def test_factory_in_optkit_yaml_stays_in_its_folder(tiny, tmp_path):
    folder = tmp_path / "m"
    shutil.copytree(tiny["folder"], folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(tiny["model_py"], tmp_path / "evil.py")
    spec = (folder / "optkit.yaml").read_text()
    for ref in ("../evil.py:build", f"{tmp_path / 'evil.py'}:build"):
        lines = [f"factory: {ref}" if ln.startswith("factory:") else ln for ln in spec.splitlines()]
        (folder / "optkit.yaml").write_text("\n".join(lines) + "\n")
        with pytest.raises(UsageError, match="outside the model folder"):
            open_artifact(folder)
