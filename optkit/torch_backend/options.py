"""``torch.compile(model, backend="optkit", options={...})``: what may be asked, checked before any work."""
from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from optkit.types.errors import UsageError


class BackendOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    target: Literal["ort-cpu", "openvino-cpu"] = Field("ort-cpu", description="runtime the subgraphs run in")
    precision: Literal["fp32", "int8"] = Field("fp32", description="int8: calibrated on the first real calls or "
                                                                  "calib_data, judged against eager")
    recipe: str | None = Field(None, description="a recipe YAML whose steps (and measure settings) build each "
                                                 "subgraph instead of the default chain")
    calib_data: str | None = Field(None, description=".npz calibration data for a model compiled as one graph "
                                                     "(arrays in the order of forward's tensor arguments)")
    calib_calls: int = Field(16, ge=1, le=4096, description="int8 without calib_data: real calls run eagerly and "
                                                           "recorded as calibration data before the build")
    metric: str | None = Field(None, description="task metric of the int8 budget (default: cosine to eager)")
    max_drop: float = Field(1.0, ge=0, description="int8: largest drop of the task metric (metric; points for "
                            "fractions) vs the traced subgraph, held by the build's quantize step (compile's on "
                            "openvino-cpu)")
    min_cosine: float = Field(0.99, ge=-1, le=1, description="int8: first-call check, cosine of every output to eager")
    atol: float = Field(1e-4, ge=0, description="fp32: first-call check, absolute tolerance to eager")
    rtol: float = Field(1e-3, ge=0, description="fp32: first-call check, relative tolerance to eager")
    threads: int = Field(0, ge=0, le=1024, description="runtime intra-op threads (0: the runtime's default)")
    cache_dir: str | None = Field(None, description="on-disk cache (default: $OPTKIT_CACHE_DIR or "
                                                    "~/.cache/optkit/torch_compile)")
    check: bool = Field(True, description="compare each subgraph with eager on its first call (off: trust the build)")
    quiet: bool = Field(False, description="no line on stderr per subgraph built or taken from the cache")

    def cache_root(self) -> Path:
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        env = os.environ.get("OPTKIT_CACHE_DIR")
        if env:
            return Path(env).expanduser() / "torch_compile"
        return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "optkit" / "torch_compile"


def parse_options(raw: dict[str, Any] | None) -> BackendOptions:
    try:
        return BackendOptions(**(raw or {}))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "options"
        known = ", ".join(BackendOptions.model_fields)
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(where, BackendOptions.model_fields, n=1)
            guess = f": did you mean '{close[0]}'?" if close else ""
            raise UsageError(f"torch.compile(backend='optkit'): unknown option '{where}'{guess}",
                             hint=f"Options: {known}") from None
        raise UsageError(f"torch.compile(backend='optkit') option {where}: {err['msg']}",
                         hint=f"Options: {known}") from None
