"""What measuring a generative language model returns (``eval/generation.py``): records, not dicts.

A causal LM is judged per token, not per batch: how long the first token takes after a prompt of a given length,
how many tokens per second it decodes after that (batch 1), how well it predicts held-out text (perplexity) and how
often its greedy tokens are the original model's.
"""
from __future__ import annotations

from optkit.types.record import Record


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


class GenerationMetrics(Record):
    """What a ledger row keeps of a causal LM (``Metrics.generation``): its perplexity on the evaluation text and
    its change vs the original's, the share of the original's greedy tokens it reproduces on the evaluation prompts,
    and its timing (time to first token and decode tokens/s, batch 1) at each prompt length. The original's row also
    keeps its greedy tokens (``reference_tokens``): the reference the later rows are judged against."""

    perplexity: float
    tokens: int  # next-token predictions the perplexity covers
    ppl_increase: float | None = None  # vs the original's perplexity (0.05 = +5%); 0 for the original
    token_agreement: float | None = None
    prompts: int | None = None
    new_tokens: int | None = None  # greedy tokens generated per prompt
    timing: list[GenerationTiming] = []  # one per prompt length, shortest first
    reference_tokens: list[list[int]] | None = None  # the original's greedy tokens (its row only)

    def timing_at(self, prompt_tokens: int | None = None) -> GenerationTiming | None:
        """The timing at ``prompt_tokens`` (default: the shortest prompt measured)."""
        for entry in self.timing:
            if prompt_tokens is None or entry.prompt_tokens == prompt_tokens:
                return entry
        return None

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Decode tokens/s at batch 1 after the shortest prompt measured."""
        first = self.timing_at()
        return first.decode_tokens_per_s if first is not None else None
