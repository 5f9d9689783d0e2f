"""Bad inputs, built once per session, next to the ``tiny`` / ``tiny_onnx`` / ``tiny_res`` fixtures of tests/conftest.py."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import resource
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests.badinput.helpers import memory_cap_bytes


@pytest.fixture(autouse=True)
def _memory_cap():
    """Cap this process's address space while a case runs: an absurd allocation (a 100000x100000 input)
    raises MemoryError instead of taking the machine down."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = memory_cap_bytes() if hard == resource.RLIM_INFINITY else min(memory_cap_bytes(), hard)
    if soft == resource.RLIM_INFINITY or soft > cap:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _ok(result) -> None:
    assert result.exit_code == 0, (result.exception, result.output[-2000:])


def _load_tiny_module(tiny: dict[str, Path], name: str = "badinput_tiny_model"):
    spec = importlib.util.spec_from_file_location(name, tiny["model_py"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------- models

@pytest.fixture(scope="session")
def tiny_pt2(tiny, tmp_path_factory) -> Path:
    """The tiny model as a valid torch.export program (.pt2)."""
    import torch

    module = _load_tiny_module(tiny)
    net = module.build().eval()
    net.load_state_dict(torch.load(tiny["weights"], weights_only=True))
    batch = torch.export.Dim("batch", min=1, max=1024)
    ep = torch.export.export(net, (torch.randn(2, 1, 8, 8),), dynamic_shapes=({0: batch},))
    out = tmp_path_factory.mktemp("tiny_pt2") / "tiny.pt2"
    torch.export.save(ep, out)
    return out


@pytest.fixture(scope="session")
def tiny_int8(tiny_onnx, tmp_path_factory) -> Path:
    """tiny_onnx quantized (static QDQ int8), for `optkit debug`."""
    from tests.badinput.helpers import cli

    out = tmp_path_factory.mktemp("tiny_int8") / "tiny_int8.onnx"
    _ok(cli("quantize", tiny_onnx, "-o", out, "--mode", "static", "--no-measure", timeout=None))
    return out


@pytest.fixture(scope="session")
def bad_models(tiny_onnx, tiny_pt2, tmp_path_factory) -> dict[str, Path]:
    """Missing, empty, junk and truncated model files (ONNX and .pt2), an empty folder, a folder with a junk optkit.yaml."""
    d = tmp_path_factory.mktemp("bad_models")
    onnx_bytes, pt2_bytes = tiny_onnx.read_bytes(), tiny_pt2.read_bytes()
    files = {
        "missing_onnx": d / "missing.onnx", "missing_pt2": d / "missing.pt2", "missing_folder": d / "missing_folder",
        "empty_onnx": d / "empty.onnx", "empty_pt2": d / "empty.pt2",
        "junk_onnx": d / "junk.onnx", "junk_pt2": d / "junk.pt2",
        "truncated_onnx": d / "truncated.onnx", "truncated_pt2": d / "truncated.pt2",
        "empty_folder": d / "empty_folder", "junk_yaml_folder": d / "junk_yaml_folder",
        "text": d / "notes.txt",
    }
    files["empty_onnx"].write_bytes(b"")
    files["empty_pt2"].write_bytes(b"")
    files["junk_onnx"].write_bytes(b"\x08\x07not really onnx at all \xff\xfe" * 7)
    files["junk_pt2"].write_bytes(b"PK\x03\x04 junk that only starts like a zip \x00\x01\x02" * 5)
    files["truncated_onnx"].write_bytes(onnx_bytes[: len(onnx_bytes) // 3])
    files["truncated_pt2"].write_bytes(pt2_bytes[: len(pt2_bytes) // 2])
    files["empty_folder"].mkdir()
    files["junk_yaml_folder"].mkdir()
    (files["junk_yaml_folder"] / "optkit.yaml").write_text("name: [unclosed\nfactory: {{{: \n\t- nope")
    files["text"].write_text("hello, I am not a model\n")
    return files


# --------------------------------------------------------------------------------------- data

@pytest.fixture(scope="session")
def bad_data(tiny, tiny_res, tmp_path_factory) -> dict[str, Path]:
    """.npz files with wrong shapes / dtypes and data that must never yield a number."""
    d = tmp_path_factory.mktemp("bad_data")
    ev = np.load(tiny["eval"])
    x, labels = ev["input"], ev["labels"]
    calib = np.load(tiny["calib"])["input"]
    tr = np.load(tiny_res["train"])
    tx, tl = tr["input"], tr["labels"]
    n = len(x)

    def save(name: str, **arrays) -> Path:
        path = d / f"{name}.npz"
        np.savez(path, **arrays)
        return path

    files: dict[str, Path] = {}
    # wrong shapes and dtypes
    files["shape_9x9"] = save("shape_9x9", input=np.zeros((4, 1, 9, 9), np.float32), labels=np.zeros(4, np.int64))
    files["rank3"] = save("rank3", input=x[:, 0], labels=labels)
    files["rank5"] = save("rank5", input=x[:, None], labels=labels)
    files["channels3"] = save("channels3", input=np.repeat(x, 3, axis=1), labels=labels)
    files["no_input"] = save("no_input", x=x, labels=labels)
    files["empty_npz"] = save("empty_npz")
    files["bool_input"] = save("bool_input", input=x > 0, labels=labels)
    files["datetime_input"] = save("datetime_input", input=np.zeros(x.shape, "datetime64[s]"), labels=labels)
    files["junk_npz"] = d / "junk_npz.npz"
    files["junk_npz"].write_bytes(b"PK\x03\x04 this is not an npz archive" * 4)
    files["npy_not_npz"] = d / "npy_not_npz.npy"
    np.save(files["npy_not_npz"], x)
    files["calib_9x9"] = save("calib_9x9", input=np.zeros((8, 1, 9, 9), np.float32))
    files["calib_no_input"] = save("calib_no_input", x=calib)
    files["calib_datetime"] = save("calib_datetime", input=np.zeros(calib.shape, "datetime64[s]"))
    files["train_9x9"] = save("train_9x9", input=np.zeros((16, 1, 9, 9), np.float32), labels=np.zeros(16, np.int64))
    files["train_no_input"] = save("train_no_input", x=tx, labels=tl)
    # data that must never yield a number
    files["labels_7"] = save("labels_7", input=x, labels=np.where(np.arange(n) == 3, 7, labels))
    files["labels_neg"] = save("labels_neg", input=x, labels=np.where(np.arange(n) == 5, -1, labels))
    files["labels_half"] = save("labels_half", input=x, labels=np.where(np.arange(n) == 2, 0.5, labels.astype(np.float64)))
    files["labels_2d"] = save("labels_2d", input=x, labels=np.stack([labels, labels], 1))
    files["labels_short"] = save("labels_short", input=x, labels=labels[:-4])
    xn = x.copy()
    xn[3, 0, 2, 2] = np.nan
    files["nan_input"] = save("nan_input", input=xn, labels=labels)
    xi = x.copy()
    xi[5, 0, 1, 1] = np.inf
    files["inf_input"] = save("inf_input", input=xi, labels=labels)
    files["zero_samples"] = save("zero_samples", input=np.zeros((0, 1, 8, 8), np.float32), labels=np.zeros(0, np.int64))
    obj = np.empty(n, dtype=object)
    for i in range(n):
        obj[i] = x[i]
    files["object_input"] = save("object_input", input=obj, labels=labels)  # np.savez pickles object arrays
    files["unicode_input"] = save("unicode_input", input=np.full(x.shape, "x"), labels=labels)
    files["complex_input"] = save("complex_input", input=x.astype(np.complex64), labels=labels)
    cn = calib.copy()
    cn[1, 0, 4, 4] = np.nan
    files["calib_nan"] = save("calib_nan", input=cn)
    files["calib_zero"] = save("calib_zero", input=np.zeros((0, 1, 8, 8), np.float32))
    files["calib_object"] = save("calib_object", input=np.array([calib[0], calib[1]], dtype=object))
    tn = tx.copy()
    tn[7, 0, 3, 3] = np.nan
    files["train_nan"] = save("train_nan", input=tn, labels=tl)
    files["train_labels_7"] = save("train_labels_7", input=tx, labels=np.where(np.arange(len(tl)) == 1, 7, tl))
    files["train_labels_half"] = save("train_labels_half", input=tx,
                                      labels=np.where(np.arange(len(tl)) == 1, 0.5, tl.astype(np.float64)))
    return files


# ------------------------------------------------------------------------------------ pickles

class _Evil:
    """Unpickling this creates (opens for writing) the file at ``path``: the marker of a code-running load."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def evil_torch_pickle(marker: Path) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(_Evil(str(marker)), buf)
    return buf.getvalue()


def rewrite_zip(src: Path, dst: Path, replace: dict[str, bytes]) -> list[str]:
    """Copy the zip ``src`` to ``dst`` member by member (same names, order, stored), replacing the members
    whose name ends with a key of ``replace``. Returns the replaced member names."""
    replaced = []
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            for suffix, new in replace.items():
                if info.filename.endswith(suffix):
                    data = new
                    replaced.append(info.filename)
            zout.writestr(info, data)
    return replaced


SAMPLE_INPUTS_MEMBER = "data/sample_inputs/model.pt"


@pytest.fixture(scope="session")
def pickles(tiny_pt2, tmp_path_factory) -> dict[str, Path]:
    """A full torch.save(model) pickle, a malicious weights pickle, and a .pt2 whose sample-inputs member
    is a malicious pickle; every payload would create ``marker`` if unpickled."""
    import torch

    d = tmp_path_factory.mktemp("pickles")
    markers = tmp_path_factory.mktemp("markers")
    marker = markers / "PWNED"
    full = d / "full_model.pt"
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3)), full)  # a whole module: a real pickle
    evil_weights = d / "evil_weights.pt"
    evil_weights.write_bytes(evil_torch_pickle(marker))
    evil_pt2 = d / "evil.pt2"
    replaced = rewrite_zip(tiny_pt2, evil_pt2, {SAMPLE_INPUTS_MEMBER: evil_torch_pickle(marker)})
    assert len(replaced) == 1, replaced
    # the rewrite itself keeps a valid archive: an identical copy loads
    copy = markers / "identity_copy.pt2"
    rewrite_zip(tiny_pt2, copy, {})
    torch.export.load(copy)
    copy.unlink()
    # and the payload is live: a throw-away copy aimed at another marker does run when unpickled unsafely
    check = markers / "payload_is_live"
    torch.load(io.BytesIO(evil_torch_pickle(check)), weights_only=False)
    assert check.exists()
    check.unlink()
    assert not marker.exists()
    return {"full": full, "evil_weights": evil_weights, "evil_pt2": evil_pt2, "marker": marker,
            "member": Path(replaced[0])}


# ---------------------------------------------------------------------------------- factories

@pytest.fixture(scope="session")
def factories(tmp_path_factory) -> dict[str, Path]:
    """Factory modules that exit or raise while being imported."""
    d = tmp_path_factory.mktemp("factories")
    body = "\nimport torch\n\ndef build():\n    return torch.nn.Flatten()\n"
    files = {
        "sys_exit": d / "sys_exit_at_import.py",
        "os_exit": d / "os_exit_at_import.py",
        "raises": d / "raise_at_import.py",
    }
    files["sys_exit"].write_text("import sys\nsys.exit(0)\n" + body)
    files["os_exit"].write_text("import os\nos._exit(0)\n" + body)
    files["raises"].write_text("raise RuntimeError('kaboom at import')\n" + body)
    return files


# ----------------------------------------------------------------------------------- sidecars

SIDECAR_VARIANTS = ("invalid_json", "json_list", "record_x", "truncated")


@pytest.fixture(scope="session")
def bad_sidecars(tiny_onnx, tmp_path_factory) -> dict[str, Path]:
    """Copies of tiny.onnx whose ``<model>.optkit.json`` sidecar is malformed, one folder per variant."""
    good = Path(str(tiny_onnx) + ".optkit.json").read_text()
    texts = {
        "invalid_json": "{this is: not json,,}",
        "json_list": "[]",
        "record_x": json.dumps({**json.loads(good), "record": "x"}),
        "truncated": good[: len(good) // 2],
    }
    out = {}
    for variant, text in texts.items():
        d = tmp_path_factory.mktemp(f"sidecar_{variant}")
        model = d / "tiny.onnx"
        shutil.copy(tiny_onnx, model)
        for extra in tiny_onnx.parent.glob(tiny_onnx.name + ".optkit-*"):
            shutil.copy(extra, d / extra.name)
        Path(str(model) + ".optkit.json").write_text(text)
        out[variant] = model
    return out


@pytest.fixture
def tiny_copy(tiny, tmp_path) -> dict[str, Path]:
    """A private copy of the tiny sample-model folder (for cases that aim -o at the input's own files)."""
    folder = tmp_path / "tiny_copy"
    shutil.copytree(tiny["folder"], folder, ignore=shutil.ignore_patterns("__pycache__"))
    return {k: folder / v.relative_to(tiny["folder"]) if k != "folder" else folder for k, v in tiny.items()}


@pytest.fixture
def tiny_res_copy(tiny_res, tmp_path) -> dict[str, Path]:
    folder = tmp_path / "tiny_res_copy"
    shutil.copytree(tiny_res["folder"], folder, ignore=shutil.ignore_patterns("__pycache__"))
    return {k: folder / v.relative_to(tiny_res["folder"]) if k != "folder" else folder for k, v in tiny_res.items()}


@pytest.fixture
def onnx_copy(tiny_onnx, tmp_path) -> Path:
    """A private copy of tiny.onnx with its sidecar files."""
    folder = tmp_path / "onnx_copy"
    folder.mkdir()
    for f in tiny_onnx.parent.iterdir():
        if f.name.startswith(tiny_onnx.name):
            shutil.copy(f, folder / f.name)
    return folder / tiny_onnx.name




# ---------------------------------------------------------------------------------- /dev/null

DEV_NULL = "/dev/null"


def dev_null_is_intact() -> bool:
    import os
    import stat

    try:
        return stat.S_ISCHR(os.lstat(DEV_NULL).st_mode)
    except OSError:
        return False


@pytest.fixture
def dev_null_guard():
    """Cases that aim -o at /dev/null: fail if it is no longer the character device, and put it back
    (as root an os.replace() onto it would swap the device for a regular file, machine-wide)."""
    import os
    import stat

    assert dev_null_is_intact(), "/dev/null is not a character device before the case"
    leftovers_before = {n for n in os.listdir("/dev") if n.startswith(".null")}
    yield
    intact = dev_null_is_intact()
    if not intact:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(DEV_NULL)
        os.mknod(DEV_NULL, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.chmod(DEV_NULL, 0o666)
    leftovers = {n for n in os.listdir("/dev") if n.startswith(".null")} - leftovers_before
    for name in leftovers:
        with contextlib.suppress(OSError):
            os.unlink(os.path.join("/dev", name))
    assert intact, "/dev/null was replaced by a regular file (restored by the test)"
    assert not leftovers, f"temporary files left in /dev: {sorted(leftovers)}"


__all__ = ["SAMPLE_INPUTS_MEMBER", "SIDECAR_VARIANTS", "dev_null_is_intact"]


# ----------------------------------------------------------------------------- hostile .pt2 archives

def _evil_legacy_torch_pickle(marker: Path) -> bytes:
    """torch.save's pre-1.6 format: a plain pickle stream (starts with the \\x80 PROTO opcode)."""
    import torch

    buf = io.BytesIO()
    torch.save(_Evil(str(marker)), buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


def _pt2_root(src: Path) -> str:
    with zipfile.ZipFile(src) as zf:
        return zf.infolist()[0].filename.split("/", 1)[0]


def add_members(src: Path, dst: Path, extra: list[tuple[str, bytes]] = (), replace: dict[str, bytes] | None = None,
                deflate: tuple[str, int] | None = None) -> None:
    """Copy the zip ``src`` to ``dst`` (members replaced by exact name from ``replace``), then append ``extra``
    (names may repeat and be odd: Python's zipfile writes them as given); ``deflate``: (name, n) appends a
    deflated member of n zero bytes, written in chunks (a zip bomb)."""
    import warnings

    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name"
        for info in zin.infolist():
            zout.writestr(info, (replace or {}).get(info.filename, zin.read(info)))
        for name, data in extra:
            zout.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
        if deflate:
            name, n = deflate
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            chunk = bytes(1 << 20)
            with zout.open(info, "w", force_zip64=True) as fh:
                for _ in range(n >> 20):
                    fh.write(chunk)


def _declare_size(path: Path, member: str, size: int) -> None:
    """Make the central directory (and local header) of ``member`` declare ``size`` uncompressed bytes."""
    import struct

    data = bytearray(path.read_bytes())
    name = member.encode()
    central = data.rfind(name)
    assert data[central - 46:central - 42] == b"PK\x01\x02", "member is not the last name in the directory"
    struct.pack_into("<I", data, central - 46 + 24, size)
    first = data.find(name)
    assert data[first - 30:first - 26] == b"PK\x03\x04"
    struct.pack_into("<I", data, first - 30 + 22, size)
    path.write_bytes(bytes(data))


# variant -> what the error line must name (the member, or what the bound is about)
HOSTILE_PT2 = {
    "legacy-weights": "data/weights/model.pt",             # torch: weights_only=True fails -> weights_only=False
    "legacy-constants": "data/constants/model.pt",         # the same fallback, pre-1.6 torch.save format
    "legacy-weights-protocol0": "data/weights/model.pt",   # a plain protocol-0 pickle: no \x80, no zip
    "config-pickle-misleading-extension": "data/weights/notes.json",  # the payload config says use_pickle
    "pickle-as-text-file": "extra/readme.txt",             # a torch.save zip named like an extra text file
    "nested-zip-pickle": "data/misc/blob.bin",             # a zip holding data.pkl, where torch never looks
    "raw-pickle-protocol4": "data/misc/state",             # pickle.dumps, no extension
    "old-format-state-dict": "serialized_state_dict.pt",   # the pre-2.8 format's member, at the top level
    "duplicate-sample-inputs": "data/sample_inputs/model.pt",  # a second member of the same name
    "dotdot-path": "../evil.pt",
    "absolute-path": "/tmp/evil.pt",
    "dotdot-inside-path": "data/../data/weights/model.pt",
    "control-char-path": "x\\ny.pt",                       # shown escaped, on one line
    "zip-bomb": "bomb.txt",                                # 256 MiB of deflated zeros
    "lying-size": "data/misc/huge",                        # a header declaring 3.75 GiB
    "many-members": "members",                             # 20 001 extra members
}
LIVE_HOSTILE_PT2 = ("legacy-weights", "legacy-constants", "legacy-weights-protocol0", "config-pickle-misleading-extension")


def build_hostile_pt2(variant: str, genuine: Path, dst: Path, marker: Path) -> Path:
    """``genuine`` (a valid .pt2) with the variant's hostile members; every pickle creates ``marker`` if unpickled."""
    import pickle

    root = _pt2_root(genuine)
    evil = evil_torch_pickle(marker)
    member = {
        "legacy-weights": [(f"{root}/data/weights/model.pt", evil)],
        "legacy-constants": [(f"{root}/data/constants/model.pt", _evil_legacy_torch_pickle(marker))],
        "legacy-weights-protocol0": [(f"{root}/data/weights/model.pt", pickle.dumps(_Evil(str(marker)), protocol=0))],
        "pickle-as-text-file": [(f"{root}/extra/readme.txt", evil)],
        "nested-zip-pickle": [(f"{root}/data/misc/blob.bin", evil)],
        "raw-pickle-protocol4": [(f"{root}/data/misc/state", pickle.dumps(_Evil(str(marker)), protocol=4))],
        "old-format-state-dict": [("serialized_state_dict.pt", evil)],
        "duplicate-sample-inputs": [(f"{root}/{SAMPLE_INPUTS_MEMBER}", evil)],
        "dotdot-path": [("../evil.pt", evil)],
        "absolute-path": [("/tmp/evil.pt", evil)],
        "dotdot-inside-path": [(f"{root}/data/../data/weights/model.pt", evil)],
        "control-char-path": [(f"{root}/data/weights/x\ny.pt", evil)],
        "lying-size": [(f"{root}/data/misc/huge", b"\0" * 64)],
        "many-members": [(f"{root}/extra/f{i:05d}", b"") for i in range(20_001)],
    }.get(variant, [])
    replace = {}
    if variant == "config-pickle-misleading-extension":
        config_name = f"{root}/data/weights/model_weights_config.json"
        with zipfile.ZipFile(genuine) as zf:
            config = json.loads(zf.read(config_name))
        config["config"]["evil"] = {"path_name": "notes.json", "is_param": False, "use_pickle": True,
                                    "tensor_meta": None}
        replace[config_name] = json.dumps(config).encode()
        member = [(f"{root}/data/weights/notes.json", evil)]
    add_members(genuine, dst, member, replace, deflate=(f"{root}/extra/bomb.txt", 256 << 20) if variant == "zip-bomb" else None)
    if variant == "lying-size":
        _declare_size(dst, f"{root}/data/misc/huge", 0xF000_0000)
    return dst


@pytest.fixture(scope="session")
def hostile_pt2(tiny_pt2, tmp_path_factory) -> dict[str, Path]:
    """The tiny model's genuine .pt2 with hostile members added (HOSTILE_PT2), ``marker`` (never to appear),
    and ``stray``: a member outside the archive folder, which torch.export.load fails on after logging a traceback.

    The LIVE_HOSTILE_PT2 variants are checked to be real holes: plain ``torch.export.load`` runs their payload."""
    import contextlib as _contextlib
    import logging
    import warnings

    import torch

    d = tmp_path_factory.mktemp("hostile_pt2")
    markers = tmp_path_factory.mktemp("hostile_markers")
    marker = markers / "PWNED"
    live = tmp_path_factory.mktemp("hostile_live")
    for variant in LIVE_HOSTILE_PT2:
        check = live / f"ran-{variant}"
        archive = build_hostile_pt2(variant, tiny_pt2, live / f"{variant}.pt2", check)
        logging.disable(logging.CRITICAL)
        try:
            with _contextlib.suppress(Exception), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.export.load(archive)
        finally:
            logging.disable(logging.NOTSET)
        assert check.exists(), f"{variant}: torch.export.load did not run the payload (the case tests nothing)"
    shutil.rmtree(live)
    files = {variant: build_hostile_pt2(variant, tiny_pt2, d / f"{variant}.pt2", marker) for variant in HOSTILE_PT2}
    files["stray"] = d / "stray.pt2"
    add_members(tiny_pt2, files["stray"], [("stray.txt", b"just a note\n")])
    assert not marker.exists()
    return {**files, "marker": marker}


@pytest.fixture(scope="session")
def misfit_weights(tiny, tmp_path_factory) -> dict[str, Path]:
    """A state dict (plain tensors, loadable with weights_only=True) that does not fit the tiny factory's model:
    its first tensor is one row wider; ``key``, ``file_shape``, ``model_shape`` say which and how."""
    import torch

    d = tmp_path_factory.mktemp("misfit_weights")
    state = torch.load(tiny["weights"], weights_only=True)
    first = next(iter(state))
    wide = dict(state)
    wide[first] = torch.cat([state[first], state[first][:1]])
    torch.save(wide, d / "wide.pt")
    return {"wide": d / "wide.pt", "key": first, "file_shape": list(wide[first].shape),
            "model_shape": list(state[first].shape)}
