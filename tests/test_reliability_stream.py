"""Network streams as video sources, with a bounded reconnect and the results of
the frames so far kept when a stream drops for good.

The streams come from an HTTP server started by each test on 127.0.0.1 (a thread of the test
process): an AVI file served as a file, and a live MJPEG stream (multipart/x-mixed-replace, what
many IP cameras serve) whose frame counter continues across connections like a camera's.
"""
import http.server
import json
import os
import threading

import cv2
import numpy as np
import pytest

from runtime.infer import main
from runtime.video import FrameSource, is_stream_url
from reliability_utils import make_video


class _Server:
    """ThreadingHTTPServer on 127.0.0.1:<free port>. ``/file.avi`` serves a file; ``/cam.mjpg`` a live
    MJPEG stream: each connection sends frames from a shared counter and drops after ``per_connection``
    frames; after ``connections`` connections the camera is gone (404)."""

    def __init__(self, avi_path=None, per_connection=10, connections=1, total=None):
        self.avi = open(avi_path, "rb").read() if avi_path else b""
        self.per_connection, self.connections, self.total = per_connection, connections, total
        self.counter = 0
        self.served = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path == "/file.avi":
                    self.send_response(200)
                    self.send_header("Content-Type", "video/x-msvideo")
                    self.send_header("Content-Length", str(len(outer.avi)))
                    self.end_headers()
                    self.wfile.write(outer.avi)
                    return
                with outer.lock:
                    allowed = outer.served < outer.connections
                    outer.served += 1
                if self.path != "/cam.mjpg" or not allowed:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for _ in range(outer.per_connection):
                        with outer.lock:
                            i = outer.counter
                            outer.counter += 1
                        if outer.total is not None and i >= outer.total:
                            return
                        img = np.full((64, 64, 3), 30, np.uint8)
                        img[8:20, (2 * i) % 50:(2 * i) % 50 + 12] = (40, 220, 60)
                        jpg = cv2.imencode(".jpg", img)[1].tobytes()
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                                         + jpg + b"\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                # returning closes the connection: the stream drops

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _run(url, out, *extra):
    return main(["--backend", "fake", "--video", url, "--output", str(out), "--no-progress",
                 "--reconnect-delays", "0.05,0.05", *extra])


def test_urls_are_streams():
    assert is_stream_url("rtsp://cam/1") and is_stream_url("http://x/y.mjpg") and is_stream_url("https://x")
    assert not is_stream_url("video.mp4") and not is_stream_url("0") and not is_stream_url("file:///a.mp4")


def test_video_file_over_http(tmp_path, capsys):
    avi = make_video(str(tmp_path / "v.avi"), 20)
    with _Server(avi_path=avi) as srv:
        rc = _run(srv.url("/file.avi"), tmp_path / "out")
    assert rc == 0, capsys.readouterr().err
    t = json.load(open(tmp_path / "out" / "timing.json"))
    assert t["frames"] == 20 and not t["stopped_early"] and t["reconnects"] == 0
    assert json.load(open(tmp_path / "out" / "results.json"))


def test_stream_drop_then_reconnect(tmp_path, capsys):
    """The camera drops after 10 frames and comes back: the run reconnects and continues."""
    with _Server(per_connection=10, connections=3) as srv:
        rc = _run(srv.url("/cam.mjpg"), tmp_path / "out", "--max-frames", "16")
    assert rc == 0, capsys.readouterr().err
    t = json.load(open(tmp_path / "out" / "timing.json"))
    assert t["frames"] == 16 and t["reconnects"] == 1 and not t["stopped_early"]


def test_stream_lost_mid_run_keeps_results(tmp_path, capsys):
    """The camera drops after 9 frames and never comes back: after the bounded reconnects the run
    writes the results of the 9 frames, says why it stopped, and exits 4."""
    with _Server(per_connection=9, connections=1) as srv:
        rc = _run(srv.url("/cam.mjpg"), tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 4, err
    assert "stopped early" in err and "dropped after 9 frames" in err
    t = json.load(open(tmp_path / "out" / "timing.json"))
    assert t["frames"] == 9 and t["stopped_early"] and "could not be reopened (2 attempts)" in t["stop_reason"]
    res = json.load(open(tmp_path / "out" / "results.json"))
    assert res and all(len(r["segmentations"]) == 9 for r in res)
    assert os.path.isfile(tmp_path / "out" / "overlay.mp4")
    assert not [n for n in os.listdir(tmp_path / "out") if n.startswith(".")]


def test_unreachable_stream_is_a_clean_error(tmp_path, capsys):
    with _Server(connections=0) as srv:
        url = srv.url("/cam.mjpg")
        rc = _run(url, tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: cannot open stream http://127.0.0.1"), err


def test_frame_source_reconnect_is_bounded():
    """FrameSource alone: delays are honoured (one attempt each), then stop_reason is set."""
    with _Server(per_connection=3, connections=1) as srv:
        src = FrameSource(srv.url("/cam.mjpg"), reconnect_delays=(0.01, 0.01, 0.01))
        frames = list(src)
        assert len(frames) == 3 and src.kind == "stream" and src.frame_count is None
        assert src.stop_reason and "3 attempts" in src.stop_reason and srv.served == 4
