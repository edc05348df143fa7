import numpy as np
import pytest

from emotion_pipeline import demux
from emotion_pipeline.errors import InputError
from tests.conftest import EDGE, MEAD, TALKING, ffmpeg, needs_data, needs_ffmpeg

pytestmark = needs_data


def test_probe_talking_clip():
    info = demux.probe(TALKING)
    assert info.has_video and info.has_audio
    assert info.duration_s == pytest.approx(20.0, abs=0.1)
    assert info.fps == pytest.approx(30.0)
    assert (info.width, info.height) == (256, 256)
    assert info.n_seconds == 20


def test_probe_mead_has_no_audio():
    info = demux.probe(MEAD / "M030_front_angry_level3_001.mp4")
    assert info.has_video and not info.has_audio
    assert list(demux.iter_audio(info.path)) == []


def test_frames_are_sampled_at_the_requested_rate():
    frames = list(demux.iter_frames(TALKING, sample_fps=4))
    times = np.array([f.t_s for f in frames])
    assert 76 <= len(frames) <= 84            # 20 s x 4 fps
    assert np.all(np.diff(times) > 0.15)      # never bunched
    assert np.all(np.diff(times) < 0.35)
    assert frames[0].image.dtype == np.uint8 and frames[0].image.shape == (256, 256, 3)


def test_variable_frame_rate_hevc_is_sampled_evenly():
    frames = list(demux.iter_frames(EDGE / "face_noface.mov", sample_fps=2, max_side_px=320))
    times = np.array([f.t_s for f in frames])
    info = demux.probe(EDGE / "face_noface.mov")
    assert info.video_codec == "hevc"
    assert abs(len(frames) - info.duration_s * 2) <= 2
    assert max(f.image.shape[1] for f in frames) <= 320
    assert np.all(np.diff(times) > 0.3)


def test_audio_chunks_are_16k_mono_and_cover_the_clip():
    chunks = list(demux.iter_audio(TALKING, chunk_s=3.0))
    assert all(c.sample_rate_hz == 16000 and c.samples.ndim == 1 for c in chunks)
    assert all(len(c.samples) == 48000 for c in chunks[:-1])
    total = sum(len(c.samples) for c in chunks) / 16000
    assert total == pytest.approx(20.0, abs=0.1)
    whole = np.concatenate([c.samples for c in demux.iter_audio(TALKING, chunk_s=60)])
    np.testing.assert_array_equal(np.concatenate([c.samples for c in chunks]), whole)


def test_still_image_is_one_second_without_audio():
    info = demux.probe(EDGE / "multi_face.jpg")
    assert info.is_still_image and not info.has_audio and info.n_seconds == 1
    assert len(list(demux.iter_frames(info.path, sample_fps=4))) == 1


@needs_ffmpeg
def test_rotation_metadata_is_applied(tmp_path):
    upright = tmp_path / "upright.mp4"
    ffmpeg("-i", str(MEAD / "M030_front_angry_level3_001.mp4"), "-t", "1", "-vf", "pad=320:256:32:0",
           "-c:v", "libx264", "-preset", "ultrafast", "-an", str(upright))
    # store the frames turned a quarter clockwise, and tag them so players turn them back
    sideways = tmp_path / "sideways.mp4"
    ffmpeg("-i", str(upright), "-vf", "transpose=clock", "-c:v", "libx264", "-preset", "ultrafast", str(sideways))
    tagged = tmp_path / "tagged.mp4"
    ffmpeg("-i", str(sideways), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(tagged))
    info = demux.probe(tagged)
    assert info.rotation_deg == 90 and (info.width, info.height) == (320, 256)
    a = next(demux.iter_frames(upright, sample_fps=1)).image.astype(float)
    b = next(demux.iter_frames(tagged, sample_fps=1)).image.astype(float)
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 12          # same picture up to compression


def _write(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.mp4", "no such file"),
    (lambda p: p, "is a directory"),
    (lambda p: _write(p / "empty.mp4", b""), "empty file"),
    (lambda p: _write(p / "notes.mp4", b"this is not a video\n" * 20), "not a readable media file"),
])
def test_bad_inputs_raise_one_line_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(InputError) as err:
        demux.probe(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_prefetched_keeps_order_raises_where_consumed_and_stops_with_its_consumer():
    import threading

    from emotion_pipeline.demux import prefetched

    assert list(prefetched(iter(range(100)), depth=3)) == list(range(100))

    def broken():
        yield 1
        raise ValueError("bad packet")
    got = []
    with pytest.raises(ValueError, match="bad packet"):
        for x in prefetched(broken()):
            got.append(x)
    assert got == [1]

    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.set()
    stream = prefetched(endless(), depth=2)
    assert [next(stream) for _ in range(5)] == [0, 1, 2, 3, 4]
    stream.close()   # the consumer stops early: the producer stops and closes its source
    assert closed.wait(5)
    # a producer that has finished while its box is full does not hold a consumer that stops
    import time
    full = prefetched(iter(range(3)), depth=2)   # all handed over but the end mark
    next(full)
    time.sleep(0.3)
    t = time.perf_counter()
    full.close()
    assert time.perf_counter() - t < 1.0
    assert not any(t.name == "prefetch" and t.is_alive() for t in threading.enumerate())
