"""Step cache for ``optkit run``: reuse a step's artifact when nothing that made it has changed.

A step's key is the sha256 of everything its result depends on: the step and its resolved
options, the digest of its input artifact, the bytes of every data file the chain reads (eval,
calibration, train splits, and files an option names, e.g. a teacher model), the measurement
settings, the recipe's seed, the versions of the libraries involved and optkit's own source.
The key is stored in the output's sidecar (``record.cache_key``); a re-run finds the output where
the recipe puts it, compares keys, and re-hashes the artifact's files against the digest the
sidecar recorded, so a corrupted or hand-edited entry is rebuilt, never used.

Measuring steps (``profile``) keep their result in ``NN_profile.json`` next to the artifacts,
with the same key and a digest of the stored result.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from optkit.types.ledger import Profile
from optkit.types.artifact import Artifact, sidecar_path
from optkit.backends.opening import open_artifact
from optkit.types.errors import UsageError
from optkit.types.files import sha256_file

CACHE_VERSION = 1


@lru_cache(maxsize=1)
def optkit_source_digest() -> str:
    """optkit's own code is an input too: an edited step must not be served from the cache."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _file_digest(path: Path) -> str:
    if path.is_dir():
        digest = hashlib.sha256()
        for f in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            digest.update(str(f.relative_to(path)).encode() + b"\0" + sha256_file(f).encode())
        return digest.hexdigest()
    return sha256_file(path)


def _named_files(options: dict[str, Any], base: Path) -> dict[str, str]:
    """Digests of files the options name (teacher models, train data...), relative to the recipe."""
    found = {}
    for key, value in sorted(options.items()):
        if not isinstance(value, str) or not value or "\n" in value or len(value) > 4096:
            continue
        target = value.split(".py:")[0] + ".py" if ".py:" in value else value  # a factory 'file.py:build'
        path = Path(target) if Path(target).is_absolute() else base / target
        try:
            if path.exists():
                found[key] = _file_digest(path)
        except OSError:
            continue
    return found


def step_key(*, step: str, options: dict[str, Any], parent: Artifact, settings: dict[str, Any], seed: int,
             versions: dict[str, str], base: Path) -> str:
    parent_digest = parent.record.sha256 if parent.record else parent.digest()
    facts = {
        "cache_version": CACHE_VERSION, "step": step, "options": options, "parent": parent_digest,
        "data": {k: sha256_file(Path(v)) for k, v in sorted(parent.data.items()) if Path(v).is_file()},
        "named_files": _named_files(options, base), "measure": settings, "seed": seed,
        "versions": versions, "optkit_source": optkit_source_digest(),
    }
    return json_sha256(facts)


def lookup_artifact(final: Path, key: str) -> tuple[Artifact | None, str | None]:
    """(artifact, None) on a hit; (None, why) when there is an entry that cannot be used; (None, None) when none.

    The reference outputs beside an artifact are verified by the engine when it loads them."""
    if not (final.exists() and sidecar_path(final).is_file()):
        return None, None
    try:
        artifact = open_artifact(final)
    except (UsageError, OSError) as exc:
        return None, f"unreadable ({exc})"
    record = artifact.record
    if record is None or record.cache_key != key:
        return None, "inputs or options changed" if record is not None and record.cache_key else None
    try:
        if artifact.digest() != record.sha256:
            return None, "its files do not match the sha256 recorded when it was built"
    except OSError as exc:
        return None, f"unreadable ({exc})"
    return artifact, None


def machine_facts() -> dict[str, Any]:
    """What any timing figure depends on besides the artifacts and data: the CPU (model, cores, flags), the
    library versions and optkit's own source. Part of every key under which figures are kept for reuse."""
    from optkit.engine.versions import tool_versions
    from optkit.types.machine import cpu_flags, cpu_info

    cpu = cpu_info()
    return {"cpu": [cpu.model, cpu.logical_cores, cpu.simd, sorted(cpu_flags())],
            "versions": tool_versions(all_backends=True), "optkit_source": optkit_source_digest()}


KEYED_MAX_BYTES = 1 << 20  # a stored timing pass is a few KB; a bigger file is not one of optkit's


def keyed_entry(path: Path, key: str) -> dict[str, Any] | None:
    """The figures ``save_keyed`` stored at ``path`` under ``key`` (with their ``measured_at``), or None: no file,
    another key (other artifacts, data, settings or machine), or not one of optkit's."""
    try:
        if path.stat().st_size > KEYED_MAX_BYTES:
            return None
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return raw if isinstance(raw, dict) and raw.get("key") == key and isinstance(raw.get("measured_at"), str) else None


def save_keyed(path: Path, key: str, entry: dict[str, Any]) -> None:
    """``entry`` at ``path`` under ``key``, stamped with when it was measured (now), for ``keyed_entry``."""
    import time

    from optkit.types.files import write_json

    write_json(path, {**entry, "key": key, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def json_sha256(obj: Any) -> str:
    """Digest of a JSON-able value, independent of key order (what a JSON round trip preserves)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class ProfileEntry(BaseModel):
    """``NN_profile.json``: a measuring step's result, its cache key and the digest of the result."""

    cache_key: str | None = None
    sha256: str | None = None
    profile: dict[str, Any]


def lookup_profile(path: Path, key: str) -> tuple[Profile | None, str | None]:
    if not path.is_file():
        return None, None
    try:
        entry = ProfileEntry.model_validate(json.loads(path.read_text()))
        if entry.cache_key != key:
            return None, "inputs or options changed"
        if json_sha256(entry.profile) != entry.sha256:
            return None, "its content does not match the sha256 recorded when it was measured"
        return Profile.model_validate(entry.profile), None
    except (ValueError, OSError) as exc:  # ValidationError is a ValueError: not the shape profile_entry writes
        return None, f"unreadable ({type(exc).__name__})"


def profile_entry(profile: Profile, key: str) -> dict[str, Any]:
    stored = profile.to_json()
    return ProfileEntry(cache_key=key, sha256=json_sha256(stored), profile=stored).model_dump()
