"""Empty frames are null; tracker options are validated (one line, exit 2).

Also the default mask output = the authors' aligned bilinear x4 + crop + NEAREST resize (checked
against the same operations in torch) and its RLE = pycocotools'.
"""
import json
import os

import numpy as np
import pytest

from runtime.backends.fake import FakeBackend, fake_spec
from runtime.infer import main
from runtime.masks import MaskPostprocessor
from runtime.rle import decode_rle
from runtime.pipeline import RunOptions, run_video
from runtime.preprocess import FrameGeometry
from runtime.samples import make_looped_video, sample_video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    d = tmp_path_factory.mktemp("v")
    return make_looped_video(sample_video(), str(d / "v.mp4"), 40, size=(160, 96))


def test_frames_empty_at_original_size_are_null(video, tmp_path):
    """Object C of the fake scene is hidden in frames 20-25 while the clips around them still match it:
    those frames must be null, never an RLE of an empty mask."""
    out = str(tmp_path / "o")
    run_video(video, out, FakeBackend(spec=fake_spec(shorter_side=96, max_size=192)),
              RunOptions(progress=False, overlay=False))
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    nulls = 0
    for r in results:
        for s in r["segmentations"]:
            if s is None:
                nulls += 1
            else:
                assert decode_rle(s).any(), "an empty mask was written as an RLE"
    assert nulls > 0


@pytest.mark.parametrize("args,flag", [
    (["--memory-clips", "0"], "--memory-clips"),
    (["--memory-decay", "nan"], "--memory-decay"),
    (["--beta1", "inf"], "--beta1"),
    (["--score-thr", "nan"], "--score-thr"),
    (["--max-unseen", "-1"], "--max-unseen"),
    (["--max-frames", "0"], "--max-frames"),
    (["--max-tracks", "-1"], "--max-tracks"),
    (["--window-clips", "0"], "--window-clips"),
])
def test_bad_tracker_options_one_line_exit_2(args, flag, video, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    rc = main(["--backend", "fake", "--video", video, "--output", str(out), "--no-progress"] + args)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and flag in err[0] and "Traceback" not in err[0], err
    assert sorted(os.listdir(out)) == ["keep.txt"]


def test_default_masks_are_aligned_bilinear_then_nearest():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    def aligned_bilinear(x, factor):           # the authors' util.misc.aligned_bilinear, as documented
        h, w = x.shape[2:]
        x = F.pad(x, (0, 1, 0, 1), mode="replicate")
        x = F.interpolate(x, size=(factor * h + 1, factor * w + 1), mode="bilinear", align_corners=True)
        x = F.pad(x, (factor // 2, 0, factor // 2, 0), mode="replicate")
        return x[:, :, :factor * h, :factor * w]

    from pycocotools import mask as mask_utils
    rng = np.random.default_rng(0)
    for orig, res, pad in [((90, 160), (90, 160), (96, 160)), ((181, 300), (96, 159), (96, 160)),
                           ((50, 37), (128, 95), (128, 96))]:
        post = MaskPostprocessor(FrameGeometry(orig, res, pad))
        h, w = pad[0] // 4, pad[1] // 4
        for _ in range(3):
            L = (3 * rng.standard_normal((h, w)) - 5).astype(np.float32)
            L[h // 4:h // 2, w // 3:w // 2] += 9
            ref = aligned_bilinear(torch.from_numpy(L)[None, None], 4).sigmoid()[..., :res[0], :res[1]]
            ref = (F.interpolate(ref, size=orig, mode="nearest")[0, 0] > 0.5).numpy()
            got = post(L).astype(bool)
            assert np.array_equal(got, ref)
            rle = post.rle(post.block(L))
            want = mask_utils.encode(np.asfortranarray(ref.astype(np.uint8)))["counts"].decode()
            assert rle["counts"] == want and decode_rle(rle).astype(bool).tolist() == ref.tolist()
    # bilinear (paper preset) differs from nearest on some pixels of an upscaled frame
    g = FrameGeometry((181, 300), (96, 159), (96, 160))
    L = (3 * rng.standard_normal((24, 40))).astype(np.float32)
    assert (MaskPostprocessor(g, 4, "bilinear")(L) != MaskPostprocessor(g)(L)).any()


def test_paper_preset_still_runs(video, tmp_path, capsys):
    """The earlier paper-style post-processing stays available as an option."""
    out = str(tmp_path / "o")
    rc = main(["--backend", "fake", "--video", video, "--output", out, "--no-progress", "--no-overlay",
               "--preset", "paper"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["decoder_clips"] == 40 - 4 + 1 and summary["tracks"] == 4
