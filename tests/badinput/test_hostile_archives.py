"""Hostile .pt2 archives: a genuine torch.export program with members added that torch.export.load would unpickle
unsafely (legacy weights/constants, a payload config's use_pickle, the pre-2.8 format), pickles hidden behind
misleading names, duplicated and odd member paths, a zip bomb, a lying size, too many members, an archive over the
size cap; and torch's own logged traceback when its loader fails. Every case: exit 2, one line naming the member
(or the bound), no traceback, nothing written, and the payloads' marker file never appears."""
from __future__ import annotations

import pytest

from tests.badinput.conftest import HOSTILE_PT2
from tests.badinput.helpers import check_case, run_cli

B = "--budget-s", "0.05"


def _no_marker(marker) -> None:
    appeared = marker.exists()
    marker.unlink(missing_ok=True)  # so one failure does not fail every later case
    if appeared:
        pytest.fail("a malicious pickle was unpickled: its marker file appeared")


@pytest.mark.parametrize("variant", list(HOSTILE_PT2))
def test_hostile_pt2_is_refused_before_torch_reads_it(hostile_pt2, tiny, tmp_path, variant):
    needles = [HOSTILE_PT2[variant]]
    if variant in ("zip-bomb", "lying-size"):
        needles.append("zip bomb")
    if variant == "duplicate-sample-inputs":
        needles.append("more than once")
    if variant == "many-members":
        needles.append("20000")
    try:
        check_case(["export", hostile_pt2[variant], "--eval-data", tiny["eval"], "-o", tmp_path / "out" / "m.onnx", *B],
                   2, needles, tmp_path=tmp_path)
    finally:
        _no_marker(hostile_pt2["marker"])


@pytest.mark.parametrize("variant", ["legacy-weights", "config-pickle-misleading-extension"])
def test_profile_refuses_a_hostile_pt2_too(hostile_pt2, tiny, tmp_path, variant):
    try:
        check_case(["profile", hostile_pt2[variant], "--eval-data", tiny["eval"], *B], 2, [HOSTILE_PT2[variant]],
                   tmp_path=tmp_path)
    finally:
        _no_marker(hostile_pt2["marker"])


def test_a_pt2_over_the_size_cap_is_refused_unread(tiny_pt2, tiny, tmp_path, monkeypatch):
    import optkit.backends.pt2 as torch_backend

    monkeypatch.setattr(torch_backend, "PT2_MAX_BYTES", 4096)  # tiny.pt2 is some 10 KiB: over this cap
    check_case(["export", tiny_pt2, "--eval-data", tiny["eval"], "-o", tmp_path / "out" / "m.onnx", *B], 2,
               ["tiny.pt2", "over 4.0 KiB"], tmp_path=tmp_path)


@pytest.mark.slow
def test_torch_logged_traceback_stays_off_the_terminal(hostile_pt2, tiny, tmp_path):
    """torch.export.load logs the traceback of its failed load before raising: a real process shows only optkit's line."""
    check_case(["export", hostile_pt2["stray"], "--eval-data", tiny["eval"], "-o", tmp_path / "out" / "m.onnx", *B],
               2, ["stray.pt2", "stray.txt"], tmp_path=tmp_path, runner=run_cli)
