"""Job artifacts (checkpoints, final adapters and models) behind one interface: a local folder or object storage.

The default is the local folder ``$OPENFT_HOME/artifacts``, where training writes anyway, so nothing is copied.
``OPENFT_ARTIFACT_STORE_URL`` (``s3://bucket/prefix``, ``gs://...``, ``file:///shared/...``: any fsspec URL,
with ``OPENFT_ARTIFACT_STORE_OPTIONS`` as a JSON object of fsspec storage options, e.g. an S3 ``endpoint_url``)
puts them in object storage instead: the trainer uploads each checkpoint and the final folder, and a server on
another machine downloads a fine-tuned model the first time it is asked for (cached under
``$OPENFT_HOME/artifact-cache``). Workers and servers on several machines then share artifacts without a
shared filesystem.

Keys are ``<job output folder name>/<path inside it>`` (``ftjob-abc/final``, ``ftjob-abc/checkpoint-30``), so
they do not depend on where ``OPENFT_HOME`` is on each machine.

Writes are atomic: a local folder is written under a temporary name and renamed into place; in object storage
each file is one PUT (all or nothing) and a folder counts as present only once its manifest, written last,
is there. Readers never see half a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Protocol

MANIFEST = ".openft-manifest.json"


class ArtifactStore(Protocol):
    url: str

    def put_folder(self, key: str, folder: Path) -> None:
        """Store ``folder`` under ``key``, replacing what was there; readers see the old or the new, never a mix."""

    def get_folder(self, key: str, destination: Path) -> bool:
        """Copy the folder at ``key`` to ``destination`` (atomically); False if no complete folder is there."""

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None:
        """Remove everything under ``key`` (a missing key is not an error)."""


def _replace_dir(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an existing target is moved aside first, then removed."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _copy_dir_atomically(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        shutil.copytree(source, staging, dirs_exist_ok=True)
        _replace_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class LocalArtifactStore:
    """Artifacts in a local (or mounted shared) folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = self.root.as_uri() if self.root.is_absolute() else str(self.root)

    def path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"artifact key {key!r} leaves the store")
        return path

    def put_folder(self, key: str, folder: Path) -> None:
        target = self.path(key)
        if Path(folder).resolve() == target:
            return  # training wrote it in place already
        _copy_dir_atomically(Path(folder), target)

    def get_folder(self, key: str, destination: Path) -> bool:
        source = self.path(key)
        if not source.is_dir():
            return False
        if Path(destination).resolve() != source:
            _copy_dir_atomically(source, Path(destination))
        return True

    def exists(self, key: str) -> bool:
        return self.path(key).is_dir()

    def delete(self, key: str) -> None:
        shutil.rmtree(self.path(key), ignore_errors=True)


class FsspecArtifactStore:
    """Artifacts in any fsspec filesystem: S3 (s3fs), GCS, Azure, a shared ``file://`` folder, memory (tests)."""

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        import fsspec

        self.url = url
        self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = root.rstrip("/")
        # Filesystems with a real rename get temp-then-rename files; object stores' PUT is atomic by itself.
        self._renames = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,))

    def _path(self, key: str) -> str:
        parts = [p for p in key.strip("/").split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise ValueError(f"invalid artifact key {key!r}")
        return f"{self.root}/{'/'.join(parts)}"

    def _put_file(self, local: Path, remote: str) -> None:
        if self._renames:
            temp = f"{remote}.tmp-{uuid.uuid4().hex[:8]}"
            self.fs.put_file(str(local), temp)
            self.fs.mv(temp, remote)
        else:
            self.fs.put_file(str(local), remote)

    def put_folder(self, key: str, folder: Path) -> None:
        folder, base = Path(folder), self._path(key)
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        if self.fs.exists(f"{base}/{MANIFEST}"):
            self.fs.rm_file(f"{base}/{MANIFEST}")  # the folder is incomplete from here until the new manifest
        manifest = {}
        for local in files:
            relative = local.relative_to(folder).as_posix()
            self._put_file(local, f"{base}/{relative}")
            manifest[relative] = local.stat().st_size
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
            json.dump({"files": manifest}, handle)
        try:
            self._put_file(Path(handle.name), f"{base}/{MANIFEST}")
        finally:
            os.unlink(handle.name)

    def _manifest(self, key: str) -> dict[str, int] | None:
        path = f"{self._path(key)}/{MANIFEST}"
        try:
            with self.fs.open(path, "rb") as handle:
                return json.loads(handle.read())["files"]
        except FileNotFoundError:
            return None

    def get_folder(self, key: str, destination: Path) -> bool:
        manifest = self._manifest(key)
        if manifest is None:
            return False
        destination = Path(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.tmp-", dir=destination.parent))
        try:
            base = self._path(key)
            for relative, size in manifest.items():
                local = staging / relative
                local.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get_file(f"{base}/{relative}", str(local))
                if local.stat().st_size != size:
                    raise OSError(f"artifact {key}/{relative}: expected {size} bytes, got {local.stat().st_size}")
            _replace_dir(staging, destination)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return True

    def exists(self, key: str) -> bool:
        return self._manifest(key) is not None

    def delete(self, key: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm(path, recursive=True)


# --- the configured store, and helpers keyed by job folders ---------------------------------------------


def get_artifact_store() -> ArtifactStore:
    url = os.environ.get("OPENFT_ARTIFACT_STORE_URL", "").strip()
    if not url:
        from openft.config import get_settings

        return LocalArtifactStore(get_settings().artifacts_dir)
    raw = os.environ.get("OPENFT_ARTIFACT_STORE_OPTIONS", "").strip()
    try:
        options = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise ValueError(f"OPENFT_ARTIFACT_STORE_OPTIONS must be a JSON object: {exc}") from None
    return FsspecArtifactStore(url, options)


def artifact_key(path: str | Path, output_dir: str | Path) -> str:
    """``ftjob-abc/final`` for ``<output_dir>/final`` where output_dir's name is ``ftjob-abc``."""
    path, output_dir = Path(path), Path(output_dir)
    try:
        relative = path.relative_to(output_dir).as_posix()
    except ValueError:
        relative = path.name
    return f"{output_dir.name}/{relative}" if relative != "." else output_dir.name


def publish(path: str | Path, output_dir: str | Path, store: ArtifactStore | None = None) -> str:
    """Store a folder the trainer wrote. A no-op for the default local store: the job's folder is the artifact
    (wherever the job's output_dir is), and copying it elsewhere on the same disk would only double it."""
    store = store or get_artifact_store()
    key = artifact_key(path, output_dir)
    if not isinstance(store, LocalArtifactStore):
        store.put_folder(key, Path(path))
    return key


def cache_dir() -> Path:
    from openft.config import get_settings

    return get_settings().home / "artifact-cache"


def local_folder(path: str | Path, output_dir: str | Path | None, store: ArtifactStore | None = None) -> Path | None:
    """A local folder holding the artifact recorded at ``path``: itself when it exists on this machine, else a
    copy fetched from the artifact store into the cache; None when neither has it."""
    path = Path(path)
    if path.is_dir():
        return path
    if output_dir is None:
        return None
    store = store or get_artifact_store()
    key = artifact_key(path, output_dir)
    if isinstance(store, LocalArtifactStore):
        local = store.path(key)
        return local if local.is_dir() else None
    cached = cache_dir() / key
    if cached.is_dir():
        return cached
    return cached if store.get_folder(key, cached) else None


def delete_job_artifacts(output_dir: str | Path, store: ArtifactStore | None = None) -> None:
    """Remove a job's artifacts from the store and from this machine's download cache."""
    store = store or get_artifact_store()
    name = Path(output_dir).name
    if not isinstance(store, LocalArtifactStore):
        store.delete(name)
    shutil.rmtree(cache_dir() / name, ignore_errors=True)
