"""The callable dynamo runs in place of a subgraph: eager until the artifact is ready, then the artifact.

First calls: for int8 without ``calib_data`` the first ``calib_calls`` calls run eagerly and are recorded as
calibration data; then the artifact is built (or found in the cache), and on that call its outputs are compared
with eager ones (fp32: ``atol``/``rtol``; int8: cosine >= ``min_cosine`` per output). Any failure - a build that
fails its own checks, a mismatch, a call that needs autograd - makes the subgraph run eagerly from then on, with
the reason logged once: never a wrong answer silently.
"""
from __future__ import annotations

import itertools
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from optkit.torch_backend.graph import GraphInputs
from optkit.torch_backend.options import BackendOptions

log = logging.getLogger("optkit.torch")
_said: set[str] = set()
_numbers = itertools.count(1)  # subgraphs in the order dynamo hands them over, for the build lines


def say_once(text: str) -> None:
    if text not in _said:
        _said.add(text)
        log.warning("optkit backend: %s", text)


def describe(gm, example_inputs: list[Any], inputs: GraphInputs) -> str:
    """``12 ops, inputs x:[s0,3,32,32]``: what a build line says about its subgraph."""
    ops = sum(1 for n in gm.graph.nodes if n.op in ("call_function", "call_method", "call_module"))
    shapes = []
    for name, pos in zip(inputs.names, inputs.tensor_positions):
        dims = [inputs.dynamic.get(name, {}).get(d, s) for d, s in enumerate(getattr(example_inputs[pos], "shape", ()))]
        shapes.append(f"{name}:[{','.join(str(d) for d in dims)}]")
    return f"{ops} op{'s' if ops != 1 else ''}, inputs {' '.join(shapes)}"


def _mismatch(got: list[np.ndarray], want: list[np.ndarray], options: BackendOptions) -> str | None:
    if len(got) != len(want):
        return f"{len(got)} outputs, eager gives {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if g.shape != w.shape:
            return f"output {i} has shape {g.shape}, eager {w.shape}"
        if not np.issubdtype(w.dtype, np.floating):
            if not np.array_equal(g, w):
                return f"output {i} ({w.dtype}) differs from eager"
            continue
        g64, w64 = g.astype(np.float64).ravel(), w.astype(np.float64).ravel()
        if options.precision == "int8":
            denom = np.linalg.norm(g64) * np.linalg.norm(w64)
            cos = float(g64 @ w64 / denom) if denom else float(np.array_equal(g64, w64))
            if cos < options.min_cosine:
                return f"output {i}: cosine {cos:.4f} to eager < min_cosine {options.min_cosine}"
        elif not np.allclose(g64, w64, atol=options.atol, rtol=options.rtol):
            return (f"output {i}: max|Δ| {np.max(np.abs(g64 - w64)):.2e} to eager beyond atol {options.atol:g} / "
                    f"rtol {options.rtol:g}")
    return None


def _needs_autograd(args) -> bool:
    import torch

    return torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)


class CompiledGraph:
    def __init__(self, gm, example_inputs: list[Any], inputs: GraphInputs, options: BackendOptions,
                 entry: Path) -> None:
        self.gm, self.inputs, self.options, self.entry = gm, inputs, options, entry
        self.example_inputs = example_inputs
        self.samples: list[dict[str, np.ndarray]] = []
        self.runner = None
        self.output_names: list[str] = []
        self.scalars: set[int] = set()  # outputs eager gives as 0-d tensors (the artifact as shape (1,))
        self.eager_reason: str | None = None
        self.record: dict[str, Any] | None = None
        self.number = next(_numbers)

    # -- the build lines (stderr, one per subgraph; quiet=True: none) ----------------------------------------------
    def _say(self, text: str, end: str = "\n") -> None:
        if not self.options.quiet:
            print(text, end=end, file=sys.stderr, flush=True)

    def _what(self) -> str:
        return f"subgraph {self.number} ({describe(self.gm, self.example_inputs, self.inputs)})"

    def _said_reused(self) -> None:
        built = self.record.get("build_s") if self.record else None
        self._say(f"optkit: {self._what()} reused from the on-disk cache at {self.entry}"
                  + (f" (built in {built:.1f}s)" if isinstance(built, (int, float)) else ""))

    # -- the hot path -------------------------------------------------------------------------------------------
    def __call__(self, *args):
        if self.runner is not None:
            return self._run(args)
        if self.eager_reason is not None:
            return self.gm(*args)
        return self._first_calls(args)

    def _feed(self, args) -> dict[str, np.ndarray]:
        return {n: args[p].detach().contiguous().numpy() for n, p in zip(self.inputs.names, self.inputs.tensor_positions)}

    def _run(self, args):
        import torch

        if _needs_autograd(args):
            return self.gm(*args)  # autograd needs the eager graph (said when it was first seen)
        out = self.runner.infer(self._feed(args))
        return tuple(torch.from_numpy(out[n]).reshape(()) if k in self.scalars else torch.from_numpy(out[n])
                     for k, n in enumerate(self.output_names))

    # -- before the artifact is ready -----------------------------------------------------------------------------
    def _eager_from_now(self, reason: str):
        self.eager_reason = reason
        say_once(f"a subgraph runs eagerly: {reason}")

    def _first_calls(self, args):
        if _needs_autograd(args):
            say_once("autograd is on for this call (inputs or parameters require grad): optkit compiles for "
                     "inference, so it runs eagerly; call the model under torch.no_grad() or torch.inference_mode()")
            return self.gm(*args)
        from optkit.torch_backend.build import cached

        self.record = cached(self.entry)
        if self.record is None:
            self.samples.append({k: v.copy() for k, v in self._feed(args).items()})
            wanted = self.options.calib_calls if self.options.precision == "int8" and not self.options.calib_data else 1
            if len(self.samples) < wanted:
                log.debug("optkit backend: recording call %d of %d for calibration", len(self.samples), wanted)
                return self.gm(*args)
            try:
                with _locked(self.entry):
                    self.record = cached(self.entry)  # another process may have built it meanwhile
                    if self.record is None:
                        self._build()
                    else:
                        self._said_reused()
            except Exception as exc:  # a failed build (its own checks included): eager, with the reason
                from optkit.types.errors import first_line

                self._eager_from_now(f"the build failed ({first_line(exc, 300)})")
                return self.gm(*args)
            finally:
                self.samples = []
        else:
            log.debug("optkit backend: cache hit %s (%s), no export", self.entry.name, self.record["artifact"])
            self._said_reused()
        return self._open_and_check(args)

    def _build(self) -> None:
        """Build the entry, on one stderr line: what is built for what, then how long it took and where it is
        (the debug log, when on, writes between the two halves, so the line is ended first)."""
        from optkit.torch_backend.build import build
        from optkit.torch_backend.graph import make_frozen

        debug = log.isEnabledFor(logging.DEBUG)
        precision = "" if self.options.precision == "fp32" else f" {self.options.precision}"
        self._say(f"optkit: building {self._what()} for {self.options.target}{precision} ...",
                  end="\n" if debug else " ")
        log.debug("optkit backend: building %s (%s %s)", self.entry.name, self.options.target, self.options.precision)
        started = time.perf_counter()
        try:
            self.record = build(self.entry, make_frozen(self.gm, self.example_inputs, self.inputs), self.inputs,
                                self.samples, self.options)
        except BaseException:
            self._say(f"{f'optkit: subgraph {self.number} ' if debug else ''}failed after "
                      f"{time.perf_counter() - started:.1f}s")
            raise
        self._say(f"{f'optkit: subgraph {self.number} ' if debug else ''}done in {self.record['build_s']:.1f}s, "
                  f"cached at {self.entry}")
        log.debug("optkit backend: built %s in %.1fs: %s", self.entry.name, self.record["build_s"],
                  " -> ".join(self.record["steps"]))

    def _open_and_check(self, args):
        from optkit.backends import open_runner
        from optkit.backends.opening import open_artifact

        try:
            artifact = open_artifact(self.entry / self.record["artifact"])
            runner = open_runner(artifact, self.options.threads)
        except Exception as exc:
            from optkit.types.errors import first_line

            self._eager_from_now(f"its artifact could not be opened ({first_line(exc, 300)})")
            return self.gm(*args)
        self.output_names = list(runner.output_names)
        eager = self.gm(*args)
        want = list(eager) if isinstance(eager, (list, tuple)) else [eager]
        self.scalars = {k for k, w in enumerate(want) if getattr(w, "dim", lambda: 1)() == 0}
        if not self.options.check:
            self.runner = runner
            return eager
        started = time.perf_counter()
        got = runner.infer(self._feed(args))
        problem = _mismatch([got[n].reshape(()) if k in self.scalars else got[n] for k, n in enumerate(self.output_names)],
                            [w.detach().numpy() if hasattr(w, "detach") else np.asarray(w) for w in want], self.options)
        if problem:
            runner.close()
            self._eager_from_now(f"{self.record['artifact']} disagrees with eager on its first call: {problem}")
            return eager
        log.debug("optkit backend: %s checked against eager (%.1f ms): runs in %s", self.entry.name,
                  1e3 * (time.perf_counter() - started), self.record["format"])
        self.runner = runner
        return eager


class _locked:
    """An exclusive lock on ``ENTRY.lock`` beside the entry: two processes never build the same entry at once."""

    def __init__(self, entry: Path) -> None:
        self.path = entry.with_name(entry.name + ".lock")

    def __enter__(self):
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        import fcntl

        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()
