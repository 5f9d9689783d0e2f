"""Evaluation data: ``.npz`` files whose arrays are named after the model inputs, plus ``labels``.

Arrays are validated against the model's input specs (names, rank, fixed dimensions) and cast to
the input dtype. ``np.load`` runs with ``allow_pickle=False``: object arrays are refused.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from optkit.types.artifact import TensorSpec
from optkit.types.errors import UsageError
from optkit.types.files import human_bytes, sha256_file

LABELS = "labels"


@dataclass
class EvalData:
    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    path: Path | None = None
    sha256: str | None = None
    synthetic: bool = False

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def describe(self) -> str:
        if self.synthetic or self.path is None:
            return f"{len(self)} synthetic samples (no evaluation data given)"
        return f"{self.path.name} ({len(self)} samples{'' if self.labels is not None else ', no labels'})"

    def reference(self) -> dict | None:
        if self.path is None:
            return None
        return {"path": str(self.path), "sha256": self.sha256, "samples": len(self)}

    def batch(self, size: int, offset: int = 0) -> dict[str, np.ndarray]:
        """``size`` consecutive samples from ``offset`` (wrapping around when the set is smaller)."""
        if size > _BATCH_CHECKED:  # a model's fixed batch of 2**40 must be refused, not allocated
            per_sample = 8 + sum(v[:1].nbytes for v in self.inputs.values())
            shapes = ", ".join(f"{k}:{'x'.join(map(str, (size, *v.shape[1:])))}" for k, v in self.inputs.items())
            check_fits_memory(size * per_sample, f"a batch of {size:,} samples ({shapes})")
        idx = (np.arange(size) + offset) % len(self)
        return {k: np.ascontiguousarray(v[idx]) for k, v in self.inputs.items()}

    def timing_feeds(self, size: int, specs: Sequence[list[TensorSpec]] = (), most: int = 16) -> list[dict[str, np.ndarray]]:
        """What latency is timed on at batch ``size``: the first ``size`` samples; for token data (a 2-D
        ``attention_mask``) whose models (``specs``: each timed model's inputs) all take any sequence length, up to
        ``most`` consecutive batches, each trimmed to its longest real text, to be cycled through: latency at the
        data's real length distribution, not at the padding of the longest text in the file."""
        mask = self.inputs.get("attention_mask")
        first = self.batch(size)
        if mask is None or mask.ndim != 2 or len(self) < size:
            return [first]
        tokens = [n for n, v in self.inputs.items() if v.shape[:2] == mask.shape]
        if not specs or not all(isinstance(t.shape[1], str) for inputs in specs for t in inputs
                                if t.name in tokens and len(t.shape) > 1):
            return [first]
        feeds = []
        for offset in range(0, min(len(self) - size + 1, most * size), size):
            feed = self.batch(size, offset)
            used = np.flatnonzero(feed["attention_mask"].any(axis=0))
            length = int(used[-1]) + 1 if used.size else 1
            feeds.append({k: np.ascontiguousarray(v[:, :length]) if k in tokens else v for k, v in feed.items()})
        return feeds

    def batches(self, size: int) -> Iterator[tuple[dict[str, np.ndarray], int]]:
        """Full batches of ``size``; the last one is padded by wrapping, with its real length given."""
        for start in range(0, len(self), size):
            real = min(size, len(self) - start)
            yield self.batch(size, start), real


_MAX_SAMPLES = 10_000_000
_BATCH_CHECKED = 4096                # batches above this are checked against the available memory first
MAX_DATA_BYTES = 4 << 30             # an .npz whose arrays declare more is refused before it is decompressed


def _check_values(arrays: dict[str, np.ndarray], labels: np.ndarray | None, origin: str) -> None:
    """Data that would make a number up is refused: empty, non-numeric, non-finite inputs, labels that are
    not one integer class index per sample."""
    for name, arr in arrays.items():
        if arr.dtype.kind not in "biuf":
            raise UsageError(f"{origin}: array '{name}' has dtype {arr.dtype} ({'text' if arr.dtype.kind in 'US' else 'not numbers'})",
                             hint="Save inputs as float or integer arrays")
        if arr.ndim == 0 or len(arr) == 0:
            raise UsageError(f"{origin}: array '{name}' holds no samples (shape {arr.shape})", hint="Give at least one sample")
        if len(arr) > _MAX_SAMPLES:
            raise UsageError(f"{origin}: array '{name}' has {len(arr):,} samples", hint=f"Use at most {_MAX_SAMPLES:,}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise UsageError(f"{origin}: array '{name}' contains {bad} NaN or infinite value(s)",
                             hint="Remove or fix those samples; optkit does not measure on non-finite inputs")
    if labels is None:
        return
    if labels.dtype.kind not in "biuf" or labels.ndim != 1:
        raise UsageError(f"{origin}: '{LABELS}' must be a 1-D array of integer class indices "
                         f"(it has shape {labels.shape}, dtype {labels.dtype})", hint="Save labels as e.g. np.int64 of shape (N,)")
    if labels.dtype.kind == "f" and (not np.isfinite(labels).all() or (labels != np.round(labels)).any()):
        raise UsageError(f"{origin}: '{LABELS}' holds non-integer values", hint="Labels are class indices: 0, 1, 2, ...")
    if len(labels) and labels.min() < 0:
        raise UsageError(f"{origin}: '{LABELS}' holds a negative class index ({labels.min():g})",
                         hint="Labels are class indices: 0, 1, 2, ...")


def check_labels_fit(labels: np.ndarray, classes: int, origin: str) -> None:
    """Labels must index the model's classes (its output's last dimension)."""
    top = int(labels.max()) if len(labels) else -1
    if top >= classes:
        raise UsageError(f"{origin}: '{LABELS}' holds class {top}, but the model has {classes} classes (0..{classes - 1})",
                         hint="Pass labels of this model's classes")


def _check_integer_input(arr: np.ndarray, spec: TensorSpec, origin: str) -> None:
    """An integer input (token ids, masks) takes integer data: float data would be truncated silently (1.7 -> 1),
    and integers beyond the input's type would wrap around."""
    want = np.dtype(spec.dtype)
    if want.kind not in "iu":
        return
    if arr.dtype.kind not in "iub":
        raise UsageError(f"{origin}: array '{spec.name}' is {arr.dtype}, but the model input '{spec.name}' is {want} "
                         f"(integers: casting would truncate its values)", hint=f"Save '{spec.name}' as {want}")
    if arr.dtype.kind in "iu" and arr.size and not np.can_cast(arr.dtype, want):
        info, lo, hi = np.iinfo(want), int(arr.min()), int(arr.max())
        if lo < info.min or hi > info.max:
            raise UsageError(f"{origin}: array '{spec.name}' holds {lo if lo < info.min else hi}, beyond the "
                             f"{want} range of model input '{spec.name}'", hint=f"Save values of {want}")


def _check_against_specs(arrays: dict[str, np.ndarray], specs: list[TensorSpec], origin: str) -> dict[str, np.ndarray]:
    out = {}
    for spec in specs:
        if spec.name not in arrays:
            have = ", ".join(sorted(arrays)) or "none"
            raise UsageError(f"{origin} has no array '{spec.name}' for model input '{spec.name}' (it has: {have})",
                             hint="Name the arrays after the model inputs")
        arr = arrays[spec.name]
        if arr.ndim != len(spec.shape) or any(
                isinstance(d, int) and i > 0 and d != arr.shape[i] for i, d in enumerate(spec.shape)):
            raise UsageError(
                f"{origin}: array '{spec.name}' has shape {'x'.join(map(str, arr.shape))} but the model input "
                f"'{spec.name}' is {spec.shape_text()}", hint="Pass data that fits the model's input shape")
        if arr.dtype.kind == "b" and np.dtype(spec.dtype).kind != "b":
            raise UsageError(f"{origin}: array '{spec.name}' is boolean, but the model input '{spec.name}' is {spec.dtype}",
                             hint=f"Save it as {spec.dtype}")
        _check_integer_input(arr, spec, origin)
        out[spec.name] = arr.astype(spec.dtype, copy=False)
    return out


def _member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes before the data) of one .npy member, read from its first bytes only."""
    fmt = np.lib.format
    with zf.open(info) as fh:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = fmt.read_array_header_2_0(fh)
        else:  # (3, 0): utf-8 field names, read like 2.0 by numpy's private reader, which its stubs leave out
            shape, _, dtype = fmt._read_array_header(fh, version)  # type: ignore[attr-defined]
        return tuple(shape), np.dtype(dtype), fh.tell()


def check_npz_headers(path: Path) -> None:
    """Every member's header (shape, dtype) read before anything is decompressed: an archive that declares more
    than it can hold, more than ``MAX_DATA_BYTES`` or more than half the available memory is refused with the
    member and the size it declares (a 37 MB file may declare 8 GiB: loading it would allocate that first)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # not an archive: np.load says what it is
    avail = available_memory()
    cap, why = MAX_DATA_BYTES, f"at most {human_bytes(MAX_DATA_BYTES)}"
    if avail is not None and avail // 2 < MAX_DATA_BYTES:
        cap, why = avail // 2, f"half of the {human_bytes(avail)} of memory available"
    total = 0
    with zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            name = info.filename.removesuffix(".npy")
            if not info.filename.endswith(".npy"):
                raise UsageError(f"{path}: member '{info.filename}' is not a .npy array",
                                 hint="Save data with numpy.savez(path, <input name>=array, labels=array)")
            try:
                shape, dtype, head = _member_header(zf, info)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
                raise UsageError(f"{path}: array '{name}' has no readable .npy header ({str(exc)[:120]})",
                                 hint="Save data with numpy.savez(path, <input name>=array, labels=array)") from exc
            if dtype.hasobject:
                continue  # a pickle: np.load (allow_pickle=False) refuses it without unpickling
            declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            what = f"{'x'.join(map(str, shape)) or 'scalar'} {dtype} ({human_bytes(declared)})"
            total += declared
            if total > cap:
                raise UsageError(f"{path}: array '{name}' declares {what}"
                                 + (f" ({human_bytes(total)} with the arrays before it)" if total > declared else "")
                                 + f"; optkit loads data of {why}", hint="Use fewer samples (data is loaded whole)")
            if declared > info.file_size - head:
                raise UsageError(f"{path}: array '{name}' declares {what} but its member holds "
                                 f"{human_bytes(max(0, info.file_size - head))}",
                                 hint="The file is damaged or was not written by numpy; save it again")


def load_npz(path: Path, specs: list[TensorSpec] | None) -> EvalData:
    """Load and validate. With ``specs=None`` every non-label array becomes an input."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"data file {path} does not exist", hint="Check the path")
    check_npz_headers(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise UsageError(f"{path} is a single .npy array, not an .npz archive of named arrays",
                             hint="Save data with numpy.savez(path, <input name>=array, labels=array)")
        with loaded as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as exc:
        raise UsageError(f"{path} is not a readable .npz file ({str(exc)[:120]})",
                         hint="Save data with numpy.savez(path, <input name>=array, labels=array)") from exc
    labels = arrays.pop(LABELS, None)
    if not arrays:
        raise UsageError(f"{path} holds no input arrays", hint="Name the arrays after the model inputs")
    _check_values(arrays, labels, str(path))
    if specs is None:
        specs = [TensorSpec(k, ("batch", *v.shape[1:]), "float32" if v.dtype == np.float16 else v.dtype.name)
                 for k, v in arrays.items()]
    inputs = _check_against_specs(arrays, specs, str(path))
    n = {len(v) for v in inputs.values()}
    if len(n) != 1 or (labels is not None and len(labels) not in n):
        raise UsageError(f"{path}: arrays have different numbers of samples", hint="Give every array the same first dimension")
    if labels is not None:
        labels = labels.astype(np.int64)
    return EvalData(inputs=inputs, labels=labels, path=path.resolve(), sha256=sha256_file(path))


def available_memory() -> int | None:
    """Bytes that can be allocated without swapping or meeting the OOM killer: the kernel's ``MemAvailable``,
    or less when this process's cgroup (a container, a systemd slice) has a smaller memory limit; None off Linux."""
    found = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        found = None
    group = _cgroup_available()
    return group if found is None else min(found, group) if group is not None else found


def _cgroup_available() -> int | None:
    """The cgroup's memory limit less what it uses (its inactive page cache counted as free), or None."""
    def read(path: Path) -> str | None:
        try:
            return path.read_text().strip()
        except OSError:
            return None

    def inactive_file(stat: str | None, key: str) -> int:
        for line in (stat or "").splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.isdigit():
                return int(value)
        return 0

    root = Path("/sys/fs/cgroup")
    lines = [line.split(":", 2) for line in (read(Path("/proc/self/cgroup")) or "").splitlines() if line.count(":") >= 2]
    v2 = next((p for _, ctl, p in lines if ctl == ""), None)
    v1 = next((p for _, ctl, p in lines if "memory" in ctl.split(",")), None)
    for folder in ([root / v2.lstrip("/")] if v2 else []) + [root]:
        limit, used = read(folder / "memory.max"), read(folder / "memory.current")
        if limit and limit.isdigit() and used and used.isdigit():
            return max(0, int(limit) - int(used) + inactive_file(read(folder / "memory.stat"), "inactive_file"))
    for folder in ([root / "memory" / v1.lstrip("/")] if v1 else []) + [root / "memory"]:
        limit, used = read(folder / "memory.limit_in_bytes"), read(folder / "memory.usage_in_bytes")
        if limit and limit.isdigit() and int(limit) < 1 << 60 and used and used.isdigit():
            return max(0, int(limit) - int(used) + inactive_file(read(folder / "memory.stat"), "total_inactive_file"))
    return None


def check_fits_memory(nbytes: int, what: str) -> None:
    """Refuse, before allocating, an input that cannot fit: half of the available memory is the limit
    (the model's weights and activations need the rest)."""
    avail = available_memory()
    if avail is not None and nbytes > avail // 2:
        raise UsageError(f"{what} would need {nbytes / 2**30:,.1f} GiB of memory, but this machine has "
                         f"{avail / 2**30:,.1f} GiB available", hint="Use smaller input shapes or batch sizes")


def sample_bytes(specs: list[TensorSpec]) -> int:
    """Bytes of one sample of every input (dynamic dimensions count as 1)."""
    return sum(int(np.prod([d if isinstance(d, int) else 1 for d in spec.shape[1:]], dtype=np.float64))
               * np.dtype(spec.dtype).itemsize for spec in specs)


def synthetic(specs: list[TensorSpec], samples: int = 16, seed: int = 0) -> EvalData:
    """Seeded standard-normal inputs (integer inputs: token ids 1..99, masks of ones, zero segment ids, 16 long),
    for numeric checks when no evaluation data exists."""
    shapes = ", ".join(f"{s.name}:{s.shape_text()}" for s in specs)
    check_fits_memory(samples * sample_bytes(specs), f"{samples} samples of {shapes}")
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in specs:
        if np.issubdtype(np.dtype(spec.dtype), np.integer):  # token inputs: ids in a small vocabulary, full masks
            shape = [samples] + [d if isinstance(d, int) else 16 for d in spec.shape[1:]]
            inputs[spec.name] = (np.ones(shape) if "mask" in spec.name else np.zeros(shape) if "type" in spec.name
                                 else rng.integers(1, 100, size=shape)).astype(spec.dtype)
            continue
        shape = [samples] + [d if isinstance(d, int) else 1 for d in spec.shape[1:]]
        inputs[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return EvalData(inputs=inputs, labels=None, synthetic=True)


def specs_from_data(path: Path) -> list[TensorSpec]:
    """Input specs inferred from an .npz file (batch dimension dynamic)."""
    return [TensorSpec(k, ("batch", *v.shape[1:]), v.dtype.name) for k, v in load_npz(path, None).inputs.items()]
