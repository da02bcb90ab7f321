"""Helpers of the reliability tests (bad inputs, damaged files, failing stages): small model directories whose graphs are built with
onnx.helper (constant outputs, < 0.1 s, run by ONNX Runtime), small videos, and a CLI runner that
checks the error contract (exit code, one line naming the problem, no traceback, outputs untouched).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from typing import Dict, Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

# A model whose graphs take a 64x64 input (video 64x64, shorter_side = max_size = 64).
T, Q, C, E, HID, DM = 4, 8, 3, 4, 8, 4
SIZE = 64
LEVELS = [(8, 8)]            # one level at stride 8
S = sum(h * w for h, w in LEVELS)


def export_json(**over) -> dict:
    meta = {
        "format_version": 2, "model_name": "const", "num_frames": T, "num_queries": Q, "num_classes": C,
        "class_names": [f"c{i}" for i in range(C)], "embed_dim": E, "mask_dim": DM, "hidden_dim": HID,
        "num_levels": len(LEVELS), "mask_stride": 4,
        "preprocess": {"color": "RGB", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "shorter_side": SIZE,
                       "max_size": SIZE, "size_divisibility": 32},
        "export_size": [SIZE, SIZE],
        "encoder": {"file": "encoder.onnx", "inputs": {"images": ["N", 3, "H", "W"], "valid_hw": ["N", 2]},
                    "outputs": {"memory": ["N", "S", HID], "spatial_shapes": [len(LEVELS), 2],
                                "level_start_index": [len(LEVELS)], "mask_features": ["N", DM, "h", "w"],
                                "query_feat": ["N", Q, HID], "query_points": ["N", Q, 2], "query_embed": ["N", Q, E]}},
        "decoder": {"file": "decoder.onnx",
                    "inputs": {"memory": [T, "S", HID], "spatial_shapes": [len(LEVELS), 2],
                               "level_start_index": [len(LEVELS)], "mask_features": [T, DM, "h", "w"],
                               "query_feat": [T, Q, HID], "query_points": [T, Q, 2], "query_embed": [T, Q, E],
                               "valid_hw": [T, 2]},
                    "outputs": {"pred_logits": [Q, C], "pred_boxes": [Q, T, 4], "pred_masks": [Q, T, "h", "w"],
                                "pred_embeds": [Q, E], "pred_queries": [Q, HID]}},
        "msda": "onnx", "dtype": "fp32", "weights": {"source": "random", "seed": 0}, "config": {},
    }
    for k, v in over.items():
        meta[k] = v
    return meta


def _const_graph(name, inputs: Dict[str, tuple], outputs: Dict[str, np.ndarray], declared: Dict[str, list]):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def ttype(a):
        return TensorProto.INT64 if np.asarray(a).dtype == np.int64 else TensorProto.FLOAT

    nodes = [helper.make_node("Constant", [], [k], value=numpy_helper.from_array(np.asarray(v), k + "_value"))
             for k, v in outputs.items()]
    ins = [helper.make_tensor_value_info(k, dt, list(shape)) for k, (dt, shape) in inputs.items()]
    outs = [helper.make_tensor_value_info(k, ttype(v), declared.get(k, list(np.shape(v)))) for k, v in outputs.items()]
    graph = helper.make_graph(nodes, name, ins, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def make_model_dir(path: str, meta: Optional[dict] = None, graph_classes: int = C, graph_frames: int = T,
                   nan_in: Optional[str] = None) -> str:
    """Write encoder.onnx / decoder.onnx (constant outputs for a 64x64 input) and export.json to ``path``.
    ``graph_classes`` / ``graph_frames``: what the graphs really hold (to disagree with export.json);
    ``nan_in``: an output name whose values are NaN (a broken model)."""
    import onnx
    from onnx import TensorProto

    os.makedirs(path, exist_ok=True)
    h = w = SIZE // 4
    rng = np.random.RandomState(0)
    f = TensorProto.FLOAT
    i64 = TensorProto.INT64
    enc_out = {
        "memory": rng.randn(1, S, HID).astype(np.float32),
        "spatial_shapes": np.array(LEVELS, np.int64),
        "level_start_index": np.array([0], np.int64),
        "mask_features": rng.randn(1, DM, h, w).astype(np.float32),
        "query_feat": rng.randn(1, Q, HID).astype(np.float32),
        "query_points": rng.rand(1, Q, 2).astype(np.float32),
        "query_embed": rng.randn(1, Q, E).astype(np.float32),
    }
    masks = np.full((Q, graph_frames, h, w), -5.0, np.float32)
    for q in range(Q):                                    # each query: a square somewhere
        y, x = (q * 3) % (h - 4), (q * 5) % (w - 4)
        masks[q, :, y:y + 4, x:x + 4] = 5.0
    logits = np.full((Q, graph_classes), -4.0, np.float32)
    logits[: graph_classes, :] += 6.0 * np.eye(graph_classes, dtype=np.float32)[: min(Q, graph_classes)]
    dec_out = {
        "pred_logits": logits,
        "pred_boxes": np.full((Q, graph_frames, 4), 0.5, np.float32),
        "pred_masks": masks,
        "pred_embeds": np.tile(np.eye(Q, E, dtype=np.float32), (1, 1)),
        "pred_queries": np.tile(np.eye(Q, HID, dtype=np.float32), (1, 1)),
    }
    for d in (enc_out, dec_out):
        if nan_in in d:
            d[nan_in] = np.full_like(d[nan_in], np.nan)
    enc = _const_graph("encoder", {"images": (f, ["N", 3, "H", "W"]), "valid_hw": (i64, ["N", 2])}, enc_out,
                       {"memory": ["N", "S", HID], "mask_features": ["N", DM, "h", "w"],
                        "query_feat": ["N", Q, HID], "query_points": ["N", Q, 2], "query_embed": ["N", Q, E]})
    dec_in = {"memory": (f, [graph_frames, "S", HID]), "spatial_shapes": (i64, [len(LEVELS), 2]),
              "level_start_index": (i64, [len(LEVELS)]), "mask_features": (f, [graph_frames, DM, "h", "w"]),
              "query_feat": (f, [graph_frames, Q, HID]), "query_points": (f, [graph_frames, Q, 2]),
              "query_embed": (f, [graph_frames, Q, E]), "valid_hw": (i64, [graph_frames, 2])}
    dec = _const_graph("decoder", dec_in, dec_out, {"pred_masks": [Q, graph_frames, "h", "w"]})
    onnx.save(enc, os.path.join(path, "encoder.onnx"))
    onnx.save(dec, os.path.join(path, "decoder.onnx"))
    with open(os.path.join(path, "export.json"), "w") as fh:
        json.dump(meta if meta is not None else export_json(), fh)
    return path


def make_video(path: str, frames: int, size=(SIZE, SIZE), fourcc: str = "MJPG", fps: float = 10.0) -> str:
    """A small video of moving squares (MJPG in AVI by default: every frame decodes on its own)."""
    import cv2
    h, w = size
    wr = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert wr.isOpened(), path
    for i in range(frames):
        img = np.full((h, w, 3), 40, np.uint8)
        x = (i * 2) % max(1, w - 12)
        img[h // 4: h // 4 + 12, x: x + 12] = (30, 200, 90)
        wr.write(img)
    wr.release()
    return path


def snapshot(folder: str) -> Dict[str, str]:
    """{relative path: sha256} of every file under ``folder`` (to prove nothing was changed)."""
    out = {}
    for root, _dirs, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def run_cli(args: Sequence[str], timeout: float = 120, env: Optional[dict] = None) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    if env:
        e.update(env)
    return subprocess.run([PY] + list(args), cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=e)


def assert_clean_error(r: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Exit ``code``, no traceback, and one ``error: ...`` line containing every needle (case-insensitive)."""
    err = r.stderr
    assert r.returncode == code, f"exit {r.returncode} != {code}\nstdout: {r.stdout[-1500:]}\nstderr: {err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, f"expected one 'error:' line, got {lines!r}\nstderr: {err[-2000:]}"
    for n in needles:
        assert n.lower() in lines[0].lower(), f"{n!r} not in {lines[0]!r}"
    return lines[0]
