"""Plain bad usage of the command line itself (unknown command or option, missing argument, extra argument),
including `optkit recipe schema`: exit 2 and one `error:` line, like every other bad input."""
from __future__ import annotations

import pytest

from tests.badinput.helpers import run_template


def p(cid: str, args: list[str], *needles):
    return pytest.param(args, needles, id=cid)


CASES = [
    p("unknown-command", ["frobnicate"], "frobnicate"),
    p("recipe-unknown-subcommand", ["recipe", "frobnicate"], "frobnicate"),
    p("recipe-schema-extra-argument", ["recipe", "schema", "extra_arg"], "extra_arg"),
    p("recipe-schema-unknown-option", ["recipe", "schema", "--bogus"], "--bogus"),
    p("export-missing-output", ["export", "{tiny[folder]}"], ("-o", "--output")),
    p("export-unknown-option", ["export", "{tiny[folder]}", "-o", "{out}", "--bogus", "1"], "--bogus"),
    p("export-exporter-magic", ["export", "{tiny[folder]}", "-o", "{out}", "--exporter", "magic"], "exporter"),
    p("profile-missing-artifact", ["profile"], ("artifact", "missing")),
    p("compare-no-artifacts", ["compare"], ("artifacts", "missing")),
    p("distill-missing-teacher", ["distill", "-o", "{outdir}", "--student-width", "0.5"], "--teacher"),
    p("quantize-unknown-mode", ["quantize", "{tiny_onnx}", "-o", "{out}", "--mode", "int3"], ("mode", "int3")),
    p("compile-unknown-target", ["compile", "{tiny_onnx}", "-o", "{out}", "--target", "abacus"], ("target", "abacus")),
    p("run-set-malformed", ["run", "{tmp}/nope.yaml", "--set"], "--set"),
]


@pytest.mark.parametrize("args,needles", CASES)
def test_bad_usage(request, tmp_path, args, needles):
    run_template(request, tmp_path, args, 2, needles, timeout=30)
