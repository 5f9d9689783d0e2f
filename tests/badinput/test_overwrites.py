"""Overwrites and the paths that lead to them: -o (and a recipe's output_dir / output) never writes through a
symbolic link, into a link loop, under a folder literally named '$VAR' or '~', onto a file the user made while
the run went on, or into a folder whose manifest.json is the user's own; a NUL byte or a control character in any
path is refused. Exit 2, one error line naming the path or option, nothing written, the victim's bytes intact."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.badinput.helpers import assert_clean_exit, assert_clean_failure, check_case, cli, run_template, snapshot

B = "--budget-s", "0.05"
UNSET = "OPTKIT_TEST_SURELY_UNSET_VAR"


@pytest.fixture(autouse=True)
def _unset(monkeypatch):
    monkeypatch.delenv(UNSET, raising=False)


@pytest.fixture
def traps(tmp_path, onnx_copy):
    """Links and a victim next to the output: an artifact optkit wrote (onnx_copy, its sidecar beside it), a link to
    it, a link to nowhere, a link to itself and a folder link to itself."""
    (tmp_path / "link.onnx").symlink_to(onnx_copy)
    (tmp_path / "dangling.onnx").symlink_to(tmp_path / "nowhere" / "new.onnx")
    (tmp_path / "loop.onnx").symlink_to(tmp_path / "loop.onnx")
    (tmp_path / "loopdir").symlink_to(tmp_path / "loopdir")
    return tmp_path


def p(cid: str, args: list[str], *needles):
    return pytest.param(args, needles, id=cid)


CLI_TRAPS = [
    # 8: -o names a file: a trailing '/' (a folder that does not exist) must not become a file named 'newdir'
    p("export-o-newdir-trailing-slash", ["export", "{tiny[folder]}", "-o", "{tmp}/newdir/", *B], "newdir", "-o"),
    p("simplify-o-newdir-trailing-slash", ["simplify", "{tiny_onnx}", "-o", "{tmp}/newdir/", *B], "newdir", "file"),
    # 8: a link at -o would have its target replaced (here an artifact optkit wrote), or create what it points at
    p("simplify-o-symlink-to-an-artifact", ["simplify", "{tiny_onnx}", "-o", "{tmp}/link.onnx", *B],
      "link.onnx", "symbolic link"),
    p("export-o-dangling-symlink", ["export", "{tiny[folder]}", "-o", "{tmp}/dangling.onnx", *B],
      "dangling.onnx", "symbolic link"),
    # 8: control characters
    p("simplify-o-newline", ["simplify", "{tiny_onnx}", "-o", "{tmp}/a\nb.onnx", *B], "-o", "control character"),
    p("quantize-o-carriage-return", ["quantize", "{tiny_onnx}", "-o", "{tmp}/q\r.onnx", "--mode", "dynamic", *B],
      "-o", "control character"),
    # 10: NUL bytes in every path option
    p("export-o-nul", ["export", "{tiny[folder]}", "-o", "{tmp}/a\x00b.onnx", *B], "-o", "NUL"),
    p("simplify-model-nul", ["simplify", "{tiny_onnx}\x00.onnx", "-o", "{out}", *B], "MODEL", "NUL"),
    p("export-eval-data-nul", ["export", "{tiny[folder]}", "--eval-data", "{tiny[eval]}\x00", "-o", "{out}", *B],
      "--eval-data", "NUL"),
    p("export-weights-nul", ["export", "{tiny[model_py]}:build", "--weights", "{tiny[weights]}\x00x",
                             "--input-shape", "input:1x1x8x8", "-o", "{out}", *B], "--weights", "NUL"),
    # 10: symbolic link loops
    p("simplify-o-symlink-loop", ["simplify", "{tiny_onnx}", "-o", "{tmp}/loop.onnx", *B], "loop.onnx", "loop"),
    p("export-o-under-a-folder-loop", ["export", "{tiny[folder]}", "-o", "{tmp}/loopdir/m.onnx", *B],
      "loopdir", "loop"),
    p("simplify-model-symlink-loop", ["simplify", "{tmp}/loop.onnx", "-o", "{out}", *B], "loop.onnx", "loop"),
    p("export-eval-data-symlink-loop", ["export", "{tiny[folder]}", "--eval-data", "{tmp}/loopdir/e.npz", "-o",
                                        "{out}", *B], "loopdir", "loop"),
    # 11: an unset $VAR or unknown ~user must not become a folder literally named so
    p("export-o-unset-var", ["export", "{tiny[folder]}", "-o", "{tmp}/$" + UNSET + "/m.onnx", *B], UNSET, "not set"),
    p("simplify-o-unknown-user", ["simplify", "{tiny_onnx}", "-o", "~optkit_no_such_user_xyz/m.onnx", *B],
      "optkit_no_such_user_xyz", "no such user"),
    p("export-eval-data-unset-var", ["export", "{tiny[folder]}", "--eval-data", "$" + UNSET + "/e.npz", "-o", "{out}",
                                     *B], "--eval-data", UNSET),
]


@pytest.mark.parametrize("args,needles", CLI_TRAPS)
def test_cli_path_trap(request, traps, tmp_path, args, needles):
    victim = request.getfixturevalue("onnx_copy")
    before = victim.read_bytes()
    run_template(request, tmp_path, args, 2, needles, timeout=60)
    assert victim.read_bytes() == before
    assert not (tmp_path / "newdir").exists() and not (tmp_path / "nowhere").exists()


# -------------------------------------------------------------------------------------------- recipes

def _recipe(tmp_path: Path, model, **keys) -> Path:
    path = tmp_path / "recipe.yaml"
    extra = "".join(f"{k}: {json.dumps(v)}\n" for k, v in keys.items())  # JSON strings are YAML: escapes survive
    path.write_text(f"model: {json.dumps(str(model))}\n{extra}"
                    "measure: {batch_sizes: [1], threads: 1, budget_s: 0.05}\nsteps:\n  - export\n")
    return path


RECIPE_TRAPS = [
    pytest.param({"output_dir": f"${UNSET}/out"}, ("output_dir", UNSET), id="output-dir-unset-var"),
    pytest.param({"output_dir": "out\nput"}, ("output_dir", "control character"), id="output-dir-newline"),
    pytest.param({"output_dir": "loopdir/out"}, ("output_dir", "loop"), id="output-dir-through-a-loop"),
    pytest.param({"output_dir": "loopdir"}, ("output_dir", "loop"), id="output-dir-is-a-loop"),
    pytest.param({"model": "tiny\x00"}, ("model", "NUL"), id="model-nul"),
    pytest.param({"eval_data": f"${{{UNSET}}}/eval.npz"}, ("eval_data", UNSET), id="eval-data-unset-braced-var"),
]


@pytest.mark.parametrize("keys,needles", RECIPE_TRAPS)
def test_recipe_path_trap(tiny, traps, tmp_path, keys, needles):
    keys = dict(keys)
    model = keys.pop("model", str(tiny["folder"]))
    recipe = _recipe(tmp_path, model, **keys)
    check_case(["run", recipe], 2, needles, tmp_path=tmp_path, watch=[Path(tiny["folder"])], timeout=60)


def test_recipe_step_output_naming_a_folder(tiny, tmp_path):
    """A step's ``output:`` ending in '/' names a folder: refused for a step that writes one file (nothing named
    'newdir' appears), accepted for a step that writes a model folder (prune)."""
    recipe = _recipe(tmp_path, tiny["folder"], output_dir="out")
    recipe.write_text(recipe.read_text().replace("  - export\n", "  - export: {output: newdir/}\n"))
    check_case(["run", recipe], 2, ("steps[0].output", "newdir/"), tmp_path=tmp_path, timeout=60)
    recipe.write_text(recipe.read_text().replace("  - export: {output: newdir/}\n",
                                                 "  - prune: {ratio: 0.25, output: pruned/}\n"))
    result = cli("run", recipe, "--dry-run")
    assert_clean_exit(result, (0,))
    assert json.loads(result.stdout)["steps"][0]["output"] == str(tmp_path / "pruned")


def test_run_refuses_a_folder_holding_the_users_own_manifest(tiny, tmp_path):
    """A manifest.json of the user's (not optkit's, or listing files that are not as recorded) never makes a
    folder optkit's: the run exits 2 and replaces nothing."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "manifest.json").write_text('{"name": "my deployment", "files": ["report.md"]}\n')
    (folder / "report.md").write_text("my own report\n")
    check_case(["run", _recipe(tmp_path, tiny["folder"], output_dir="mine")], 2, ("mine", "did not write"),
               tmp_path=tmp_path, timeout=60)


def test_run_refuses_an_old_optkit_folder_whose_files_were_changed(tiny, tmp_path):
    """A folder from before the marker: its manifest parses as optkit's, but report.md is the user's now."""
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "report.md").write_text("edited by hand\n")
    (folder / "manifest.json").write_text(json.dumps({
        "recipe": "r.yaml", "recipe_sha256": "0" * 64, "versions": {},
        "files": {"report.md": {"sha256": "0" * 64, "bytes": 15}}}))
    check_case(["run", _recipe(tmp_path, tiny["folder"], output_dir="old")], 2, ("old", "did not write"),
               tmp_path=tmp_path, timeout=60)


# ----------------------------------------------------------------------------------- what is accepted

def test_o_expands_env_vars_and_home(tiny_onnx, tmp_path, monkeypatch):
    """~ and $VAR are expanded in -o (quoted, as a recipe would write them): no folder named '$OUT' or '~'."""
    (tmp_path / "home").mkdir()
    env = {"OPTKIT_TEST_OUT": str(tmp_path / "viaenv"), "HOME": str(tmp_path / "home")}
    monkeypatch.chdir(tmp_path)
    assert_clean_exit(cli("simplify", tiny_onnx, "-o", "$OPTKIT_TEST_OUT/m.onnx", "--no-measure", env=env), (0,))
    assert_clean_exit(cli("simplify", tiny_onnx, "-o", "~/m.onnx", "--no-measure", env=env), (0,))
    assert (tmp_path / "viaenv" / "m.onnx").is_file() and (tmp_path / "home" / "m.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "viaenv"]


def test_recipe_output_dir_expands_home(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    recipe = _recipe(tmp_path, tiny["folder"], output_dir="~/built")
    recipe.write_text(recipe.read_text().replace("budget_s: 0.05}", "budget_s: 0.05, enabled: false}"))
    assert_clean_exit(cli("run", recipe, "--dry-run"), (0,))
    assert_clean_exit(cli("run", recipe, timeout=120), (0,))
    assert (tmp_path / "home" / "built" / "00_export.onnx").is_file()
    assert not (tmp_path / "~").exists()


# --------------------------------------------------------------------------------- the race at commit

def _plant_before_commit(monkeypatch, target: Path, content: bytes) -> None:
    """Another program writes ``target`` just before optkit's commit publishes its files (deterministic)."""
    from optkit.types.files import Staging

    commit = Staging.commit

    def planting(self):
        if any(final == target for _, final in self._pending):
            tmp = target.with_name("user-writes-here")
            tmp.write_bytes(content)
            tmp.replace(target)
        return commit(self)

    monkeypatch.setattr(Staging, "commit", planting)


def test_a_file_made_at_o_during_the_run_is_kept(tiny_onnx, tmp_path, monkeypatch):
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    _plant_before_commit(monkeypatch, out, b"the user's file, made while optkit ran\n")
    assert_clean_failure(cli("simplify", tiny_onnx, "-o", out, "--no-measure"), 2, "m.onnx", "appeared")
    assert out.read_bytes() == b"the user's file, made while optkit ran\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.onnx"]  # no sidecar, no temporary file


def test_optkits_previous_output_changed_during_the_run_is_kept(tiny_onnx, tmp_path, monkeypatch):
    out = tmp_path / "m.onnx"
    assert_clean_exit(cli("simplify", tiny_onnx, "-o", out, "--no-measure"), (0,))
    sidecar = Path(f"{out}.optkit.json")
    sidecar_before = sidecar.read_bytes()
    _plant_before_commit(monkeypatch, out, b"replaced by the user during the rerun\n")
    assert_clean_failure(cli("simplify", tiny_onnx, "-o", out, "--no-measure"), 2, "m.onnx", "changed or replaced")
    assert out.read_bytes() == b"replaced by the user during the rerun\n"
    assert sidecar.read_bytes() == sidecar_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.optkit.json"]


def test_rerun_over_optkits_own_output_still_replaces_it(tiny_onnx, tmp_path):
    out = tmp_path / "m.onnx"
    for _ in range(2):
        assert_clean_exit(cli("simplify", tiny_onnx, "-o", out, "--no-measure"), (0,))
    assert snapshot(tmp_path).keys() == {"m.onnx", "m.onnx.optkit.json"}


def test_run_into_an_old_optkit_folder_whose_manifest_holds(tiny, tmp_path):
    """A folder from before the marker whose manifest is optkit's and true is still optkit's to write into."""
    recipe = _recipe(tmp_path, tiny["folder"], output_dir="out")
    recipe.write_text(recipe.read_text().replace("budget_s: 0.05}", "budget_s: 0.05, enabled: false}"))
    assert_clean_exit(cli("run", recipe, timeout=120), (0,))
    (tmp_path / "out" / ".optkit-run").unlink()
    assert_clean_exit(cli("run", recipe, timeout=120), (0,))
    shutil.rmtree(tmp_path / "out")


def test_prune_o_new_folder_with_a_slash_and_a_rerun_over_it(tiny_res, tmp_path, monkeypatch):
    """prune writes a model folder: '-o newdir/' is that folder, and a rerun replaces optkit's own folder."""
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert_clean_exit(cli("prune", tiny_res["folder"], "-o", "newdir/", "--ratio", "0.25", "--no-measure",
                              timeout=180), (0,))
    assert (tmp_path / "newdir").is_dir() and Path(f"{tmp_path / 'newdir'}.optkit.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["newdir", "newdir.optkit.json"]
