"""What measuring a generative language model returns (``eval/generation.py``): records, not dicts.

A causal LM is judged per token, not per batch: how long the first token takes after a prompt of a given length,
how many tokens per second it decodes after that (batch 1), how well it predicts held-out text (perplexity) and how
often its greedy tokens are the original model's.
"""
from __future__ import annotations

from optkit.types.records import Record


class GenerationTiming(Record):
    """One model's timing at one prompt length (``eval/generation.time_generation``): time to first token (the
    prompt's forward pass and picking its token) and decode speed (the tokens after it, one at a time), batch 1."""

    prompt_tokens: int
    new_tokens: int  # tokens decoded per run after the first
    threads: int
    ttft_ms: float  # p50 over the runs
    ttft_p90_ms: float
    decode_tokens_per_s: float  # median over the runs of new_tokens / decode seconds
    decode_ms_per_token: float  # p50 of one decode step
    runs: int
    budget_s: float | None = None


class Perplexity(Record):
    """exp of the mean negative log-likelihood of every next token of the evaluation windows
    (``eval/generation.perplexity``)."""

    perplexity: float
    nll: float  # mean negative log-likelihood per predicted token (nats)
    tokens: int  # next-token predictions evaluated
    windows: int


class GenerationQuality(Record):
    """A generative model's quality on the evaluation text and prompts: its perplexity, and the share of the
    original's greedy tokens it reproduces (``token_agreement``; 1.0 for the original itself)."""

    perplexity: float
    tokens: int  # next-token predictions the perplexity covers
    token_agreement: float | None = None
    prompts: int | None = None  # evaluation prompts the agreement covers
    new_tokens: int | None = None  # greedy tokens generated per prompt

    def ppl_increase_of(self, baseline: GenerationQuality) -> float:
        """The relative perplexity increase vs ``baseline`` (0.05 = +5%)."""
        return self.perplexity / baseline.perplexity - 1.0
