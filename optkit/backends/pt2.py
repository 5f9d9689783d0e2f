""".pt2 (torch.export) archives, loaded without letting them run code.

``torch.export.load`` is given an archive only after every member it would unpickle, and every other member that
looks like a pickle, has loaded under the weights-only unpickler (``torch.export.load`` itself falls back to
unrestricted unpickling when that fails), and only an archive rebuilt in memory from the very bytes that were
checked, once its size, member count, names and inflated size passed their bounds (``checked_pt2``).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from optkit.types.errors import UsageError, first_line
from optkit.types.files import human_bytes
from optkit.types.lazy import require


def _torch() -> Any:
    return require("torch", "PyTorch models")


# A .pt2 is read whole into memory and rebuilt there: bounds on what that may cost.
PT2_MAX_BYTES = 4 << 30          # the file, and the sum of its members once inflated
PT2_MAX_MEMBERS = 20_000         # a large language model stores some thousand tensors, one member each
PT2_MAX_DIRECTORY = 16 << 20     # the zip's central directory, read before any member
PT2_MAX_EXPANSION = 16           # members may inflate to 16x the file's size (+ PT2_EXPANSION_SLACK)
PT2_EXPANSION_SLACK = 64 << 20
_SNIFF_OPS = 100_000             # a stream still parsing as pickle opcodes after this many counts as one
_LEGACY_PICKLES = ("serialized_state_dict.pt", "serialized_constants.pt", "serialized_example_inputs.pt",
                   "serialized_state_dict.json", "serialized_constants.json")  # the pre-2.8 format, all unpickled


def _shown(name: str) -> str:
    """A member name as one printable line (control characters escaped)."""
    return ascii(name)[1:-1] if not name.isprintable() or not name.isascii() else name


def _pt2_roles(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> tuple[set[str], set[str], list[str]]:
    """(members ``torch.export.load`` would unpickle, members it reads without Python's unpickler, members it
    must never be given), over-approximating what torch 2.x does (torch/export/pt2_archive/_package.py and
    torch.export.load's fallback to the pre-2.8 format).

    Unpickled by torch's unrestricted unpickler (outright, or once the weights-only one fails): sample inputs;
    the legacy ``data/weights/<model>.pt`` and ``data/constants/<model>.pt``; weights and tensor constants whose
    payload config says ``use_pickle``; the pre-2.8 format's serialized_* members. Read as raw tensor bytes: payloads
    without ``use_pickle``; by TorchScript's unpickler (no Python callables): custom objects. Refused: opaque
    Python objects (plain ``pickle.loads``) and AOTInductor / ExecuTorch / MTIA payloads (native code)."""
    from torch.export.pt2_archive import constants as c

    def rel(name: str) -> str:  # members sit under one archive-name folder (or none: the old format)
        return name.split("/", 1)[1] if "/" in name else name

    refused = [i.filename for i in infos if rel(i.filename).startswith((c.AOTINDUCTOR_DIR, c.EXECUTORCH_DIR, c.MTIA_DIR))
               or rel(i.filename).startswith(c.CONSTANTS_DIR + c.OPAQUE_OBJ_FILENAME_PREFIX)]
    unpickled: set[str] = set()
    other_readers: set[str] = set()
    for info in infos:
        name = rel(info.filename)
        folder = info.filename.rsplit("/", 1)[0] if "/" in info.filename else ""
        if (name.startswith(c.SAMPLE_INPUTS_DIR) or info.filename in _LEGACY_PICKLES or name in _LEGACY_PICKLES
                or (name.startswith((c.WEIGHTS_DIR, c.CONSTANTS_DIR)) and name.endswith(".pt"))):
            unpickled.add(info.filename)
        elif name.startswith((c.WEIGHTS_DIR, c.CONSTANTS_DIR)) and name.endswith("_config.json"):
            config = json.loads(zf.read(info)).get("config", {})
            constants = name.startswith(c.CONSTANTS_DIR)
            for meta in config.values():
                path_name = str(meta["path_name"])
                member = f"{folder}/{path_name}"
                if constants and path_name.startswith(c.OPAQUE_OBJ_FILENAME_PREFIX):
                    refused.append(member)
                elif constants and path_name.startswith(c.CUSTOM_OBJ_FILENAME_PREFIX):
                    other_readers.add(member)
                elif meta.get("use_pickle"):
                    unpickled.add(member)
                else:
                    other_readers.add(member)
    return unpickled, other_readers - unpickled, refused


def _looks_pickled(blob: bytes) -> bool:
    """Whether ``torch.load`` could take these bytes for a checkpoint: a pickle of protocol 2 or later, a zip
    (torch's archive format: a data.pkl inside), a tar (torch's oldest format), or a protocol 0/1 pickle
    (a stream of pickle opcodes up to STOP; parsed by pickletools, which never executes anything)."""
    import pickletools

    if blob[:1] == b"\x80" or blob[:4] == b"PK\x03\x04" or blob[257:262] == b"ustar":
        return True
    try:
        for count, (opcode, _arg, _pos) in enumerate(pickletools.genops(io.BytesIO(blob))):
            if opcode.name == "STOP" or count >= _SNIFF_OPS:
                return True
    except Exception:  # noqa: BLE001 - not a pickle stream: genops raises ValueError (and kin) on any other bytes
        return False
    return False


def _pt2_layout(path: Path, fh: IO[bytes]) -> None:
    """Refuse an archive whose central directory alone would be too large to read."""
    read_end = getattr(zipfile, "_EndRecData", None)  # the stdlib's own (zip64-aware) reader of the end record
    endrec = read_end(fh) if read_end else None
    if endrec is None:
        return  # not a zip: zipfile.ZipFile raises BadZipFile, reported by the caller
    entries = endrec[getattr(zipfile, "_ECD_ENTRIES_TOTAL")]  # the stdlib's own indices into the end record
    directory = endrec[getattr(zipfile, "_ECD_SIZE")]
    if entries > PT2_MAX_MEMBERS or directory > PT2_MAX_DIRECTORY:
        raise UsageError(f"{path.name} lists {entries} members in a {human_bytes(directory)} directory; "
                         f"optkit reads .pt2 archives of at most {PT2_MAX_MEMBERS} members",
                         hint="Re-save the model with torch.export.save")


def _pt2_members(path: Path, infos: list[zipfile.ZipInfo], size: int) -> None:
    """Refuse too many members, unsafe or duplicated names, encrypted members and members that inflate far beyond
    the file (a zip bomb): all before any member is read."""
    if len(infos) > PT2_MAX_MEMBERS:
        raise UsageError(f"{path.name} holds {len(infos)} members; optkit reads .pt2 archives of at most "
                         f"{PT2_MAX_MEMBERS}", hint="Re-save the model with torch.export.save")
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        parts = name.split("/")
        if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts) or not name.isprintable():
            raise UsageError(f"{path.name}: member '{_shown(name)}' has an unsafe path (absolute, '..', '.', an "
                             "empty part, a backslash or a control character), which torch.export.save never writes",
                             hint="Re-save the model with torch.export.save")
        if name in seen:
            raise UsageError(f"{path.name}: member '{_shown(name)}' appears more than once (readers disagree on which "
                             "copy counts)", hint="Re-save the model with torch.export.save")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise UsageError(f"{path.name}: member '{_shown(name)}' is encrypted", hint="Re-save the model with torch.export.save")
    total = sum(i.file_size for i in infos)
    if infos and (total > PT2_MAX_BYTES or total > PT2_MAX_EXPANSION * size + PT2_EXPANSION_SLACK):
        biggest = max(infos, key=lambda i: i.file_size)
        raise UsageError(f"{path.name}: its members inflate to {human_bytes(total)} from a {human_bytes(size)} "
                         f"file (member '{_shown(biggest.filename)}' alone {human_bytes(biggest.file_size)}); "
                         "optkit refuses archives that expand this far (a zip bomb)",
                         hint="Re-save the model with torch.export.save (it stores members uncompressed)")


def _member_bytes(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    with zf.open(info) as fh:  # at most the declared size (+1 to notice more): a lying header cannot inflate further
        blob = fh.read(info.file_size + 1)
    if len(blob) != info.file_size:
        raise UsageError(f"{path.name}: member '{_shown(info.filename)}' holds {len(blob)} bytes, not the "
                         f"{info.file_size} its header declares", hint="Re-save the model with torch.export.save")
    return blob


def checked_pt2(path: Path) -> io.BytesIO:
    """A ``.pt2`` file rebuilt in memory from members that ``torch.export.load`` cannot turn into code execution.

    Every member torch would unpickle (see ``_pt2_roles``), and every other member whose bytes look like
    something ``torch.load`` accepts (``_looks_pickled``; raw tensor payloads, which torch never unpickles,
    aside), must load with ``torch.load(weights_only=True)``; native code and plain pickles are refused. The
    archive is bounded first (file size, members, names, inflated size) and then rebuilt from exactly the
    bytes that were checked, so the caller's ``torch.export.load`` reads no member twice, no duplicate, and
    no byte a different zip reader might find where Python's did not."""
    torch = _torch()
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {first_line(exc, 120)}", hint="Check the path") from exc
    if size > PT2_MAX_BYTES:
        raise UsageError(f"{path.name} is {human_bytes(size)}; optkit reads a .pt2 into memory and refuses archives "
                         f"over {human_bytes(PT2_MAX_BYTES)}",
                         hint="Export the model to ONNX with external data, or load it from its factory and weights")
    out = io.BytesIO()
    try:
        with open(path, "rb") as fh:
            _pt2_layout(path, fh)
            with zipfile.ZipFile(fh) as zf, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as rebuilt:
                infos = zf.infolist()
                _pt2_members(path, infos, size)
                unpickled, other_readers, refused = _pt2_roles(zf, infos)
                if refused:
                    raise UsageError(f"{path.name}: member '{_shown(refused[0])}' holds code or arbitrary Python objects "
                                     "(native code or a plain pickle), which optkit does not load",
                                     hint="Re-export the model with torch.export.save, without custom objects or "
                                          "AOTInductor packages")
                for info in infos:
                    blob = _member_bytes(path, zf, info)
                    if info.filename in unpickled or (info.filename not in other_readers and _looks_pickled(blob)):
                        try:
                            with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": the line says it all
                                warnings.simplefilter("ignore")
                                torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
                        except Exception as exc:
                            raise UsageError(
                                f"{path.name}: member '{_shown(info.filename)}' is a pickle that does not load with "
                                f"weights_only=True ({type(exc).__name__}); optkit will not unpickle it (unpickling "
                                "runs arbitrary code)", hint="Re-save the model with torch.export.save from trusted "
                                                             "code") from None
                    rebuilt.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)), blob)
    except UsageError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, KeyError, TypeError, AttributeError,
            NotImplementedError, RuntimeError, EOFError, OSError, zlib.error) as exc:
        raise UsageError(f"{path.name} is not a readable torch.export archive ({first_line(exc, 120)})",
                         hint="Re-save it with torch.export.save") from exc
    out.seek(0)
    return out


class _LoggedErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.errors: list[BaseException] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.errors.append(record.exc_info[1])


@contextlib.contextmanager
def _torch_export_quiet() -> Iterator[list[BaseException]]:
    """``torch.export.load`` logs a failed load's traceback (and warns) before raising a vaguer error of its own:
    keep its loggers and warnings off the terminal, and yield the exceptions they carried for the one error line."""
    names = {"torch.export", "torch._export"} | {
        n for n in list(logging.root.manager.loggerDict) if n.startswith(("torch.export.", "torch._export."))}
    capture = _LoggedErrors()
    saved = []
    for name in sorted(names):
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate))
        logger.handlers, logger.propagate = [capture], False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield capture.errors
    finally:
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate


def load_exported_program(path: Path) -> Any:
    """A ``.pt2`` as an ``nn.Module`` (``checked_pt2``), torch's own logging kept off the terminal."""
    torch = _torch()
    archive = checked_pt2(path)  # one copy in memory: the rebuilt archive torch reads
    with _torch_export_quiet() as logged:
        try:
            return torch.export.load(archive).module()
        except Exception as exc:
            cause = logged[0] if logged else exc  # torch's final error only says "see the warnings above"
            raise UsageError(f"cannot load torch.export program {path}: {first_line(cause, 200)}",
                             hint="Re-save it with torch.export.save") from exc

