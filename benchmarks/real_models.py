"""Real-model benchmark: the models users bring, through the whole chain with no workaround flags.

    python benchmarks/real_models.py [--budget-s 1]

Builds four models nothing was tuned on (nothing downloaded), each judged on a task metric (no labels):
- encoder: a 4-layer BERT-style sentence encoder from a `transformers` config (two int64 inputs; cosine);
- ocr11: a conv net exported at opset 11 with dynamic height and width, then treated as a third-party ONNX file
  (a probability map; mask_iou);
- ctc: a CRNN-style text recognizer with a CTC head ([batch, time, classes]), trained here for ~20 s on
  synthetic glyph lines so its decodes mean something (ctc_string_match; also cosine, to compare verdicts);
- prelu: a small multi-output CNN with PReLU (class logits + box regression; cosine).
Each goes export (encoder, prelu) -> simplify -> fuse -> quantize (auto) -> compile (OpenVINO int8, NNCF, from the
simplified fp32 graph), with default options and a calibration split; then `optkit compare` times the fp32 graphs
(simplified, and fused where fuse changed it) and every int8 artifact interleaved. The encoder also runs the
accuracy guard (static int8, --max-drop on cosine). Prints, per model: fused op counts, int8 node share, the
metric vs fp32, interleaved p50 and speedup, and whether anything slower than fp32 was kept silently.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import textwrap
from pathlib import Path

import numpy as np

from _common import optkit_cmd, print_checks, print_machine

MODELS = textwrap.dedent('''
    import torch
    from torch import nn


    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            from transformers import BertConfig, BertModel
            cfg = BertConfig(vocab_size=8000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                             intermediate_size=1024, max_position_embeddings=128)
            self.bert = BertModel(cfg, add_pooling_layer=False)

        def forward(self, input_ids, attention_mask):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            return (h * m).sum(1) / m.sum(1).clamp(min=1)


    class Seg(nn.Module):
        """A detector-like fully convolutional net: a probability map at the input's resolution / 4."""

        def __init__(self):
            super().__init__()
            c = [3, 32, 64, 64]
            self.body = nn.Sequential(*[m for i in range(3) for m in (
                nn.Conv2d(c[i], c[i + 1], 3, stride=2 if i < 2 else 1, padding=1), nn.BatchNorm2d(c[i + 1]), nn.ReLU())])
            self.head = nn.Conv2d(64, 1, 1)

        def forward(self, x):
            return torch.sigmoid(self.head(self.body(x)))


    class PReLUNet(nn.Module):
        """Face-detector-like: PReLU convs, two outputs (class logits, box regression)."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 16, 3), nn.PReLU(16), nn.MaxPool2d(2),
                                      nn.Conv2d(16, 32, 3), nn.PReLU(32), nn.Conv2d(32, 64, 3), nn.PReLU(64))
            self.cls = nn.Conv2d(64, 2, 1)
            self.box = nn.Conv2d(64, 4, 1)

        def forward(self, x):
            h = self.body(x)
            return self.cls(h).mean((2, 3)), self.box(h).mean((2, 3))


    class CTCRecognizer(nn.Module):
        """CRNN-like: convs over a 32xW text line, columns become time steps, a CTC head over 37 classes."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d((8, 1)))
            self.head = nn.Linear(128, 37)

        def forward(self, x):
            h = self.body(x).squeeze(2).transpose(1, 2)  # [batch, time, channels]
            return self.head(h).log_softmax(-1)


    def ctc():
        return CTCRecognizer().eval()


    def encoder():
        return Encoder().eval()


    def seg():
        return Seg().eval()


    def prelu():
        return PReLUNet().eval()
''')


def optkit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(optkit_cmd() + list(args), capture_output=True, text=True)


def must(*args: str) -> str:
    proc = optkit(*args)
    if proc.returncode != 0:
        raise SystemExit(f"optkit {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def record(path: Path) -> dict:
    return json.loads(Path(str(path) + ".optkit.json").read_text())["record"]


def data(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 8000, size=(96, 64)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[::3, 40:] = 0
    out = {}
    for name, arrays in {"encoder": {"input_ids": ids, "attention_mask": mask},
                         "ocr11": {"x": rng.random((64, 3, 96, 160), dtype=np.float32)},
                         "ctc": {"x": text_lines(np.random.default_rng(1), 128)[0]},
                         "prelu": {"x": rng.random((128, 3, 24, 24), dtype=np.float32)}}.items():
        out[name] = folder / f"{name}.npz"  # evaluation split: the first half; calibration: the second
        np.savez(out[name], **{k: v[: len(v) // 2] for k, v in arrays.items()})
        np.savez(folder / f"{name}_calib.npz", **{k: v[len(v) // 2:] for k, v in arrays.items()})
    return out


GLYPHS = np.random.default_rng(7).random((37, 32, 8)) > 0.5  # class c's 32x8 pattern (0: blank, unused)


def text_lines(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[list[int]]]:
    """n noisy 32x128 lines of 3-10 glyphs, 12 px apart: (images [n, 1, 32, 128], the class sequences)."""
    images = rng.normal(0, 0.15, (n, 1, 32, 128)).astype(np.float32)
    texts = []
    for i in range(n):
        text = [int(c) for c in rng.integers(1, 37, rng.integers(3, 11))]
        for j, c in enumerate(text):
            images[i, 0, :, 2 + 12 * j: 10 + 12 * j] += GLYPHS[c]
        texts.append(text)
    return images, texts


def train_ctc(folder: Path) -> Path:
    """The recognizer trained with CTC loss on synthetic lines (seeded): its weights as a state_dict."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("bench_models", folder / "models.py")
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)
    torch.manual_seed(0)
    net = models.ctc().train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    loss_fn = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    rng = np.random.default_rng(0)
    for _ in range(400):
        x, texts = text_lines(rng, 32)
        logp = net(torch.from_numpy(x)).transpose(0, 1)  # [time, batch, classes]
        targets = torch.tensor([c for t in texts for c in t])
        loss = loss_fn(logp, targets, torch.full((32,), logp.shape[0]), torch.tensor([len(t) for t in texts]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    x, texts = text_lines(np.random.default_rng(99), 64)
    with torch.no_grad():
        best = net(torch.from_numpy(x)).argmax(-1).numpy()
    decoded = [[int(c) for k, c in enumerate(row) if c != 0 and (k == 0 or c != row[k - 1])] for row in best]
    print(f"ctc recognizer trained: CTC loss {loss.item():.3f}, {sum(d == t for d, t in zip(decoded, texts))}/64 "
          "held-out lines read exactly")
    torch.save(net.state_dict(), folder / "ctc.pt")
    return folder / "ctc.pt"


METRICS = {"encoder": "cosine", "ocr11": "mask_iou", "ctc": "ctc_string_match", "prelu": "cosine"}


def chain(name: str, folder: Path, npz: Path, fp32_source: Path | None = None) -> dict:
    model_py = folder / "models.py"
    src = folder / f"{name}.onnx"
    metric = ["--metric", METRICS[name]]
    if fp32_source is None:
        weights = ["--weights", str(folder / "ctc.pt")] if name == "ctc" else []
        must("export", f"{model_py}:{name}", *weights, "--eval-data", str(npz), "-o", str(src), "--no-measure")
    else:
        src = fp32_source
    simp, fused, q, ov = (folder / f"{name}_{s}" for s in ("simp.onnx", "fused.onnx", "int8.onnx", "ov_int8.xml"))
    must("simplify", str(src), "-o", str(simp), "--eval-data", str(npz), "--no-measure")
    must("fuse", str(simp), "-o", str(fused), "--eval-data", str(npz), "--no-measure")
    calib = str(npz.with_name(npz.stem + "_calib.npz"))  # what any user passes: data to calibrate on
    quant = optkit("quantize", str(fused), "-o", str(q), "--eval-data", str(npz), "--calib-data", calib, *metric,
                   "--no-measure")
    comp = optkit("compile", str(simp), "-o", str(ov), "--target", "openvino-cpu", "--precision", "int8",
                  "--eval-data", str(npz), "--calib-data", calib, *metric, "--no-measure")
    guarded = None
    if name == "encoder":  # the accuracy guard on a transformer: a budget plain static int8 misses
        guarded = folder / f"{name}_guarded.onnx"
        guard = optkit("quantize", str(fused), "-o", str(guarded), "--mode", "static", "--max-drop", "0.02",
                       "--eval-data", str(npz), "--calib-data", calib, *metric, "--no-measure")
        guarded = {"path": guarded if guard.returncode == 0 else None, "rc": guard.returncode,
                   "lines": [ln for ln in guard.stderr.splitlines() if "guard" in ln or ln.startswith("error")]}
    return {"guard": guarded,"src": src, "simp": simp, "fused": fused, "q": q if quant.returncode == 0 else None,
            "ov": ov if comp.returncode == 0 else None, "quant_err": quant.stderr.strip().splitlines()[-1:] if quant.returncode else None,
            "comp_err": comp.stderr.strip().splitlines()[-1:] if comp.returncode else None,
            "comp_warned_slower": "SLOWER than its input" in comp.stderr}


def third_party_ocr(folder: Path, npz: Path) -> Path:
    """ocr11: exported at opset 11 with dynamic H and W, then handled as a file optkit did not write."""
    ocr = folder / "ocr11_given.onnx"
    must("export", f"{folder / 'models.py'}:seg", "--eval-data", str(npz), "-o", str(ocr), "--exporter",
         "torchscript", "--opset", "11", "--dynamic-axis", "x:2:height", "--dynamic-axis", "x:3:width", "--no-measure")
    third_party = folder / "ocr11.onnx"
    third_party.write_bytes(ocr.read_bytes())  # no sidecar: a third-party file
    return third_party


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=1.0)
    args = parser.parse_args()
    print_machine()
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "models.py").write_text(MODELS)
        npz = data(folder)
        third_party = third_party_ocr(folder, npz["ocr11"])
        train_ctc(folder)
        for name in ("encoder", "ocr11", "ctc", "prelu"):
            built = chain(name, folder, npz[name], third_party if name == "ocr11" else None)
            fuse = record(built["fused"])["details"]
            int8 = [a for a in (built["q"], built["ov"]) if a is not None]
            fp32 = [built["simp"]] + ([built["fused"]] if not fuse.get("kept_input") else [])
            guard = built["guard"]
            if guard and guard["path"] is not None:
                int8.append(guard["path"])
            if not int8:
                print(f"\n## {name}\nquantize: refused — {built['quant_err']}\ncompile openvino int8: refused — "
                      f"{built['comp_err']}")
                checks.append((f"{name}: no int8 artifact outside its budget was kept", True, "both refused"))
                continue
            rows = json.loads(must("compare", *map(str, fp32 + int8), "--eval-data", str(npz[name]),
                                   "--metric", METRICS[name], "--budget-s", str(args.budget_s), "--json"))["artifacts"]
            print(f"\n## {name}")
            print(f"fuse: {record(built['fused'])['summary']}")
            print(f"fused ops: {json.dumps(fuse.get('transformer', {}).get('fused') or fuse.get('fused_ops'))}")
            if built["q"] is not None:
                qd = record(built["q"])
                nodes = qd["details"].get("nodes", {})
                print(f"quantize: {qd['summary']}")
                print(f"int8 node share: {nodes.get('quantized', 0)}/{nodes.get('quantizable', 0)}")
            else:
                print(f"quantize: refused — {built['quant_err']}")
            if built["ov"] is None:
                print(f"compile openvino int8: failed — {built['comp_err']}")
            if guard:
                print(f"guard (static, --max-drop 0.02 on cosine): exit {guard['rc']}")
                for line in guard["lines"]:
                    print(f"    {line}")
                if guard["path"] is not None:
                    gd = record(guard["path"])
                    share = gd["details"]["nodes"]["quantized"] / max(1, gd["details"]["nodes"]["quantizable"])
                    timing = gd["details"]["guard"].get("p50_ms") or {}
                    ok = share >= 0.5 and timing.get("guarded", 1) < timing.get("input", 0)
                    checks.append(("encoder: the guard's result keeps >= 50% of compute int8 and beats its input",
                                   ok, f"{100 * share:.0f}% int8, {timing.get('guarded', 0):.3f} vs "
                                       f"{timing.get('input', 0):.3f} ms"))
                else:
                    checks.append(("encoder: the guard either meets the budget or exits 1", guard["rc"] == 1,
                                   f"exit {guard['rc']}"))
            print(f"| artifact | p50 ms (batch 1) | speedup vs fp32 | {METRICS[name]} vs fp32 | cosine vs fp32 |")
            print("|---|---:|---:|---:|---:|")
            for r in rows:
                fid = r["fidelity_vs_first"] or {}
                acc = r["accuracy"] or {}
                print(f"| {r['name']} | {r['latency'][0]['p50_ms']:.3f} | {r['speedup_vs_first'][0]:.2f}x | "
                      f"{acc.get('value', float('nan')):.5f} | {fid.get('cosine', float('nan')):.5f} |")
            ov_row = next((r for r in rows if built["ov"] is not None and r["name"] == built["ov"].name), None)
            if ov_row is not None and ov_row["speedup_vs_first"][0] < 1.0:
                checks.append((f"{name}: compile's OpenVINO int8 slower than fp32 was flagged SLOWER",
                               built["comp_warned_slower"], f"{ov_row['speedup_vs_first'][0]:.2f}x"))
            q_row = next((r for r in rows if built["q"] is not None and r["name"] == built["q"].name), None)
            slower = q_row is not None and q_row["speedup_vs_first"][0] < 1.0
            checks.append((f"{name}: quantize --mode auto kept no int8 slower than fp32 (refusing is allowed)",
                           not slower, "refused" if built["q"] is None else f"{q_row['speedup_vs_first'][0]:.2f}x"))
            if name == "encoder":
                attention = (fuse.get("transformer") or {}).get("fused", {}).get("Attention", 0)
                checks.append(("encoder: attention fuses from the default export", attention == 4, f"{attention} of 4"))
    print_checks(checks)


if __name__ == "__main__":
    main()
