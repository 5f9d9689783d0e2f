"""``torch.compile(model, backend="optkit")``: each graph dynamo captures runs in optkit's runtimes.

Registered through the ``torch_dynamo_backends`` entry point, so no import is needed. Each FX subgraph is traced,
built by the same steps as the CLI (export, fuse, quantize, compile) into an ONNX Runtime or OpenVINO artifact in
an on-disk cache, checked against eager on its first call, and run from then on; anything optkit cannot build
or that disagrees with eager runs eagerly, with the reason logged once. ``OPTKIT_DEBUG=1`` logs every decision.
Importing this module imports neither torch nor a runtime.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Any

log = logging.getLogger("optkit.torch")


def _debug_logging() -> None:
    if os.environ.get("OPTKIT_DEBUG") and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.DEBUG)


def backend(gm, example_inputs: list[Any], options: dict[str, Any] | None = None, **_: Any):
    """The dynamo backend: ``gm`` and its example inputs in, a callable with the same signature out."""
    from optkit.torch_backend.build import entry_key
    from optkit.torch_backend.graph import analyse, graph_digest, unsupported_ops
    from optkit.torch_backend.options import parse_options
    from optkit.torch_backend.runtime import CompiledGraph, say_once

    _debug_logging()
    opts = parse_options(options)  # a bad option is the caller's error: raised, not hidden
    inputs = analyse(gm, example_inputs)
    reason = inputs.unsupported or unsupported_ops(gm)
    if reason:
        say_once(f"a subgraph runs eagerly: {reason}")
        return gm.forward
    key = entry_key(graph_digest(gm, example_inputs, inputs), opts)
    log.debug("optkit backend: subgraph %s, inputs %s%s", key, ", ".join(inputs.names),
              f", dynamic {inputs.dynamic}" if inputs.dynamic else "")
    return CompiledGraph(gm, example_inputs, inputs, opts, opts.cache_root() / key)


def compile(model, *, dynamic: bool | None = None, **options: Any):
    """``torch.compile(model, backend="optkit", options=options, dynamic=dynamic)``."""
    import torch

    return torch.compile(model, backend="optkit", options=options or None, dynamic=dynamic)
