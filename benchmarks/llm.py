"""Decode speed of optkit's generative artifacts on a ~100M-parameter Llama-style model, one interleaved pass.

A Llama-style causal LM is built from a config (random weights: speed does not depend on them) with a BPE tokenizer
trained here, then through the CLI a user runs: `export` (ONNX with past key/values, verified against transformers'
greedy tokens), `quantize --mode weight-only` (ONNX Runtime MatMulNBits int8 and int4) and `compile --target
openvino-cpu` (stateful IR, NNCF int8 and int4 weights). Every artifact and transformers itself are then timed in one
round-robin pass (`eval/generation.time_generation`: time to first token at 128 and 512 prompt tokens, decode
tokens/s at batch 1, one thread, pinned to one core), so the ratios below come from the same seconds of the same
machine. Quality is not judged here (random weights): the trained tiny LM of the tests does that.

Peers on the same weights (llama.cpp Q4_0/Q8_0 through llama-cpp-python, Optimum-Intel's int4 default under
openvino-genai, onnxruntime-genai's int4 builder) are issue 33's next step: each needs its own venv.

Run:  python benchmarks/llm.py [--layers 12] [--budget-s 5] [--work DIR]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from _common import ROOT, print_checks, print_machine, run_optkit

sys.path.insert(0, str(ROOT))


def build_model(folder: Path, layers: int) -> int:
    """A Llama-style model of about 100M parameters (at 12 layers): hidden 768, GQA 12/4 heads, SwiGLU 2048, a 32k
    vocabulary (the tokenizer trained here is smaller: timing feeds random ids, nothing is decoded to text)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.hf_models import save_bpe_tokenizer

    save_bpe_tokenizer(folder)
    config = LlamaConfig(vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=layers,
                         num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=2048,
                         bos_token_id=0, eos_token_id=1, pad_token_id=2, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(str(folder))
    return sum(p.numel() for p in model.parameters())


def build_artifacts(work: Path) -> dict[str, Path]:
    """The artifacts a user would build with the CLI, keyed by the name the table shows."""
    from tests.hf_models import sentences

    text = work / "text.txt"
    text.write_text("\n".join(sentences(24, seed=5)))
    folder, out = work / "llama", work / "out"
    arts = {"transformers fp32": folder, "ort fp32": out / "fp32.onnx"}
    run_optkit("export", str(folder), "-o", str(arts["ort fp32"]), "--text-data", str(text), "--no-measure")
    for bits in (8, 4):
        arts[f"ort int{bits} (MatMulNBits g128)"] = out / f"int{bits}.onnx"
        run_optkit("quantize", str(arts["ort fp32"]), "-o", str(arts[f"ort int{bits} (MatMulNBits g128)"]),
                   "--mode", "weight-only", "--bits", str(bits), "--group-size", "128", "--no-measure")
    from optkit.backends.opening import open_artifact

    eval_npz = open_artifact(arts["ort fp32"]).eval_data  # the tokenized evaluation split the export recorded
    for precision in ("fp32", "int8", "int4"):
        name = f"openvino {precision}" + (" (NNCF g128)" if precision == "int4" else "")
        arts[name] = out / f"ov_{precision}" / "model.xml"
        run_optkit("compile", str(folder), "-o", str(arts[name]), "--target", "openvino-cpu", "--precision",
                   precision, "--eval-data", str(eval_npz), "--no-measure",
                   *(["--group-size", "128"] if precision == "int4" else []))
    return arts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--budget-s", type=float, default=5.0, help="timed seconds per model and prompt length")
    parser.add_argument("--work", type=Path, default=None, help="where the model and artifacts go (default: a "
                                                                  "temporary folder, removed after)")
    args = parser.parse_args()
    print_machine()
    work = args.work or Path(tempfile.mkdtemp(prefix="optkit-llm-"))
    try:
        params = build_model(work / "llama", args.layers)
        print(f"# model: Llama-style, {params / 1e6:.0f}M parameters, {args.layers} layers, random weights")
        arts = build_artifacts(work)
        _time(arts, args.budget_s)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.glob("*.safetensors"))
    return path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(path.stem + ".*")
                                     if p != path and p.suffix in (".bin", ".data"))


def _time(arts: dict[str, Path], budget_s: float) -> None:
    from optkit.backends.generative import open_causal_lm
    from optkit.backends.opening import open_artifact
    from optkit.eval.generation import time_generation

    lms = [open_causal_lm(open_artifact(path), threads=1) for path in arts.values()]
    timings = time_generation(lms, prompt_lengths=(128, 512), new_tokens=32, budget_s=budget_s, threads=1)
    base = timings[0][0].decode_tokens_per_s
    print("\n| artifact | size MB | TTFT@128 ms | TTFT@512 ms | decode tok/s | x transformers |")
    print("|---|---:|---:|---:|---:|---:|")
    for (name, path), (short, long_) in zip(arts.items(), timings):
        print(f"| {name} | {_size(path) / 1e6:.1f} | {short.ttft_ms:.1f} | {long_.ttft_ms:.1f} | "
              f"{short.decode_tokens_per_s:.1f} | {short.decode_tokens_per_s / base:.2f}x |")
    best = max(range(len(lms)), key=lambda i: timings[i][0].decode_tokens_per_s)
    fp32 = list(arts).index("ort fp32")
    ratio = timings[best][0].decode_tokens_per_s / timings[fp32][0].decode_tokens_per_s
    print_checks([("fastest decode >= 3x the fp32 ONNX export's, batch 1, 1 thread", ratio >= 3.0,
                   f"{list(arts)[best]}: {ratio:.2f}x")])
    for lm in lms:
        lm.close()


if __name__ == "__main__":
    main()
