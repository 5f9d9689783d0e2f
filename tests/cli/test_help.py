"""Fast start: --help imports no heavy backend, even when they are installed, and works without them."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

HEAVY = ["torch", "onnxruntime", "openvino", "tensorrt", "neural_compressor", "onnx", "onnxscript", "nncf",
         "uvicorn", "starlette", "httptools", "prometheus_client", "ray"]
COMMANDS = [[], ["export"], ["simplify"], ["fuse"], ["quantize"], ["prune"], ["distill"], ["compile"], ["profile"], ["report"],
            ["compare"], ["debug"], ["run"], ["optimize"], ["generate"], ["serve"], ["loadtest"], ["recipe"], ["recipe", "schema"]]


def test_every_command_is_in_the_help_check():
    from typer.main import get_command

    from optkit.cli.app import app

    group = get_command(app)
    assert set(group.list_commands(None)) == {a[0] for a in COMMANDS if a}


def test_each_one_liner_in_the_top_help_is_its_commands_own():
    """`optkit --help` shows COMMANDS' static lines (no command imported): each must begin the command's own help."""
    from optkit.cli.app import COMMANDS as LINES, load_command

    for name, (_, line) in LINES.items():
        own = " ".join((load_command(name).help or "").split())
        assert own.startswith(line.removesuffix("...").rstrip(",;. ")), (name, line, own[:120])


def test_top_help_imports_no_numpy_pydantic_or_command():
    code = ("import sys; sys.argv = ['optkit', '--help']\n"
            "from optkit.cli.app import main\n"
            "try:\n    main()\nexcept SystemExit:\n"
            "    print('LOADED:', sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'pydantic', 'rich')"
            " or m.startswith(('optkit.steps', 'optkit.engine', 'optkit.eval', 'optkit.backends'))))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Commands:" in proc.stdout and "LOADED: []" in proc.stdout, proc.stdout[-500:]


def test_a_mistyped_command_gets_a_suggestion():
    proc = subprocess.run([sys.executable, "-m", "optkit", "expor"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "error: No such command 'expor'. Did you mean 'export'" in proc.stderr, proc.stderr

SCRIPT = textwrap.dedent('''
    import sys
    HEAVY = {heavy!r}

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                raise ImportError(f"blocked for this test: {{name}}")
            return None

    sys.meta_path.insert(0, Block())
    sys.argv = ["optkit", *{args!r}, "--help"]
    from optkit.cli.app import main
    try:
        main()
    except SystemExit as exc:
        loaded = [m for m in HEAVY if m in sys.modules]
        print("LOADED:", loaded)
        raise
''')


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a) or "optkit")
def test_help_imports_no_heavy_backend(args):
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(heavy=HEAVY, args=args)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage" in proc.stdout
    assert "LOADED: []" in proc.stdout


def test_version_and_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "optkit", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout.startswith("optkit ")
