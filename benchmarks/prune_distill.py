"""Prune and distill benchmark on digits_cnn: smaller networks, their accuracy and ONNX Runtime speed.

    python benchmarks/prune_distill.py [--epochs 10] [--budget-s 2]

1. structured pruning to <= 0.5x MACs with recovery fine-tuning, exported to ONNX and compared with
   the unpruned export (``optkit compare``: interleaved, batch 1 and 8, 1 thread);
2. a student with <= 0.25x the teacher's MACs (the teacher narrowed by structured pruning, starting
   from its kept weights) trained two ways for the same epochs from the same initialisation:
   distilled from the teacher, and on labels alone (``alpha 0``);
3. prune -> export -> quantize as one recipe, and its ledger.
Every figure is measured in this run; the eval split (360 images) is never used to pick epochs.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import yaml
from _common import ROOT, optkit_json, print_checks, run_optkit, print_machine

sys.path.insert(0, str(ROOT))
from optkit.report.compare import compare_markdown  # noqa: E402
from optkit.report.ledger import ledger_markdown  # noqa: E402

MODEL = "sample_models/digits_cnn"


def _row(result: dict, step: str) -> dict:
    return next(r for r in result["steps"] if r["step"] == step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning and distillation epochs")
    parser.add_argument("--budget-s", type=float, default=2.0)
    args = parser.parse_args()
    print_machine()
    measure = ["--budget-s", "0.5"]
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        # 1. pruning
        pruned = optkit_json("prune", MODEL, "-o", str(out / "pruned"), "--target-macs", "0.5",
                             "--finetune-epochs", str(args.epochs), *measure)
        orig, prow = _row(pruned, "original"), _row(pruned, "prune")
        run_optkit("export", MODEL, "-o", str(out / "full.onnx"), "--no-measure")
        run_optkit("export", str(out / "pruned"), "-o", str(out / "pruned.onnx"), "--no-measure")
        cmp = optkit_json("compare", str(out / "full.onnx"), str(out / "pruned.onnx"), "--batch-sizes", "1,8",
                          "--threads", "1", "--budget-s", str(args.budget_s))["artifacts"]
        print("## 1. structured pruning (ONNX Runtime, interleaved; first row = unpruned)")
        print(f"MACs {orig['macs'] / 1e6:.1f} M -> {prow['macs'] / 1e6:.1f} M ({prow['macs'] / orig['macs']:.3f}x), "
              f"params {orig['params'] / 1e3:.0f} k -> {prow['params'] / 1e3:.0f} k; {prow['summary']}")
        print(compare_markdown(cmp))
        full, small = cmp
        drop = 100 * (full["accuracy"]["value"] - small["accuracy"]["value"])
        ratio = small["latency"][0]["p50_ms"] / full["latency"][0]["p50_ms"]
        checks += [("prune: MACs <= 0.5x", prow["macs"] <= 0.5 * orig["macs"], f"{prow['macs'] / orig['macs']:.3f}x"),
                   ("prune: top-1 within 1 point of the original", drop <= 1.0, f"{-drop:+.2f} pt"),
                   ("prune: ORT batch-1 p50 <= 0.65x the unpruned model's", ratio <= 0.65, f"{ratio:.3f}x")]

        # 2. distillation vs the same student on labels alone
        results = {}
        for name, alpha in (("distilled", "0.9"), ("labels only", "0")):
            results[name] = optkit_json("distill", "--teacher", MODEL, "--student-macs", "0.25",
                                        "--alpha", alpha, "--epochs", str(args.epochs), "--seed", "0",
                                        "-o", str(out / name.replace(" ", "_")), *measure)
        teacher = _row(results["distilled"], "original")
        print("\n## 2. a <= 0.25x-MACs student (same init, epochs and seed), batch-1 torch p50")
        print("| student | MACs | x teacher | top-1 | Δ vs teacher (pt) | best epoch (val top-1) | p50 ms |")
        print("|---|---|---|---|---|---|---|")
        print(f"| teacher | {teacher['macs'] / 1e6:.1f} M | 1.00 | {100 * teacher['accuracy']['value']:.2f}% | | | "
              f"{teacher['latency']['p50_ms']:.3f} |")
        acc = {}
        for name, res in results.items():
            row = _row(res, "distill")
            acc[name] = row["accuracy"]["value"]
            folder = out / name.replace(" ", "_")
            training = json.loads(folder.with_name(folder.name + ".optkit.json").read_text())["record"]["details"]["training"]
            ep = f"{training['best_epoch']} ({100 * training['best_val_top1']:.1f}%)"
            print(f"| {name} | {row['macs'] / 1e6:.1f} M | {row['macs'] / teacher['macs']:.3f} | "
                  f"{100 * acc[name]:.2f}% | {100 * (acc[name] - teacher['accuracy']['value']):+.2f} | {ep} | "
                  f"{row['latency']['p50_ms']:.3f} |")
        srow = _row(results["distilled"], "distill")
        kd_drop = 100 * (teacher["accuracy"]["value"] - acc["distilled"])
        checks += [("distill: student MACs <= 0.25x", srow["macs"] <= 0.25 * teacher["macs"], f"{srow['macs'] / teacher['macs']:.3f}x"),
                   ("distill: top-1 within 1.5 points of the teacher", kd_drop <= 1.5, f"{-kd_drop:+.2f} pt"),
                   ("distill: better than the same student on labels alone", acc["distilled"] > acc["labels only"],
                    f"{100 * acc['distilled']:.2f}% vs {100 * acc['labels only']:.2f}%")]

        # 3. the chain
        recipe = out / "chain.yaml"
        recipe.write_text(yaml.safe_dump({
            "model": str(ROOT / MODEL), "output_dir": str(out / "chain"),
            "measure": {"batch_sizes": [1, 8], "threads": 1, "budget_s": 1.0},
            "steps": [{"prune": {"target_macs": 0.5, "finetune_epochs": args.epochs}}, {"export": {"opset": 18}},
                      {"quantize": {"mode": "static", "max_drop": 0.5, "guard": False}}]}))
        chain = optkit_json("run", str(recipe))
        print("\n## 3. prune -> export -> quantize (one recipe)")
        print(ledger_markdown(chain["steps"]))
        steps = [r["step"] for r in chain["steps"]]
        composed = steps == ["original", "prune", "export", "quantize"] and all(
            r["accuracy"] and r["speedup_vs_original"] for r in chain["steps"])
        last = chain["steps"][-1]
        checks.append(("prune -> export -> quantize composes; every row has accuracy and speedup vs original", composed,
                       f"final {100 * last['accuracy']['value']:.2f}% top-1, {last['speedup_vs_original']:.2f}x vs torch"))
    print_checks(checks)


if __name__ == "__main__":
    main()
