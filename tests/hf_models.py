"""Tiny Hugging Face model folders built here, never downloaded: a WordPiece tokenizer trained with `tokenizers` on
a small generated corpus, BERT models from a `BertConfig` saved with `save_pretrained` (safetensors), and a
sentence-transformers folder laid out as `SentenceTransformer.save` writes it (modules.json, 1_Pooling, 2_Normalize).
"""
from __future__ import annotations

import json
import random
from pathlib import Path

SUBJECTS = ["the cat", "a dog", "my friend", "the model", "this engine", "our team", "the server", "a student"]
VERBS = ["runs", "likes", "builds", "breaks", "measures", "ships", "reads", "fixes"]
OBJECTS = ["fast code", "the report", "a new artifact", "every test", "the quantized graph", "old files",
           "int8 kernels", "a long sentence about latency and accuracy on a busy machine"]


def sentences(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)]
        if rng.random() < 0.4:
            words += ["and", rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)]
        out.append(" ".join(words))
    return out


def label_of(text: str) -> int:
    """A deterministic 3-class label (what the classifier is asked to predict in the jsonl files)."""
    return sum(text.encode()) % 3


def save_tokenizer(folder: Path) -> int:
    """A WordPiece tokenizer trained here, saved with save_pretrained; its vocabulary size."""
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(sentences(300, seed=1), vocab_size=200, min_frequency=1)
    BertTokenizerFast(tokenizer_object=trainer._tokenizer, model_max_length=64).save_pretrained(str(folder))
    return trainer.get_vocab_size()


def bert_folder(folder: Path, head: str | None = None, num_labels: int = 3) -> Path:
    """head: None (BertModel), 'sequence' or 'token' classification."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification, BertModel

    vocab = save_tokenizer(folder)
    config = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=num_labels,
                        id2label={i: f"class_{i}" for i in range(num_labels)},
                        label2id={f"class_{i}": i for i in range(num_labels)})
    cls = {None: BertModel, "sequence": BertForSequenceClassification, "token": BertForTokenClassification}[head]
    torch.manual_seed(0)
    model = cls(config).eval()
    model.save_pretrained(str(folder))
    return folder


def sentence_folder(folder: Path, pooling: str = "mean") -> Path:
    """A sentence-transformers folder: the BERT at the root, mean (or cls) pooling, then normalisation."""
    bert_folder(folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 64, "do_lower_case": False}))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False}))
    (folder / "2_Normalize").mkdir()
    return folder


def write_texts(path: Path, n: int = 48, seed: int = 2, labels: bool = False) -> Path:
    """.txt (one per line) or, with labels, .jsonl with text/label fields."""
    texts = sentences(n, seed)
    if labels or path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": t, "label": label_of(t)}) + "\n" for t in texts))
    else:
        path.write_text("\n".join(texts) + "\n")
    return path


COLOURS = {"red": (200, 30, 30), "green": (30, 180, 40), "blue": (30, 40, 200)}


def vit_folder(folder: Path) -> Path:
    """A tiny ViT image classifier (32x32, three colour classes) with its ViTImageProcessor saved beside it."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    names = list(COLOURS)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64, num_labels=len(names), id2label=dict(enumerate(names)),
                       label2id={n: i for i, n in enumerate(names)})
    torch.manual_seed(0)
    ViTForImageClassification(config).eval().save_pretrained(str(folder))
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(folder))
    return folder


def write_images(folder: Path, per_class: int = 6, labels: bool = True) -> Path:
    """PNG images of noisy colour patches (40x48, so the processor really resizes), in class sub-folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        target = folder / name if labels else folder
        target.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (40, 48, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(target / f"{name}_{i}.png")
    return folder


CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def save_bpe_tokenizer(folder: Path, texts: list[str] | None = None, vocab_size: int = 320) -> int:
    """A byte-level BPE tokenizer trained here (bos/eos/pad, a chat template), saved with save_pretrained."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    trainer = ByteLevelBPETokenizer()
    trainer.train_from_iterator(texts or sentences(400, seed=1), vocab_size=vocab_size, min_frequency=1,
                                special_tokens=["<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|end|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=trainer._tokenizer, bos_token="<s>", eos_token="</s>",
                                  pad_token="<pad>", model_max_length=1024)
    tok.chat_template = CHAT_TEMPLATE
    tok.save_pretrained(str(folder))
    return len(tok)


def llama_folder(folder: Path, *, hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                 texts: list[str] | None = None, seed: int = 0) -> Path:
    """A Llama-style causal LM (grouped-query attention, RoPE, SwiGLU) from a LlamaConfig with random weights and a
    BPE tokenizer trained here: what a user's Llama/Qwen2/Mistral folder looks like, a few hundred KB."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = save_bpe_tokenizer(folder, texts)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=1024, bos_token_id=0, eos_token_id=1, pad_token_id=2,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).eval().save_pretrained(str(folder))
    return folder


def train_briefly(model, tokenizer, steps: int = 30) -> None:
    """A few AdamW steps on the generated sentences (one thread: two spin against each other on a shared 2-core
    machine, 30x slower), so a tiny causal LM's perplexity and greedy continuations mean something."""
    import torch

    texts = [f"<s>{t}</s>" for t in sentences(256, seed=3)]
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-2)
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, len(texts), (16,))
        ids, mask = enc.input_ids[rows], enc.attention_mask[rows]
        loss = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    torch.set_num_threads(threads)
    model.eval()
