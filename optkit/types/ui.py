"""Where output goes: results (tables, JSON) to stdout, progress and notes to stderr."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Callable, Iterator

from rich.console import Console


class UI:
    def __init__(self, quiet: bool = False) -> None:
        self.out = Console()
        self.err = Console(stderr=True, soft_wrap=True)
        if not self.out.is_terminal:  # pipes and CI logs: don't squeeze tables into 80 columns
            self.out = Console(width=max(self.out.width, 160))
        self.quiet = quiet

    def info(self, text: str) -> None:
        if not self.quiet:
            self.err.print(text, highlight=False)

    def warn(self, text: str) -> None:
        self.err.print(f"[yellow]warning:[/] {text}", highlight=False)

    @contextlib.contextmanager
    def status(self, text: str) -> Iterator[None]:
        if self.quiet or not self.err.is_terminal:
            self.info(f"[dim]…[/] {text}")
            yield
            return
        with self.err.status(text):
            yield

    @contextlib.contextmanager
    def progress(self, text: str) -> Iterator[Callable[[str], None]]:
        """A status line the caller updates (``update(text)``); off a terminal, each new text is one line."""
        if self.quiet or not self.err.is_terminal:
            last: list[str | None] = [None]

            def say(new: str) -> None:
                if new != last[0] and not self.quiet:
                    last[0] = new
                    self.info(f"[dim]…[/] {new}")

            say(text)
            yield say
            return
        with self.err.status(text) as shown:
            yield lambda new: shown.update(new)


@contextlib.contextmanager
def quiet_libraries() -> Iterator[None]:
    """Exporters and graph tools print progress to stdout and warnings to stderr: keep optkit's output clean."""
    loggers = [logging.getLogger(n) for n in (
        "torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "onnxruntime", "onnxslim", "nncf", "openvino", "")]  # "": the root logger (ORT quantization logs there)
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
