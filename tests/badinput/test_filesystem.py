"""Filesystem traps: output paths optkit must refuse before any work (devices, the input's own files, '', a
directory, a file it did not write, a path under a regular file, a user's folder), malformed sidecars, and
factories that exit or raise while being imported. Exit 2, one error line, nothing changed anywhere."""
from __future__ import annotations

import os
import stat

import pytest

from tests.badinput.conftest import SIDECAR_VARIANTS, dev_null_is_intact
from tests.badinput.helpers import assert_clean_exit, check_case, cli, run_template

B = "--budget-s", "0.05"


@pytest.fixture
def user_files(tmp_path):
    """What a user already has next to the output: a folder, a plain text file, a folder of notes."""
    (tmp_path / "existing_dir").mkdir()
    (tmp_path / "existing_dir" / "keep.txt").write_text("keep me\n")
    (tmp_path / "notes.txt").write_text("my notes: optkit did not write this file\n")
    (tmp_path / "user_folder").mkdir()
    (tmp_path / "user_folder" / "notes.txt").write_text("a user's notes; there is no optkit manifest here\n")
    return tmp_path


def p(cid: str, args: list[str], *needles):
    return pytest.param(args, needles, id=cid)


OUTPUT_TRAPS = [
    p("export-o-input-weights-file", ["export", "{tiny_copy[folder]}", "-o", "{tiny_copy[weights]}", *B], "weights.pt"),
    p("export-o-input-eval-npz", ["export", "{tiny_copy[folder]}", "-o", "{tiny_copy[eval]}", *B], "eval.npz"),
    p("export-o-input-optkit-yaml", ["export", "{tiny_copy[folder]}", "-o", "{tiny_copy[folder]}/optkit.yaml", *B],
      "optkit.yaml"),
    p("export-o-symlink-to-input-weights", ["export", "{tiny_copy[folder]}", "-o", "{tmp}/link.onnx", *B],
      ("link.onnx", "weights.pt")),
    p("simplify-o-its-input", ["simplify", "{onnx_copy}", "-o", "{onnx_copy}", *B], "tiny.onnx"),
    p("simplify-o-input-sidecar", ["simplify", "{onnx_copy}", "-o", "{onnx_copy}.optkit.json", *B], "optkit.json"),
    p("prune-o-input-folder", ["prune", "{tiny_res_copy[folder]}", "-o", "{tiny_res_copy[folder]}", "--ratio", "0.25", *B],
      "tiny_res_copy"),
    p("prune-o-input-weights", ["prune", "{tiny_res_copy[folder]}", "-o", "{tiny_res_copy[weights]}", "--ratio", "0.25",
                                *B], "weights.pt"),
    p("export-o-empty-string", ["export", "{tiny[folder]}", "-o", "", *B], ("empty", "-o", "--output")),
    p("simplify-o-empty-string", ["simplify", "{tiny_onnx}", "-o", "", *B], ("empty", "-o", "--output")),
    p("prune-o-empty-string", ["prune", "{tiny_res[folder]}", "-o", "", "--ratio", "0.25", *B], ("empty", "-o", "--output")),
    p("export-o-existing-directory", ["export", "{tiny[folder]}", "-o", "{tmp}/existing_dir", *B], "existing_dir"),
    p("quantize-o-existing-directory", ["quantize", "{tiny_onnx}", "-o", "{tmp}/existing_dir", "--mode", "dynamic", *B],
      "existing_dir"),
    p("export-o-existing-user-file", ["export", "{tiny[folder]}", "-o", "{tmp}/notes.txt", *B], "notes.txt"),
    p("simplify-o-existing-user-file", ["simplify", "{tiny_onnx}", "-o", "{tmp}/notes.txt", *B], "notes.txt"),
    p("prune-o-existing-user-file", ["prune", "{tiny_res[folder]}", "-o", "{tmp}/notes.txt", "--ratio", "0.25", *B],
      "notes.txt"),
    p("prune-o-existing-user-folder", ["prune", "{tiny_res[folder]}", "-o", "{tmp}/user_folder", "--ratio", "0.25", *B],
      "user_folder"),
    p("export-o-parent-is-a-file", ["export", "{tiny[folder]}", "-o", "{tmp}/notes.txt/m.onnx", *B], "notes.txt"),
    p("quantize-o-parent-is-a-file", ["quantize", "{tiny_onnx}", "-o", "{tmp}/notes.txt/sub/q.onnx", "--mode", "dynamic",
                                      *B], "notes.txt"),
    p("debug-o-existing-directory", ["debug", "{tiny_onnx}", "{tiny_int8}", "-o", "{tmp}/existing_dir"], "existing_dir"),
]


@pytest.mark.parametrize("args,needles", OUTPUT_TRAPS)
def test_output_trap(request, user_files, tmp_path, args, needles):
    if any("link.onnx" in a for a in args):
        (tmp_path / "link.onnx").symlink_to(request.getfixturevalue("tiny_copy")["weights"])
    run_template(request, tmp_path, args, 2, needles, timeout=60)


@pytest.mark.parametrize("args", [
    pytest.param(["simplify", "{tiny_onnx}", "-o", "/dev/null", *B], id="simplify-o-dev-null"),
    pytest.param(["export", "{tiny[folder]}", "-o", "/dev/null", *B], id="export-o-dev-null"),
    pytest.param(["prune", "{tiny_res[folder]}", "-o", "/dev/null", "--ratio", "0.25", *B], id="prune-o-dev-null"),
])
def test_output_dev_null(request, dev_null_guard, tmp_path, args):
    try:
        run_template(request, tmp_path, args, 2, ["/dev/null"], timeout=60)
    finally:
        assert dev_null_is_intact(), "/dev/null is no longer a character device"
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


# -------------------------------------------------------------------------------- optkit run into a user's folder

def _recipe(tmp_path, tiny, output_dir: str):
    path = tmp_path / "recipe.yaml"
    path.write_text(f"model: {tiny['folder']}\noutput_dir: {output_dir}\n"
                    "measure: {batch_sizes: [1], threads: 1, budget_s: 0.05}\nsteps:\n  - export\n")
    return path


def test_run_into_a_users_non_empty_folder(tiny, user_files, tmp_path):
    recipe = _recipe(tmp_path, tiny, "user_folder")
    check_case(["run", recipe], 2, ("user_folder",), tmp_path=tmp_path, timeout=60)


def test_run_into_a_users_folder_with_force_succeeds(tiny, user_files, tmp_path):
    recipe = _recipe(tmp_path, tiny, "user_folder")
    result = cli("run", recipe, "--force", timeout=120)
    assert assert_clean_exit(result, (0,)) == 0
    assert (tmp_path / "user_folder" / "manifest.json").is_file()


# ------------------------------------------------------------------------------------------ malformed sidecars

SIDECAR_COMMANDS = {
    "report": ["report", "{model}"],
    "profile": ["profile", "{model}", *B],
    "simplify": ["simplify", "{model}", "-o", "{out}", *B],
}


@pytest.mark.parametrize("variant", SIDECAR_VARIANTS)
@pytest.mark.parametrize("command", list(SIDECAR_COMMANDS))
def test_malformed_sidecar(request, tmp_path, command, variant):
    args = [a.replace("{model}", "{bad_sidecars[%s]}" % variant) for a in SIDECAR_COMMANDS[command]]
    run_template(request, tmp_path, args, 2, ["tiny.onnx.optkit.json"], timeout=60)


# ------------------------------------------------------------------------------ factories that exit or raise

def test_factory_calling_sys_exit_at_import(factories, tmp_path):
    check_case(["export", f"{factories['sys_exit']}:build", "--input-shape", "input:1x1x8x8", "-o",
                tmp_path / "out" / "m.onnx", *B], 2, ["exit", "import"], tmp_path=tmp_path, timeout=60)


def test_factory_raising_at_import(factories, tmp_path):
    check_case(["export", f"{factories['raises']}:build", "--input-shape", "input:1x1x8x8", "-o",
                tmp_path / "out" / "m.onnx", *B], 2, [("raise_at_import", "kaboom")], tmp_path=tmp_path, timeout=60)
