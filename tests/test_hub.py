import hashlib

import pytest
import torch

from emotion_pipeline.models import hub, registry, weights_io
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
        hub.fetch_url(src.as_uri(), dest, sha256="0" * 64, progress=False)
    assert not dest.exists() and not list(dest.parent.glob("*.part"))     # nothing half-written
    assert hub.fetch_url(src.as_uri(), dest, sha256=good, progress=False).read_bytes() == src.read_bytes()


def test_unpublished_checksum_is_pinned_on_first_download(tmp_path, cache):
    src = tmp_path / "det.onnx"
    src.write_bytes(b"abc")
    dest = cache / "det.onnx"
    hub.fetch_url(src.as_uri(), dest, sha256=None, progress=False)
    dest.write_bytes(b"tampered")
    with pytest.raises(registry.ChecksumError):
        hub.fetch_url(src.as_uri(), dest, sha256=None, progress=False)


def test_offline_switch_never_downloads(tmp_path, cache, monkeypatch):
    src = tmp_path / "x.bin"
    src.write_bytes(b"x")
    monkeypatch.setenv("EMOTION_OFFLINE", "1")
    with pytest.raises(registry.ModelUnavailableError, match="offline"):
        hub.fetch_url(src.as_uri(), cache / "x.bin", sha256=None, progress=False)
    with pytest.raises(registry.ModelUnavailableError):
        hub.hf_snapshot("someone/some-model")


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


@pytest.mark.parametrize("name", sorted(registry.SHIPPED))
def test_every_shipped_model_loads_and_verifies(name):
    if not registry.shipped_path(name).exists():
        pytest.skip(f"{name} not trained in this checkout")
    loaded = registry.load(name)
    assert loaded.sha256 == registry.recorded_checksums()[registry.SHIPPED[name]]


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
