"""Pickles are refused, never unpickled: full torch.save(model) files as MODEL or --weights, a malicious weights
file, and a .pt2 whose sample-inputs member is a malicious pickle (its marker file must never appear); and a
--weights file of plain tensors whose shapes do not fit the factory's model. More hostile .pt2 archives:
test_hostile_archives.py."""
from __future__ import annotations

import pytest

from tests.badinput.helpers import check_case

B = "--budget-s", "0.05"


def _cases():
    return [
        pytest.param(lambda f: ["export", f["full"], "-o", f["out"], *B], ("pickle",), id="export-full-pickle-as-model"),
        pytest.param(lambda f: ["profile", f["full"], *B], ("pickle",), id="profile-full-pickle-as-model"),
        pytest.param(lambda f: ["prune", f["full"], "-o", f["outdir"], "--ratio", "0.25", *B], ("pickle",),
                     id="prune-full-pickle-as-model"),
        pytest.param(lambda f: ["export", f"{f['tiny']['model_py']}:build", "--weights", f["full"],
                                "--eval-data", f["tiny"]["eval"], "-o", f["out"], *B], ("pickle", "weights_only"),
                     id="export-full-pickle-as-weights"),
        pytest.param(lambda f: ["export", f"{f['tiny']['model_py']}:build", "--weights", f["evil_weights"],
                                "--eval-data", f["tiny"]["eval"], "-o", f["out"], *B], ("evil_weights.pt",),
                     id="export-malicious-pickle-as-weights"),
        pytest.param(lambda f: ["distill", "--teacher", f["tiny_res"]["folder"],
                                "--student", f"{f['tiny_res']['model_py']}:build_res_small",
                                "--student-weights", f["evil_weights"], "--epochs", "1", "-o", f["outdir"], *B],
                     ("evil_weights.pt",), id="distill-malicious-pickle-as-student-weights"),
        pytest.param(lambda f: ["export", f["evil_pt2"], "--eval-data", f["tiny"]["eval"], "-o", f["out"], *B],
                     ("sample_inputs/model.pt",), id="export-pt2-with-malicious-member"),
        pytest.param(lambda f: ["profile", f["evil_pt2"], "--eval-data", f["tiny"]["eval"], *B],
                     ("sample_inputs/model.pt",), id="profile-pt2-with-malicious-member"),
    ]


@pytest.mark.parametrize("make_args,needles", _cases())
def test_pickle_is_refused(pickles, tiny, tiny_res, tmp_path, make_args, needles):
    f = {**pickles, "tiny": tiny, "tiny_res": tiny_res, "out": tmp_path / "out" / "m.onnx", "outdir": tmp_path / "out" / "model_dir"}
    marker = pickles["marker"]
    try:
        check_case(make_args(f), 2, needles, tmp_path=tmp_path)
    finally:
        appeared = marker.exists()
        marker.unlink(missing_ok=True)  # so one failure does not fail every later case
        if appeared:
            pytest.fail("a malicious pickle was unpickled: its marker file appeared")


def test_weights_of_the_wrong_shape_name_the_first_misfit(misfit_weights, tiny, tmp_path):
    """A plain-tensor --weights file whose shapes do not fit the factory's model: one line naming the key and both
    shapes (was torch's multi-line size-mismatch RuntimeError)."""
    f = misfit_weights
    check_case(["export", f"{tiny['model_py']}:build", "--weights", f["wide"], "--eval-data", tiny["eval"],
                "-o", tmp_path / "out" / "m.onnx", *B], 2,
               ["wide.pt", f"'{f['key']}'", str(f["file_shape"]), str(f["model_shape"])], tmp_path=tmp_path)
