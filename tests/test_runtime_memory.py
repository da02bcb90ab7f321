"""Bounded memory: peak traced memory for a 300-frame video is within 1.2x of a 30-frame video.

Fake backend (synthetic decoder outputs, 4 tracks) on bikes.mp4 frames looped to 300 frames and
resized to 320x136 to keep the test short; tracemalloc counts Python and numpy allocations of
the whole pipeline (decode, preprocess, ring buffers, tracker, postprocess, RLE spool, overlay).
docs/runtime.md has the measurement with the exported tiny model and ONNX Runtime.
"""
import tracemalloc

from runtime.backends.fake import FakeBackend, fake_spec
from runtime.pipeline import RunOptions, run_video
from runtime.samples import make_looped_video, sample_video


def peak_bytes(video, out):
    backend = FakeBackend(spec=fake_spec(shorter_side=96, max_size=192))
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        timing = run_video(video, out, backend, RunOptions(progress=False))
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, timing


def test_peak_memory_300_vs_30_frames(tmp_path):
    peaks = {}
    for n in (30, 300):
        video = make_looped_video(sample_video(), str(tmp_path / f"v{n}.mp4"), n, size=(320, 136))
        peaks[n], timing = peak_bytes(video, str(tmp_path / f"out{n}"))
        assert timing["frames"] == timing["encoder_frames"] == n and timing["tracks"] >= 4
    ratio = peaks[300] / peaks[30]
    print(f"peak traced memory: 30 frames {peaks[30] / 1e6:.2f} MB, 300 frames {peaks[300] / 1e6:.2f} MB, "
          f"ratio {ratio:.3f}")
    assert peaks[30] > 100_000              # the measurement sees the pipeline's arrays at all
    assert ratio <= 1.2, peaks
