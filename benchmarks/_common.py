"""Helpers shared by the benchmark scripts: run the installed optkit CLI, print acceptance checks."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def optkit_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("optkit")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "optkit"]


def run_optkit(*args: str) -> str:
    """stdout of one optkit command run from the repository root; a failure stops the benchmark."""
    proc = subprocess.run(optkit_cmd() + list(args), capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"optkit {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout


def optkit_json(*args: str) -> dict:
    return json.loads(run_optkit(*args, "--json"))


def print_checks(checks: list[tuple[str, bool, str]], title: str = "acceptance") -> None:
    print(f"\n## {title}")
    for text, ok, value in checks:
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}: {value}")


def print_machine() -> None:
    """The CPU every figure below was measured on: model, cores, and the SIMD flags that decide int8 speed."""
    sys.path.insert(0, str(ROOT))
    from optkit.types.machine import cpu_info

    cpu = cpu_info()
    print(f"# CPU: {cpu.model} ({cpu.logical_cores} logical cores); SIMD: "
          f"{', '.join(cpu.simd or []) or 'none of avx2/avx512f/avx512_vnni/avx512_bf16/amx'}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
