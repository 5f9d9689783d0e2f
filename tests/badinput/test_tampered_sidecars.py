"""Sidecars edited after optkit wrote them: each case starts from a genuine chain (tiny_onnx simplified by
``optkit simplify``), copies it into the case's folder and changes one thing. optkit reads only what it writes
there: runtime settings outside compile's (a file written through ``optimized_model_filepath``, profiling files,
256 threads), files it must not read (/etc/passwd, a FIFO, /dev/zero, a link out, a 10 GB file), a `{}` sidecar
that would make a user's file look like optkit's, and a factory outside its model folder. Exit 2, one error line
naming the key or path, no traceback, nothing written; a victim file keeps its bytes. Digests that no longer
match warn in ``report`` / ``compare`` and fail under ``--strict``."""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from optkit.types.files import sha256_file
from tests.badinput.helpers import assert_clean_exit, check_case, cli, run_cli

B = "--budget-s", "0.05"
VICTIM_BYTES = b"a user's file: optkit must never write here\n"


@pytest.fixture(scope="session")
def genuine_chain(tiny_onnx, tmp_path_factory) -> Path:
    """tiny_onnx simplified: a sidecar with a record, an export ancestor in its lineage, data and reference paths."""
    out = tmp_path_factory.mktemp("tampered_chain") / "simp.onnx"
    result = cli("simplify", tiny_onnx, "-o", out, *B, timeout=None)
    assert result.exit_code == 0, result.output[-2000:]
    return out


def _sidecar(path: Path) -> Path:
    return Path(str(path) + ".optkit.json")


def copy_chain(genuine_chain: Path, folder: Path, mutate: Callable[[dict], Any] | None = None) -> Path:
    """The genuine artifact and its sidecar in ``folder`` (its data and reference paths made absolute, so they
    still name the genuine files), with ``mutate`` applied to the sidecar's JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / genuine_chain.name
    shutil.copy(genuine_chain, model)
    raw = json.loads(_sidecar(genuine_chain).read_text())
    base = genuine_chain.parent
    raw["data"] = {k: str((base / v).resolve()) for k, v in raw["data"].items()}
    raw["reference"]["path"] = str((base / raw["reference"]["path"]).resolve())
    if mutate is not None:
        mutate(raw)
    _sidecar(model).write_text(json.dumps(raw, indent=2))
    return model


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_bytes(VICTIM_BYTES)
    return path


def _session(**settings) -> Callable[[dict], None]:
    def mutate(raw: dict) -> None:
        raw["runtime"] = {"session": {"graph_optimization_level": "all", **settings},
                          "providers": ["CPUExecutionProvider"]}
    return mutate


def _runtime(runtime: Any) -> Callable[[dict], None]:
    def mutate(raw: dict) -> None:
        raw["runtime"] = runtime
    return mutate


# ------------------------------------------------------------------------------- runtime settings (item 7)

RUNTIME_CASES = [
    pytest.param(lambda v: _session(optimized_model_filepath=str(v)), "optimized_model_filepath",
                 id="optimized-model-filepath-onto-a-victim"),
    pytest.param(lambda v: _session(profile_file_prefix=str(v.parent / "prof")), "profile_file_prefix",
                 id="profile-file-prefix"),
    pytest.param(lambda v: _session(enable_profiling=True), "enable_profiling", id="enable-profiling"),
    pytest.param(lambda v: _session(intra_op_num_threads=256), "intra_op_num_threads", id="256-threads"),
    pytest.param(lambda v: _session(graph_optimization_level="turbo"), "graph_optimization_level",
                 id="unknown-optimization-level"),
    pytest.param(lambda v: _session(enable_mem_pattern="yes"), "enable_mem_pattern", id="bool-as-string"),
    pytest.param(lambda v: _session(allow_spinning=1), "allow_spinning", id="bool-as-int"),
    pytest.param(lambda v: _runtime({"session": "all"}), "runtime.session", id="session-not-an-object"),
    pytest.param(lambda v: _runtime({"providers": ["TensorrtExecutionProvider"]}), "runtime.providers",
                 id="provider-optkit-never-writes"),
    pytest.param(lambda v: _runtime({"custom_op_library": str(v)}), "custom_op_library", id="unknown-runtime-key"),
    pytest.param(lambda v: _runtime({"inference_precision": "f64"}), "inference_precision",
                 id="openvino-precision-optkit-never-writes"),
]


@pytest.mark.parametrize("make,key", RUNTIME_CASES)
def test_profile_refuses_runtime_settings_optkit_never_writes(genuine_chain, tmp_path, victim, make, key):
    model = copy_chain(genuine_chain, tmp_path / "m", make(victim))
    check_case(["profile", model, "--batch-sizes", "1", *B], 2, [key, "optkit.json"], tmp_path=tmp_path, timeout=60)
    assert victim.read_bytes() == VICTIM_BYTES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "victim.txt"]  # no profiling file anywhere


def test_the_settings_compile_writes_still_run(genuine_chain, tmp_path):
    model = copy_chain(genuine_chain, tmp_path / "m", _session(enable_mem_pattern=False, allow_spinning=False))
    result = cli("profile", model, "--batch-sizes", "1", *B, timeout=120)
    assert assert_clean_exit(result, (0,)) == 0


@pytest.mark.parametrize("command", [
    pytest.param(["report", "{model}"], id="report"),
    pytest.param(["simplify", "{model}", "-o", "{tmp}/out/s.onnx", *B], id="simplify"),
    pytest.param(["compare", "{model}", "{model}", "--batch-sizes", "1", *B], id="compare"),
    pytest.param(["serve", "{model}", "--port", "0"], id="serve"),
])
def test_every_command_refuses_a_tampered_session(genuine_chain, tmp_path, victim, command):
    model = copy_chain(genuine_chain, tmp_path / "m", _session(optimized_model_filepath=str(victim)))
    args = [a.replace("{model}", str(model)).replace("{tmp}", str(tmp_path)) for a in command]
    # serve in a subprocess: a server that did start would hold the event loop past an in-process alarm
    runner = {"runner": run_cli, "timeout": 120} if command[0] == "serve" else {"timeout": 60}
    check_case(args, 2, ["optimized_model_filepath"], tmp_path=tmp_path, **runner)
    assert victim.read_bytes() == VICTIM_BYTES


def test_serve_model_server_refuses_a_tampered_session_in_process(genuine_chain, tmp_path, victim):
    pytest.importorskip("starlette")
    from optkit.serve.app import ModelServer
    from optkit.types.serve_config import ServeConfig
    from optkit.types.errors import UsageError

    model = copy_chain(genuine_chain, tmp_path / "m", _session(optimized_model_filepath=str(victim)))
    with pytest.raises(UsageError, match="optimized_model_filepath"):
        ModelServer(model, ServeConfig())
    assert victim.read_bytes() == VICTIM_BYTES


# --------------------------------------------------------------------- files a sidecar names (item 7)

def _data(key: str, value: Callable[[Path], str]) -> Callable[[Path], Callable[[dict], None]]:
    def for_folder(tmp: Path) -> Callable[[dict], None]:
        def mutate(raw: dict) -> None:
            if key == "reference":
                raw["reference"]["path"] = value(tmp)
            else:
                raw["data"][key] = value(tmp)
        return mutate
    return for_folder


def _fifo(tmp: Path) -> str:
    os.mkfifo(tmp / "pipe.npz")
    return str(tmp / "pipe.npz")


def _sparse_10gb(tmp: Path) -> str:
    # sparse: no disk used, but 10 GB to any reader (beside the case's folder: the suite's snapshot would hash it)
    huge = tmp.parent / f"{tmp.name}-huge" / "huge.npz"
    huge.parent.mkdir(exist_ok=True)
    with open(huge, "wb") as fh:
        fh.truncate(10 << 30)
    return str(huge)


def _link_out(tmp: Path) -> str:
    """A link beside the artifact to a genuine .npz outside its folder (the original model's eval data)."""
    target = json.loads((tmp / "genuine.json").read_text())["eval"]
    (tmp / "m").mkdir(exist_ok=True)
    (tmp / "m" / "eval.npz").symlink_to(target)
    return "eval.npz"


def _link_to_passwd(tmp: Path) -> str:
    (tmp / "m").mkdir(exist_ok=True)
    (tmp / "m" / "calib.npz").symlink_to("/etc/passwd")
    return "calib.npz"


FILE_CASES = [
    pytest.param(_data("eval", lambda t: "/etc/passwd"), ("data.eval", "/etc/passwd"), id="eval-etc-passwd"),
    pytest.param(_data("calib", lambda t: "../../../../../../../../etc/shadow"), ("data.calib", "shadow"),
                 id="calib-dotdot-etc-shadow"),
    pytest.param(_data("eval", _fifo), ("data.eval", "pipe.npz"), id="eval-fifo"),
    pytest.param(_data("calib", lambda t: "/dev/zero"), ("data.calib", "/dev/zero"), id="calib-dev-zero"),
    pytest.param(_data("eval", _link_out), ("data.eval", "symbolic link"), id="eval-symlink-out"),
    pytest.param(_data("calib", _link_to_passwd), ("data.calib", "calib.npz"), id="calib-symlink-to-etc-passwd"),
    pytest.param(_data("eval", _sparse_10gb), ("data.eval", "huge.npz"), id="eval-sparse-10gb"),
    pytest.param(_data("reference", lambda t: "/etc/hostname"), ("reference.path", "/etc/hostname"),
                 id="reference-etc-file"),
    pytest.param(_data("reference", _fifo), ("reference.path", "pipe.npz"), id="reference-fifo"),
    pytest.param(_data("reference", lambda t: "/dev/zero"), ("reference.path", "/dev/zero"), id="reference-dev-zero"),
]


@pytest.mark.parametrize("make,needles", FILE_CASES)
def test_files_a_sidecar_names_are_confined(genuine_chain, tmp_path, make, needles):
    if "etc/hostname" in str(needles) and not Path("/etc/hostname").is_file():
        pytest.skip("no /etc/hostname here")
    raw = json.loads(_sidecar(genuine_chain).read_text())
    (tmp_path / "genuine.json").write_text(json.dumps(
        {"eval": str((genuine_chain.parent / raw["data"]["eval"]).resolve())}))
    model = copy_chain(genuine_chain, tmp_path / "m", make(tmp_path))
    check_case(["profile", model, "--batch-sizes", "1", *B], 2, list(needles), tmp_path=tmp_path, timeout=60)


def test_an_oversized_sidecar_is_not_read(genuine_chain, tmp_path):
    from optkit.types.sidecar import MAX_SIDECAR_BYTES

    model = copy_chain(genuine_chain, tmp_path / "m")
    with open(_sidecar(model), "r+b") as fh:
        fh.truncate(MAX_SIDECAR_BYTES + 1)  # sparse
    check_case(["report", model], 2, ["simp.onnx.optkit.json", "bytes"], tmp_path=tmp_path, timeout=60)


# ------------------------------------------------------------------- whose file is it? (item 5, overwrite)

def test_an_empty_sidecar_does_not_make_a_users_file_optkits(tiny_onnx, tmp_path, victim):
    user = tmp_path / "mine.onnx"
    user.write_bytes(VICTIM_BYTES)
    _sidecar(user).write_text("{}")
    check_case(["simplify", tiny_onnx, "-o", user, *B], 2, ["mine.onnx", "did not write"], tmp_path=tmp_path,
               timeout=60)
    assert user.read_bytes() == VICTIM_BYTES


def test_a_copied_sidecar_does_not_make_a_users_file_optkits(tiny_onnx, genuine_chain, tmp_path):
    user = tmp_path / "simp.onnx"
    user.write_bytes(VICTIM_BYTES)
    shutil.copy(_sidecar(genuine_chain), _sidecar(user))  # genuine, but it records another file's sha256
    check_case(["simplify", tiny_onnx, "-o", user, *B], 2, ["simp.onnx", "sha256"], tmp_path=tmp_path, timeout=60)
    assert user.read_bytes() == VICTIM_BYTES


def test_optkits_own_output_is_still_replaced(tiny_onnx, genuine_chain, tmp_path):
    model = copy_chain(genuine_chain, tmp_path)
    result = cli("simplify", tiny_onnx, "-o", model, *B, timeout=120)
    assert assert_clean_exit(result, (0,)) == 0


# -------------------------------------------------------------------- factories in optkit.yaml (item 7)

def _folder_with_factory(tiny: dict, tmp_path: Path, factory: str) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny["folder"], folder, ignore=shutil.ignore_patterns("__pycache__"))
    spec = (folder / "optkit.yaml").read_text()
    lines = [f"factory: {factory}" if ln.startswith("factory:") else ln for ln in spec.splitlines()]
    (folder / "optkit.yaml").write_text("\n".join(lines) + "\n")
    return folder


EVIL = "import pathlib\npathlib.Path(__file__).with_name('RAN').write_text('evil ran')\n" \
       "def build():\n    raise SystemExit(9)\n"


@pytest.mark.parametrize("where", ["dotdot", "absolute", "symlink"])
def test_a_factory_outside_the_model_folder_is_refused(tiny, tmp_path, where):
    evil = tmp_path / "evil.py"
    evil.write_text(EVIL)
    if where == "symlink":
        folder = _folder_with_factory(tiny, tmp_path, "model.py:build")
        (folder / "model.py").unlink()
        (folder / "model.py").symlink_to(evil)
        needle = "model.py"
    else:
        ref = "../evil.py:build" if where == "dotdot" else f"{evil}:build"
        folder = _folder_with_factory(tiny, tmp_path, ref)
        needle = "evil.py"
    check_case(["export", folder, "-o", tmp_path / "out" / "m.onnx", *B], 2, [needle, "outside the model folder"],
               tmp_path=tmp_path, timeout=60)
    assert not (tmp_path / "RAN").exists()


def test_a_factory_outside_the_folder_may_still_be_given_on_the_command_line(tiny, tmp_path):
    shutil.copy(tiny["model_py"], tmp_path / "elsewhere.py")
    result = cli("export", f"{tmp_path / 'elsewhere.py'}:build", "--weights", tiny["weights"],
                 "--input-shape", "input:1x1x8x8", "-o", tmp_path / "out" / "m.onnx", *B, timeout=120)
    assert assert_clean_exit(result, (0,)) == 0


# -------------------------------------------------------------------------- digests (item 5)

def _record_sha(raw: dict) -> None:
    raw["record"]["sha256"] = "0" * 64


def _ancestor_sha(raw: dict) -> None:
    raw["lineage"][-1]["sha256"] = "1" * 64


@pytest.mark.parametrize("mutate,needles", [
    pytest.param(_record_sha, ["simp.onnx", "0" * 64], id="record-sha256"),
    pytest.param(_ancestor_sha, ["tiny.onnx", "1" * 64, "export"], id="ancestor-sha256"),
])
def test_report_strict_refuses_a_digest_that_does_not_match(genuine_chain, tmp_path, mutate, needles):
    model = copy_chain(genuine_chain, tmp_path / "m", mutate)
    line = check_case(["report", model, "--strict"], 2, needles, tmp_path=tmp_path, timeout=60).stderr
    assert "sha256" in line


def test_report_warns_once_naming_the_file_and_both_digests(genuine_chain, tmp_path):
    model = copy_chain(genuine_chain, tmp_path / "m", _record_sha)
    actual = sha256_file(model)
    result = cli("report", model, timeout=60)
    assert assert_clean_exit(result, (0,)) == 0
    warnings = [ln for ln in result.stderr.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "simp.onnx" in warnings[0], result.stderr
    assert "0" * 64 in warnings[0] and actual in warnings[0]


def test_a_tampered_ancestor_copy_beside_the_artifact_is_named(tiny_onnx, genuine_chain, tmp_path):
    """A moved run: the export ancestor sits beside the artifact, and its bytes were changed."""
    import onnx

    model = copy_chain(genuine_chain, tmp_path / "m")
    for f in tiny_onnx.parent.iterdir():
        if f.name.startswith(tiny_onnx.name):
            shutil.copy(f, tmp_path / "m" / f.name)
    ancestor = onnx.load(tmp_path / "m" / tiny_onnx.name)
    ancestor.doc_string = "changed after optkit measured it"
    onnx.save(ancestor, tmp_path / "m" / tiny_onnx.name)
    check_case(["report", model, "--strict"], 2, [str(tmp_path / "m" / tiny_onnx.name), "export"],
               tmp_path=tmp_path, timeout=60)


def test_compare_strict_refuses_a_model_changed_after_its_sidecar(genuine_chain, tmp_path):
    import onnx

    model = copy_chain(genuine_chain, tmp_path / "m")
    proto = onnx.load(model)
    proto.doc_string = "changed after optkit measured it"
    onnx.save(proto, model)
    check_case(["compare", genuine_chain, model, "--batch-sizes", "1", *B, "--strict"], 2, ["simp.onnx", "sha256"],
               tmp_path=tmp_path, timeout=60)
