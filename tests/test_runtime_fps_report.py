"""benchmarks/fps.py writes the Markdown/JSON/PNG report (fake backend, a few frames)."""
import json
import os

from benchmarks.fps import main


def test_fps_report_files(tmp_path):
    out = str(tmp_path / "rep")
    assert main(["--backend", "fake", "--max-frames", "10", "--warmup-frames", "2", "--no-progress", "--output", out]) == 0
    rep = json.load(open(os.path.join(out, "fps_report.json")))
    assert rep["timing"]["frames"] == rep["timing"]["encoder_frames"] == 10
    assert rep["paper"]["fps"] == 37.8 and rep["fps"] > 0
    assert rep["outputs"]["ok"] and rep["outputs"]["overlay_frames_decoded"] == 10
    assert [r["stage"] for r in rep["stages"]] == ["decode", "preprocess", "encoder", "decoder", "tracker",
                                                   "postprocess", "write"]
    md = open(os.path.join(out, "fps_report.md")).read()
    assert "37.8 FPS" in md and "| decoder |" in md and "input resolution 384x192" in md
    with open(os.path.join(out, "fps_report.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(out)) == ["fps_report.json", "fps_report.md", "fps_report.png"]
