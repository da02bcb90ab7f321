"""End-to-end runtime pipeline with the fake backend (synthetic decoder outputs) on real video frames."""
import glob
import json
import os

import cv2
import numpy as np
import pytest

from runtime.backends import create_backend
from runtime.backends.fake import FakeBackend
from runtime.errors import VideoError
from runtime.infer import main
from runtime.rle import decode_rle
from runtime.pipeline import RunOptions, run_video
from runtime.samples import sample_video

BIKES = sample_video("bikes.mp4")


def count_frames(path):
    cap = cv2.VideoCapture(path)
    n = 0
    while True:
        ok, f = cap.read()
        if not ok:
            break
        assert f.shape == (272, 640, 3)
        n += 1
    cap.release()
    return n


def check_outputs(out, n_frames, size=(272, 640)):
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert results, "no results"
    for r in results:
        assert set(r) >= {"video_id", "category_id", "score", "segmentations"}
        assert len(r["segmentations"]) == n_frames
        assert 1 <= r["category_id"] <= 5 and 0 <= r["score"] <= 1
        segs = [s for s in r["segmentations"] if s is not None]
        assert segs
        for s in segs[:3]:
            assert s["size"] == list(size) and isinstance(s["counts"], str)
            assert decode_rle(s).shape == size
    with open(os.path.join(out, "timing.json")) as f:
        timing = json.load(f)
    assert timing["frames"] == timing["encoder_frames"] == n_frames
    assert timing["original_size"] == list(size)
    assert set(timing["stages"]) == {"decode", "preprocess", "encoder", "decoder", "tracker", "postprocess", "write"}
    assert count_frames(os.path.join(out, "overlay.mp4")) == n_frames
    leftovers = [p for p in os.listdir(out) if p.startswith(".")]
    assert not leftovers, f"temporary files left: {leftovers}"
    return results, timing


def test_fake_backend_on_bikes(tmp_path):
    out = str(tmp_path / "out")
    timing = run_video(BIKES, out, create_backend("fake", None),
                       RunOptions(max_frames=30, progress=False, save_pngs=True))
    results, t = check_outputs(out, 30)
    # clips 0..26 plus the authors' truncated last clip of T-1 frames
    assert t == timing and t["decoder_clips"] == 30 - 4 + 2 and not t["padded_clip"]
    assert t["input_size"] == [192, 384] and t["resized_size"] == [163, 384]
    # the four synthetic objects become four tracks; results keep >= 10 (track, class) pairs
    assert t["tracks"] == 4 and len(results) == 10
    assert {r["track_id"] for r in results[:4]} == {1, 2, 3, 4}
    pngs = glob.glob(str(tmp_path / "out" / "masks" / "track_*" / "*.png"))
    assert pngs and t["png_files"] == len(pngs)
    m = cv2.imread(pngs[0], cv2.IMREAD_GRAYSCALE)
    assert m.shape == (272, 640) and set(np.unique(m)) <= {0, 255}


@pytest.mark.parametrize("n", [1, 3, 4, 5])
def test_videos_shorter_than_or_equal_to_T(tmp_path, n):
    out = str(tmp_path / "out")
    t = run_video(BIKES, out, FakeBackend(), RunOptions(max_frames=n, progress=False))
    check_outputs(out, n)
    assert t["encoder_frames"] == n                       # the padded clip re-uses features, no extra encoding
    assert t["padded_clip"] == (n < 4) and t["decoder_clips"] == (1 if n < 4 else n - 2)


def test_folder_of_frames_and_cli(tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    cap = cv2.VideoCapture(BIKES)
    for i in range(6):
        ok, f = cap.read()
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), f)
    cap.release()
    out = str(tmp_path / "out")
    rc = main(["--backend", "fake", "--video", str(folder), "--output", out, "--no-progress", "--score-thr", "0.2"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["frames"] == summary["encoder_frames"] == 6
    check_outputs(out, 6)


def test_outputs_stream_as_frames_complete(tmp_path):
    """When clip c is decoded, frames < c are already final and spooled (frame c-1 included)."""
    out = tmp_path / "out"
    seen = []

    class Probe(FakeBackend):
        def decode(self, feats):
            frames = []
            for p in glob.glob(str(out / ".spool-*" / "track_*.txt")):
                with open(p) as f:
                    frames += [int(line.split("\t")[0]) for line in f]
            seen.append(max(frames) if frames else -1)
            return super().decode(feats)

    run_video(BIKES, str(out), Probe(), RunOptions(max_frames=12, progress=False, overlay=False))
    assert seen == list(range(-1, 9))   # clip c sees frames 0..c-1 written (clip 9: the truncated last one)


def test_error_mid_run_leaves_no_partial_outputs(tmp_path):
    class Broken(FakeBackend):
        def decode(self, feats):
            if int(feats["memory"][0, 0, 0]) == 3:
                raise RuntimeError("boom")
            return super().decode(feats)

    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        run_video(BIKES, str(out), Broken(), RunOptions(max_frames=10, progress=False))
    assert os.listdir(out) == []


def test_missing_and_corrupt_video(tmp_path, capsys):
    with pytest.raises(VideoError, match="not found"):
        run_video(str(tmp_path / "nope.mp4"), str(tmp_path / "o"), FakeBackend())
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(VideoError, match="corrupt"):
        run_video(str(bad), str(tmp_path / "o"), FakeBackend())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        run_video(str(empty), str(tmp_path / "o"), FakeBackend())
    (tmp_path / "nofr").mkdir()
    with pytest.raises(VideoError, match="no image files"):
        run_video(str(tmp_path / "nofr"), str(tmp_path / "o"), FakeBackend())
    with pytest.raises(VideoError, match="cannot open camera 97"):
        run_video("97", str(tmp_path / "o"), FakeBackend())          # no such camera index
    assert main(["--backend", "fake", "--video", str(bad), "--output", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "error: cannot open video" in err and "corrupt" in err
    assert main(["--video", BIKES, "--output", str(tmp_path / "o3")]) == 2
    assert "--model DIR is required" in capsys.readouterr().err


def test_ctrl_c_finishes_outputs_for_frames_so_far(tmp_path):
    """First SIGINT (e.g. stopping a camera) stops reading and still writes valid outputs."""
    import signal

    class Stop(FakeBackend):
        def decode(self, feats):
            if int(feats["memory"][0, 0, 0]) == 5:
                os.kill(os.getpid(), signal.SIGINT)
            return super().decode(feats)

    out = str(tmp_path / "out")
    before = signal.getsignal(signal.SIGINT)
    t = run_video(BIKES, out, Stop(), RunOptions(max_frames=40, progress=False))
    assert signal.getsignal(signal.SIGINT) is before
    assert t["interrupted"] and t["frames"] == 9            # clip 5 ends at frame 8
    check_outputs(out, 9)
