"""Cold vs cached runs of every shipped recipe: the step cache's acceptance figure.

    python benchmarks/recipe_cache.py [--recipes digits_cnn_cpu ...] [--keep DIR]

Each recipe runs twice into a fresh output directory, as CI would (``optkit run`` in a new
process each time, wall clock measured around the process): cold (nothing cached), then again with
nothing changed. A recipe whose runtime is missing here (TensorRT without a GPU) is reported with
its exit code and message instead. Prints the table and the acceptance check (cached < 20% of cold).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from _common import ROOT, optkit_cmd, print_checks, print_machine


def _run(recipe: Path, out: Path) -> tuple[float, int, dict | None, str]:
    start = time.perf_counter()
    proc = subprocess.run([*optkit_cmd(), "run", str(recipe), "--set", f"output_dir={out}"],
                          capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else None
    last = (proc.stderr.strip().splitlines() or [""])[-1]
    return wall, proc.returncode, report, last


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", nargs="*", help="recipe stems (default: all in recipes/)")
    parser.add_argument("--keep", type=Path, help="write outputs here instead of a temporary folder")
    args = parser.parse_args()
    print_machine()
    recipes = sorted((ROOT / "recipes").glob("*.yaml"))
    if args.recipes:
        recipes = [r for r in recipes if r.stem in args.recipes]
    checks = []
    lines = ["| recipe | exit | cold s | cached s | cached / cold | steps reused | gates |", "|---|---:|---:|---:|---:|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        for recipe in recipes:
            out = root / recipe.stem
            cold, code, report, last = _run(recipe, out)
            if report is None or report["status"] == "step failed":
                lines.append(f"| {recipe.stem} | {code} | {cold:.1f} | — | — | — | {last[:120]} |")
                continue
            cached, code2, report2, _ = _run(recipe, out)
            steps = len(report2["steps"]) - 1 + len(report2["profiles"])
            gates = ", ".join(f"{'pass' if g['passed'] else 'FAIL'} {g['gate']}" for g in report2["gates"]) or "—"
            lines.append(f"| {recipe.stem} | {code}/{code2} | {cold:.1f} | {cached:.1f} | {cached / cold:.1%} | "
                         f"{len(report2['cached_steps'])}/{steps} | {gates} |")
            checks.append((f"{recipe.stem}: cached run < 20% of cold, every step reused",
                           cached < 0.2 * cold and len(report2["cached_steps"]) == steps,
                           f"{cached:.1f}s / {cold:.1f}s = {cached / cold:.1%}"))
    print("\n".join(lines))
    print_checks(checks)


if __name__ == "__main__":
    main()
