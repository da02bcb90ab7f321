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

import json
import os
import sys
from typing import Optional, Sequence

if __name__ == "__main__" and not __package__:
    # `python export/polygraphy_ref.py` puts export/, not the folder holding the packages, first on
    # sys.path: put that folder there instead and run this file as the module export.polygraphy_ref.
    import runpy
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runpy.run_module("export.polygraphy_ref", run_name="__main__", alter_sys=True)
    raise SystemExit(0)   # not reached: the module's own __main__ block exits

import numpy as np  # noqa: E402

from runtime.cli import (add_image_size_args, add_model_arg, add_output_arg, add_seed_arg, cli_main,  # noqa: E402
                         error, make_parser)
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


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    p = make_parser("python -m export.polygraphy_ref", __doc__.split("\n\n")[0], also=("mdqe-polygraphy-ref",))
    add_model_arg(p, required=True)
    add_image_size_args(p, help="input (default: the export size)")
    add_seed_arg(p)
    add_output_arg(p, required=False, help="output folder (default MODEL/polygraphy)")
    a = p.parse_args(argv)
    if (a.height is None) != (a.width is None):
        p.error("--height and --width go together")
    if not os.path.isfile(os.path.join(a.model, "export.json")):
        return error(f"{a.model} holds no export.json")
    for graph, (i, o) in write_reference(a.model, a.height, a.width, a.seed, a.output).items():
        print(f"{graph}: {i} {o}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
