"""Backends: one vertical plugin per runtime, one file each (plus helpers beside it), all with the same shape.

A backend's module ends with a ``BACKEND`` descriptor (``Backend``): the format it runs, its ``Runner``, how it
recognises a file of that format and opens it into an ``Artifact`` (its own reader gives the I/O specs), which
files beside the model belong to it (what a digest covers), and its compile targets. ``BACKENDS`` maps a format
to that descriptor's dotted path, so ``optkit --help`` imports no backend and a run imports only the runtimes it
uses (a backend module imports its runtime inside functions). Adding a runtime is one new file and one line here.

A Runner is made from an Artifact and a thread count, runs a feed of numpy arrays keyed by input name and returns
numpy arrays keyed by output name, and is closed when done.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from optkit.types.errors import UsageError
from optkit.types.lazy import load_dotted

if TYPE_CHECKING:
    import numpy as np

    from optkit.backends.compiling import CompileTarget
    from optkit.types.artifact import Artifact

# format -> "module:BACKEND". Asked in this order to recognise a MODEL argument (torch first: it also reads
# folders, hf: ids and factory references); tests register a fake one here.
BACKENDS: dict[str, str] = {
    "torch": "optkit.backends.torch:BACKEND",
    "onnx": "optkit.backends.onnxruntime:BACKEND",
    "openvino": "optkit.backends.openvino:BACKEND",
    "tensorrt": "optkit.backends.tensorrt:BACKEND",
    "tflite": "optkit.backends.litert:BACKEND",
}


class Runner(ABC):
    format: ClassVar[str]
    input_names: list[str]
    output_names: list[str]

    @abstractmethod
    def __init__(self, artifact: "Artifact", threads: int = 1) -> None:
        """Load ``artifact`` for ``threads`` CPU threads (0: the runtime's default)."""

    @classmethod
    def preload(cls) -> None:
        """Import the runtime now, so its one-off import cost is not counted in a measurement."""

    @abstractmethod
    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch."""

    def close(self) -> None:
        """Release the runtime's resources."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class OpenOptions:
    """What a MODEL argument may come with; only a torch source reads them (the rest refuse ``task``)."""

    weights: Path | None = None
    task: str | None = None
    trust_remote_code: bool = False


@dataclass(frozen=True)
class Backend:
    """One runtime as optkit uses it. Every callable is plain code of the backend's module; none imports the
    runtime until it runs."""

    format: str
    runner: type[Runner]
    # a file of this format, told from its name or first bytes (None: never a MODEL argument, e.g. an engine)
    recognises: Callable[[Path], bool] | None = None
    open: Callable[[Path], "Artifact"] | None = None  # that file as an Artifact (specs by the backend's reader)
    # a MODEL argument that is not a plain file (a folder, an id, a factory reference): an Artifact, or None
    open_reference: Callable[[str, OpenOptions], "Artifact | None"] | None = None
    companions: tuple[str, ...] = ()  # suffixes of files beside the model that belong to it (an IR's ".bin")
    folder_files: Callable[[Path], "list[Path] | None"] | None = None  # a model folder's files (digests)
    compile_targets: Mapping[str, "CompileTarget"] = field(default_factory=dict)  # compile --target -> its build

    def files_at(self, path: Path) -> list[Path] | None:
        """The files a record's sha256 covers for an artifact of this format at ``path`` (None: not known)."""
        if path.is_dir():
            return self.folder_files(path) if self.folder_files is not None else None
        return [path, *(path.with_suffix(suffix) for suffix in self.companions)]


def backend(fmt: str) -> Backend:
    target = BACKENDS.get(fmt)
    if target is None:
        raise UsageError(f"no backend can run '{fmt}' artifacts", hint=f"Known formats: {', '.join(BACKENDS)}")
    found: Backend = load_dotted(target)
    return found


def all_backends() -> Iterator[Backend]:
    """Every registered backend, in registry order (each module imported on the way)."""
    for fmt in list(BACKENDS):
        yield backend(fmt)


def runner_class(fmt: str) -> type[Runner]:
    return backend(fmt).runner


def open_runner(artifact: "Artifact", threads: int = 1) -> Runner:
    return runner_class(artifact.format)(artifact, threads=threads)
