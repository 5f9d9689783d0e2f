"""optkit generate ARTIFACT --prompt TEXT"""
from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from optkit.cli import options as o


def generate(
    artifact: Annotated[str, typer.Argument(help="A causal language model: a Hugging Face folder (*ForCausalLM), or "
                                                 "an artifact optkit made from one.")],
    prompt: Annotated[str, typer.Option("--prompt", help="The text to continue (with --chat: the user's message).")],
    chat: Annotated[bool, typer.Option("--chat", help="Wrap the prompt in the folder's chat template as the user's "
                                                      "message, with the assistant's turn to follow.")] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, max=65536,
                                                help="Tokens to generate at most (fewer at an end-of-text token).")] = 64,
    temperature: Annotated[float, typer.Option("--temperature", min=0.0,
                                               help="0: greedy (the default); above 0: sample, flatter as it grows.")] = 0.0,
    top_p: Annotated[float, typer.Option("--top-p", min=0.0, max=1.0,
                                         help="Sampling: keep the most likely tokens up to this probability mass.")] = 1.0,
    seed: Annotated[Optional[int], typer.Option("--seed", min=0, help="Sampling: the random seed (the same seed, the same "
                                                               "text).")] = None,
    threads: o.Threads = 1,
    task: o.Task = None,
    trust_remote_code: o.TrustRemoteCode = False,
) -> None:
    """Stream a causal language model's continuation of a prompt to stdout, token by token (greedy by default)."""
    from optkit.backends.generative import open_causal_lm
    from optkit.backends.opening import open_artifact
    from optkit.eval.generation import (check_sampling, decode_stream, generate_stream, prompt_ids, source_of,
                                        stop_tokens, tokenizer_for)

    check_sampling(temperature, top_p)
    art = open_artifact(artifact, task=task, trust_remote_code=trust_remote_code)
    source_of(art)  # a model that does not generate text is refused before anything loads
    tokenizer = tokenizer_for(art)
    ids = prompt_ids(tokenizer, prompt, chat=chat)
    with open_causal_lm(art, threads=threads) as lm:
        tokens = generate_stream(lm, ids, max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                                 stop=stop_tokens(art, tokenizer))
        for piece in decode_stream(tokenizer, tokens):
            sys.stdout.write(piece)
            sys.stdout.flush()
    sys.stdout.write("\n")
