#!/usr/bin/env python
"""Write polygraphy reference files for an exported model directory of any MSDeformAttn form: seeded
inputs and the ONNX Runtime outputs of both graphs (plugin and trt-builtin nodes run with our CPU
kernel, see runtime/native/ort_ops.py). Torch-free. Then, on the GPU machine:

    polygraphy run DIR/encoder.onnx --trt --plugins libmdqe_trt_plugin.so \\
        --load-inputs DIR/polygraphy/encoder_inputs.json \\
        --load-outputs DIR/polygraphy/encoder_ort_outputs.json --atol 1e-2 --rtol 1e-2

(`--plugins` for the plugin form only; `python export/build_engines.py --model DIR --print-only`
prints the exact lines for the directory's form.) The decoder's
inputs are the encoder's ONNX Runtime outputs, so spatial_shapes / level_start_index hold valid
values (random ones would not).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from runtime.contract import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_OUTPUTS, VALID_HW  # noqa: E402


def write_reference(model_dir: str, height: Optional[int] = None, width: Optional[int] = None, seed: int = 0,
                    out_dir: Optional[str] = None) -> dict:
    from polygraphy.comparator import IterationResult, RunResults
    from polygraphy.json import save_json

    from runtime.native.ort_ops import create_session

    with open(os.path.join(model_dir, "export.json"), encoding="utf-8") as f:
        meta = json.load(f)
    h, w = (height, width) if height else tuple(meta["export_size"])
    T = int(meta["num_frames"])
    out_dir = out_dir or os.path.join(model_dir, "polygraphy")
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((T, 3, h, w), dtype=np.float32)
    # padded frames (valid 15/16 of each side, e.g. 360x600 of 384x640), zeros in the padded area
    valid_hw = np.tile(np.array([[h - h // 16, w - w // 16]], np.int64), (T, 1))
    images[:, :, valid_hw[0, 0]:, :] = 0
    images[:, :, :, valid_hw[0, 1]:] = 0
    enc_in = {"images": images, VALID_HW: valid_hw}
    enc = create_session(os.path.join(model_dir, meta["encoder"]["file"]))
    enc_out = dict(zip(ENCODER_OUTPUTS, enc.run(list(ENCODER_OUTPUTS), enc_in)))
    enc_out[VALID_HW] = valid_hw
    dec = create_session(os.path.join(model_dir, meta["decoder"]["file"]))
    dec_in = {k: enc_out[k] for k in DECODER_INPUTS}
    dec_out = dict(zip(DECODER_OUTPUTS, dec.run(list(DECODER_OUTPUTS), dec_in)))
    enc_out.pop(VALID_HW)
    files = {}
    for graph, feeds, outs in (("encoder", enc_in, enc_out), ("decoder", dec_in, dec_out)):
        pin = os.path.join(out_dir, f"{graph}_inputs.json")
        pout = os.path.join(out_dir, f"{graph}_ort_outputs.json")
        save_json([feeds], pin, description=f"{graph} inputs")
        RunResults([("onnxruntime-mdqe", [IterationResult(outputs=outs, runner_name="onnxruntime-mdqe")])]).save(pout)
        files[graph] = (pin, pout)
    return files


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python export/polygraphy_ref.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="directory written by export/to_onnx.py")
    p.add_argument("--height", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="output folder (default MODEL/polygraphy)")
    a = p.parse_args(argv)
    if (a.height is None) != (a.width is None):
        p.error("--height and --width go together")
    if not os.path.isfile(os.path.join(a.model, "export.json")):
        print(f"error: {a.model} holds no export.json", file=sys.stderr)
        return 2
    for graph, (i, o) in write_reference(a.model, a.height, a.width, a.seed, a.out).items():
        print(f"{graph}: {i} {o}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
