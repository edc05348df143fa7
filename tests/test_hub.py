"""Model files: downloads verified and atomic, the offline switch, pins, shipped checksums."""
import hashlib
import re

import pytest
import torch

from emotion_pipeline.models import registry, sources, weights_io
from emotion_pipeline.models.fusion_head import FusionHead, FusionHeadConfig


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTION_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("EMOTION_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "cache"


def test_download_is_verified_and_atomic(tmp_path, cache):
    src = tmp_path / "model.bin"
    src.write_bytes(b"weights" * 1000)
    good = hashlib.sha256(src.read_bytes()).hexdigest()
    dest = cache / "m" / "model.bin"
    with pytest.raises(registry.ChecksumError):
        sources.fetch_url(src.as_uri(), dest, sha256="0" * 64, progress=False)
    assert not dest.exists() and not list(dest.parent.glob("*.part"))     # nothing half-written
    assert sources.fetch_url(src.as_uri(), dest, sha256=good, progress=False).read_bytes() == src.read_bytes()


def test_unpublished_checksum_is_pinned_on_first_download(tmp_path, cache):
    src = tmp_path / "det.onnx"
    src.write_bytes(b"abc")
    dest = cache / "det.onnx"
    sources.fetch_url(src.as_uri(), dest, sha256=None, progress=False)
    dest.write_bytes(b"tampered")
    with pytest.raises(registry.ChecksumError):
        sources.fetch_url(src.as_uri(), dest, sha256=None, progress=False)


def test_offline_switch_never_downloads(tmp_path, cache, monkeypatch):
    src = tmp_path / "x.bin"
    src.write_bytes(b"x")
    monkeypatch.setenv("EMOTION_OFFLINE", "1")
    with pytest.raises(registry.ModelUnavailableError, match="offline"):
        sources.fetch_url(src.as_uri(), cache / "x.bin", sha256=None, progress=False)
    for kind in ("face", "audio", "text", "asr"):
        with pytest.raises(registry.ModelUnavailableError, match="someone/some-model"):
            registry.load("someone/some-model", kind=kind)


def test_registry_round_trip_and_checks(tmp_path):
    torch.manual_seed(0)
    head = FusionHead(FusionHeadConfig(hidden=8))
    path = tmp_path / "head.safetensors"
    weights_io.save(path, head, arch="fusion_head", config=head.config, extra={"encoders": {"face": "f"}})
    loaded = registry.load(str(path))
    assert loaded.meta["encoders"] == {"face": "f"} and loaded.sha256 == weights_io.sha256_file(path)
    x, m = torch.softmax(torch.randn(2, 3, 7), -1), torch.ones(2, 3)
    assert torch.allclose(loaded.module(x, m), head.eval()(x, m))
    with pytest.raises(registry.ModelUnavailableError, match="valid names"):
        registry.load("no-such-model")


def test_shipped_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    head = FusionHead(FusionHeadConfig(hidden=8))
    weights_io.save(tmp_path / "fusion_head.safetensors", head, arch="fusion_head", config=head.config)
    (tmp_path / "checksums.json").write_text('{"fusion_head.safetensors": "%s"}' % ("0" * 64))
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(registry, "CHECKSUMS_FILE", tmp_path / "checksums.json")
    with pytest.raises(registry.ChecksumError):
        registry.load("fusion-head")


@pytest.mark.parametrize("name", [n for n, s in registry.SPECS.items() if s.origin == "shipped"])
def test_every_shipped_model_loads_offline_and_verifies(name):
    loaded = registry.load(name, offline=True)
    recorded = registry.recorded_checksums()[registry.shipped_path(name).name]
    assert loaded.sha256 == recorded
    if registry.SPECS[name].kind == "detector":
        assert loaded.path == registry.shipped_path(name)


def test_a_hub_repo_revision_is_pinned_on_first_download(tmp_path, cache, monkeypatch):
    """A repo without a commit in the table: the commit main resolves to is kept, and used after."""
    import huggingface_hub

    asked = []

    def fake_snapshot(repo_id, *, revision, cache_dir, local_files_only, allow_patterns):
        asked.append(revision)
        folder = tmp_path / "snap" / ("ab" * 20)
        if not folder.exists():
            folder.mkdir(parents=True)
            (folder / "model.safetensors").write_bytes(b"w")
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    folder, commit, digests = sources.hf_snapshot("org/repo", revision=None, patterns=["*"])
    assert commit == "ab" * 20 and digests["model.safetensors"] == hashlib.sha256(b"w").hexdigest()
    sources.hf_snapshot("org/repo", revision=None, patterns=["*"])
    assert asked == ["main", "ab" * 20]
    (folder / "model.safetensors").write_bytes(b"changed")               # pinned file changed
    with pytest.raises(registry.ChecksumError, match="pinned"):
        sources.hf_snapshot("org/repo", revision=None, patterns=["*"])


def test_hub_rows_name_a_commit_or_are_pinned_on_first_download():
    for spec in registry.SPECS.values():
        if spec.origin == "hf" and spec.revision is not None:
            assert re.fullmatch(r"[0-9a-f]{40}", spec.revision), spec.name
        if spec.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256), spec.name


def _record_many(folder: str, prefix: str, n: int) -> None:
    for i in range(n):
        registry.record_checksum(f"{folder}/{prefix}{i}.bin")


def test_concurrent_checksum_records_lose_nothing(tmp_path, monkeypatch):
    """Two exports recording checksums at once (read-modify-write of one JSON file) keep every entry."""
    import multiprocessing
    for prefix in "ab":
        for i in range(25):
            (tmp_path / f"{prefix}{i}.bin").write_bytes(f"{prefix}{i}".encode())
    monkeypatch.setattr(registry, "CHECKSUMS_FILE", tmp_path / "checksums.json")
    ctx = multiprocessing.get_context("fork")  # children inherit the patched CHECKSUMS_FILE
    procs = [ctx.Process(target=_record_many, args=(str(tmp_path), p, 25)) for p in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    sums = registry.recorded_checksums()
    assert len(sums) == 50
    assert sums["b7.bin"] == hashlib.sha256(b"b7").hexdigest()
