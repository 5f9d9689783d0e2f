"""Missing, empty, junk and truncated model files given to every command: exit 2 naming the file, nothing written."""
from __future__ import annotations

import pytest

from tests.badinput.helpers import run_template

B = "--budget-s", "0.05"
ONNX_KINDS = {  # kind -> what the error line must name
    "missing_onnx": "missing.onnx", "empty_onnx": "empty.onnx", "junk_onnx": "junk.onnx",
    "truncated_onnx": "truncated.onnx",
}
ONNX_COMMANDS = {
    "simplify": ["simplify", "{model}", "-o", "{out}", *B],
    "fuse": ["fuse", "{model}", "-o", "{out}", *B],
    "quantize": ["quantize", "{model}", "-o", "{out}", "--mode", "static", *B],
    "compile": ["compile", "{model}", "-o", "{out}", "--target", "ort-cpu", *B],
    "profile": ["profile", "{model}", *B],
    "report": ["report", "{model}"],
}

CASES: list[tuple[str, list[str], tuple]] = []
for cmd, template in ONNX_COMMANDS.items():
    for kind, name in ONNX_KINDS.items():
        args = [a.replace("{model}", "{bad_models[%s]}" % kind) for a in template]
        CASES.append((f"{cmd}-{name}", args, (name,)))

CASES += [
    ("compare-second-missing", ["compare", "{tiny_onnx}", "{bad_models[missing_onnx]}", *B], ("missing.onnx",)),
    ("compare-second-truncated", ["compare", "{tiny_onnx}", "{bad_models[truncated_onnx]}", *B], ("truncated.onnx",)),
    ("debug-int8-junk", ["debug", "{tiny_onnx}", "{bad_models[junk_onnx]}"], ("junk.onnx",)),
    ("debug-float-truncated", ["debug", "{bad_models[truncated_onnx]}", "{tiny_onnx}"], ("truncated.onnx",)),
    # PyTorch-side models
    ("export-missing.pt2", ["export", "{bad_models[missing_pt2]}", "-o", "{out}", *B], ("missing.pt2",)),
    ("export-empty.pt2", ["export", "{bad_models[empty_pt2]}", "-o", "{out}", *B], ("empty.pt2",)),
    ("export-junk.pt2", ["export", "{bad_models[junk_pt2]}", "-o", "{out}", *B], ("junk.pt2",)),
    ("export-truncated.pt2", ["export", "{bad_models[truncated_pt2]}", "-o", "{out}", *B], ("truncated.pt2",)),
    ("export-missing-folder", ["export", "{bad_models[missing_folder]}", "-o", "{out}", *B], ("missing_folder",)),
    ("export-empty-folder", ["export", "{bad_models[empty_folder]}", "-o", "{out}", *B], ("empty_folder",)),
    ("export-junk-optkit.yaml", ["export", "{bad_models[junk_yaml_folder]}", "-o", "{out}", *B], ("optkit.yaml",)),
    ("export-text-file", ["export", "{bad_models[text]}", "-o", "{out}", *B], ("notes.txt",)),
    ("profile-truncated.pt2", ["profile", "{bad_models[truncated_pt2]}", *B], ("truncated.pt2",)),
    ("profile-empty-folder", ["profile", "{bad_models[empty_folder]}", *B], ("empty_folder",)),
    ("prune-missing-folder", ["prune", "{bad_models[missing_folder]}", "-o", "{outdir}", "--ratio", "0.25", *B],
     ("missing_folder",)),
    ("prune-junk.pt2", ["prune", "{bad_models[junk_pt2]}", "-o", "{outdir}", "--ratio", "0.25", *B], ("junk.pt2",)),
    ("prune-truncated.pt2", ["prune", "{bad_models[truncated_pt2]}", "-o", "{outdir}", "--ratio", "0.25", *B],
     ("truncated.pt2",)),
    ("prune-empty-folder", ["prune", "{bad_models[empty_folder]}", "-o", "{outdir}", "--ratio", "0.25", *B],
     ("empty_folder",)),
    ("distill-teacher-missing", ["distill", "--teacher", "{bad_models[missing_folder]}", "--student-width", "0.5",
                                 "--epochs", "1", "-o", "{outdir}", *B], ("missing_folder",)),
    ("distill-teacher-junk-optkit.yaml", ["distill", "--teacher", "{bad_models[junk_yaml_folder]}", "--student-width",
                                          "0.5", "--epochs", "1", "-o", "{outdir}", *B], ("optkit.yaml",)),
    ("distill-student-junk.pt2", ["distill", "--teacher", "{tiny_res[folder]}", "--student", "{bad_models[junk_pt2]}",
                                  "--epochs", "1", "-o", "{outdir}", *B], ("junk.pt2",)),
    ("distill-student-truncated.pt2", ["distill", "--teacher", "{tiny_res[folder]}", "--student",
                                       "{bad_models[truncated_pt2]}", "--epochs", "1", "-o", "{outdir}", *B],
     ("truncated.pt2",)),
]


@pytest.mark.parametrize("args,needles", [pytest.param(a, n, id=i) for i, a, n in CASES])
def test_bad_model_file(request, tmp_path, args, needles):
    run_template(request, tmp_path, args, 2, needles)
