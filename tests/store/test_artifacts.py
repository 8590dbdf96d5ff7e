"""Artifacts behind one interface: the local folder, and S3 (moto's server, through s3fs) shared by machines.

"Another machine" is simulated by removing the folder the trainer wrote: whatever is served afterwards must
come from the object store.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest

from openft.config import reset_settings
from openft.store import artifacts
from openft.store.artifacts import MANIFEST, FsspecArtifactStore, LocalArtifactStore


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint():
    pytest.importorskip("s3fs")
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_options(s3_endpoint, monkeypatch):
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    options = {"endpoint_url": s3_endpoint, "use_listings_cache": False, "skip_instance_cache": True}
    fs = s3fs.S3FileSystem(**options)
    if not fs.exists("openft-artifacts"):
        fs.mkdir("openft-artifacts")
    return options


def _folder(root: Path, content: str) -> Path:
    root.mkdir(parents=True)
    (root / "adapter_config.json").write_text(json.dumps({"r": 8, "content": content}))
    (root / "nested").mkdir()
    (root / "nested" / "weights.bin").write_bytes(content.encode() * 1000)
    return root


def _read(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_local_store_copies_and_replaces_atomically(tmp_path):
    store = LocalArtifactStore(tmp_path / "store")
    store.put_folder("ftjob-a/final", _folder(tmp_path / "v1", "one"))
    store.put_folder("ftjob-a/final", _folder(tmp_path / "v2", "two"))  # replaces, never merges
    assert _read(store.path("ftjob-a/final")) == _read(tmp_path / "v2")
    assert not [p for p in (tmp_path / "store" / "ftjob-a").iterdir() if p.name.startswith(".")]  # no temp left
    assert store.get_folder("ftjob-a/final", tmp_path / "copy") and _read(tmp_path / "copy") == _read(tmp_path / "v2")
    assert not store.get_folder("ftjob-b/final", tmp_path / "none")
    with pytest.raises(ValueError, match="leaves the store"):
        store.path("../outside")


def test_s3_store_round_trip_overwrite_and_delete(tmp_path, s3_options):
    store = FsspecArtifactStore("s3://openft-artifacts/run1", s3_options)
    store.put_folder("ftjob-a/final", _folder(tmp_path / "v1", "one"))
    assert store.exists("ftjob-a/final")
    assert store.get_folder("ftjob-a/final", tmp_path / "down1")
    assert _read(tmp_path / "down1") == _read(tmp_path / "v1")

    store.put_folder("ftjob-a/final", _folder(tmp_path / "v2", "two"))
    assert store.get_folder("ftjob-a/final", tmp_path / "down1")  # replaces the earlier download atomically
    assert _read(tmp_path / "down1") == _read(tmp_path / "v2")

    store.delete("ftjob-a")
    assert not store.exists("ftjob-a/final") and not store.get_folder("ftjob-a/final", tmp_path / "down2")
    assert not (tmp_path / "down2").exists()


def test_a_folder_without_its_manifest_is_not_there_yet(tmp_path, s3_options):
    """An upload cut short (files written, manifest not yet) is invisible to readers."""
    store = FsspecArtifactStore("s3://openft-artifacts/partial", s3_options)
    folder = _folder(tmp_path / "v1", "one")
    store.fs.put_file(str(folder / "adapter_config.json"), f"{store.root}/ftjob-p/final/adapter_config.json")
    assert not store.exists("ftjob-p/final")
    assert not store.get_folder("ftjob-p/final", tmp_path / "down")
    store.put_folder("ftjob-p/final", folder)
    assert store.fs.exists(f"{store.root}/ftjob-p/final/{MANIFEST}")
    assert store.get_folder("ftjob-p/final", tmp_path / "down")


def test_another_machine_gets_the_artifact_from_s3(tmp_path, s3_options, monkeypatch, openft_home):
    monkeypatch.setenv("OPENFT_ARTIFACT_STORE_URL", "s3://openft-artifacts/shared")
    monkeypatch.setenv("OPENFT_ARTIFACT_STORE_OPTIONS", json.dumps(s3_options))
    output_dir = tmp_path / "worker-machine" / "ftjob-xyz"
    final = _folder(output_dir / "final", "trained")
    expected = _read(final)

    assert artifacts.publish(final, output_dir) == "ftjob-xyz/final"
    shutil.rmtree(output_dir)  # the worker's disk is not this machine's
    local = artifacts.local_folder(final, output_dir)
    assert local == openft_home.home / "artifact-cache" / "ftjob-xyz" / "final"
    assert _read(local) == expected
    assert artifacts.local_folder(output_dir / "checkpoint-9", output_dir) is None  # never uploaded

    artifacts.delete_job_artifacts(output_dir)
    assert not local.exists()
    assert artifacts.local_folder(final, output_dir) is None


def test_the_default_store_is_the_local_artifacts_folder_and_publish_copies_nothing(tmp_path, openft_home):
    reset_settings()
    store = artifacts.get_artifact_store()
    assert isinstance(store, LocalArtifactStore) and store.root == openft_home.artifacts_dir
    final = _folder(tmp_path / "ftjob-q" / "final", "x")
    artifacts.publish(final, tmp_path / "ftjob-q")
    assert not (openft_home.artifacts_dir / "ftjob-q").exists()
    assert artifacts.local_folder(final, tmp_path / "ftjob-q") == final


def test_training_uploads_checkpoints_and_the_final_adapter(tmp_path, tiny_model_dir, s3_options, monkeypatch,
                                                            openft_home):
    from openft.training.callbacks import NullReporter
    from openft.training.hyperparameters import resolve_hyperparameters
    from openft.training.trainer import run_training
    from openft.training.trainer_config import TrainerRunConfig

    monkeypatch.setenv("OPENFT_ARTIFACT_STORE_URL", "s3://openft-artifacts/train")
    monkeypatch.setenv("OPENFT_ARTIFACT_STORE_OPTIONS", json.dumps(s3_options))
    monkeypatch.setenv("OPENFT_TRAINING_PRECISION", "fp32")
    reset_settings()
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(4)]
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    hparams = resolve_hyperparameters("supervised", {"n_epochs": 2, "batch_size": 4}, n_train_examples=4,
                                      context_length=256)
    output_dir = tmp_path / "ftjob-trained"
    result = run_training(TrainerRunConfig(base_model=str(tiny_model_dir), training_file=str(train),
                                           output_dir=str(output_dir), hyperparameters=hparams, report_to=[]),
                          NullReporter())
    store = artifacts.get_artifact_store()
    assert result.status == "succeeded"
    assert store.exists("ftjob-trained/final") and store.exists("ftjob-trained/checkpoint-1")
    assert store.exists("ftjob-trained/checkpoint-2")
    assert store.get_folder("ftjob-trained/final", tmp_path / "served")
    assert _read(tmp_path / "served") == _read(Path(result.final_path))
