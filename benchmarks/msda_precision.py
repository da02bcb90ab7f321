"""MSDeformAttn precision study: which fp16 path to pick.

    python -m benchmarks.msda_precision [--e2e-size 192x352] [--no-e2e] [--report benchmarks/results/msda_precision.json]

Part 1, the op on the shapes of MDQE R50 at 360p (input 360x640 padded to 384x640; levels 48x80,
24x40, 12x20, 6x10, S=5100; M=8 heads, D=32, P=4 points) with trained-like inputs, against an
fp64 reference (numpy, float64 throughout):

- ``ours fp32``: our CPU kernel (runtime/native libmdqe_msda.so; the CUDA kernel runs the same
  msda_core.h math);
- ``ours fp16``: our CUDA kernel's fp16 path, emulated step by step on the CPU: value, locations
  and weights stored in half; coordinates, bilinear weights and the running sum in fp32, in the
  kernel's order (levels, points, corners), with the fused multiply-adds nvcc emits
  (``loc*W - 0.5`` and ``acc += w*v`` rounded once); output rounded to half
  (trt_plugins/include/mdqe_msda/msda_core.h, trt_plugins/src/msda_cuda.cu);
- ``NVIDIA fp16``: TensorRT's MultiscaleDeformableAttnPlugin_TRT fp16 kernel
  (plugin/multiscaleDeformableAttnPlugin/multiscaleDeformableIm2ColCuda.cuh, __CUDA_ARCH__ >= 530
  branch), emulated with numpy float16 one operation at a time: ``h = loc_y*H - 0.5`` in half
  (__hmul then __hsub), the inside test in half, ``lh = h - floor(h)``, ``hh = 1 - lh``, corner
  products ``(hh*hw)*v``, the pair sums ``(w1+w2)+(w3+w4)``, then ``col = col + val*weight`` -
  every step rounded to half (each intrinsic rounded separately, no contraction assumed).

Cases: encoder self-attention (N=1, Lq=S, reference points = the tokens' own pixel centres);
decoder cross-attention (N=T=4 frames, Lq=196 queries, reference points = box centres in
[0.05, 0.95]); TCA (one 48x80 level seen as T=4 levels, Lq=196). Sampling offsets: Deformable
DETR's initial ring (head m points along angle 2*pi*m/M, point i at distance i+1 pixels, on the
square) scaled per sample by a log-normal factor and jittered by N(0, 1.5) pixels (decoder: x4, as
box-relative offsets spread wider); attention weights = softmax over the L*P samples of N(0, 1.5^2)
logits; value = N(0, 1) scaled per channel by a log-normal factor (sd 0.5). Seeded.

Part 2, end to end: the R50 model (``r50_ytvis21`` config, RANDOM weights, seed 0 - no trained
R50 checkpoint is shipped) on T=4 normal(0,1) frames at ``--e2e-size``; every MSDeformAttn call
(encoder and decoder) runs one variant while the rest of the model stays PyTorch fp32; the decoder
outputs are compared with the run whose MSDeformAttn is the fp64 reference: class scores
(sigmoid of pred_logits), boxes, mask logits (max abs difference; mask pixels whose sign flips).
"""
from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np

from runtime.cli import add_report_arg, add_seed_arg, add_threads_arg, cli_main, make_parser, parse_hw

LEVELS = [(48, 80), (24, 40), (12, 20), (6, 10)]
M, D, P, T, QUERIES = 8, 32, 4, 4, 196
F16, F32, F64 = np.float16, np.float32, np.float64


# ----------------------------------------------------------------------------------------------
# the variants (value [N,S,M,D], shapes [L,2], starts [L], loc [N,Lq,M,L,P,2], attn [N,Lq,M,L,P])
# ----------------------------------------------------------------------------------------------
def _gather(v_level, W, yi, xi):
    """v_level [N, H*W, M, D]; yi, xi [N, Lq, M] (in range) -> [N, Lq, M, D]."""
    N, _, Mh, _ = v_level.shape
    n = np.arange(N)[:, None, None]
    m = np.arange(Mh)[None, None, :]
    return v_level[n, yi * W + xi, m]


def msda_fp64(value, shapes, starts, loc, attn):
    """Exact reference: float64 throughout. Returns [N, Lq, M, D] float64."""
    value, loc, attn = value.astype(F64), loc.astype(F64), attn.astype(F64)
    N, _, Mh, Dh = value.shape
    Lq, L, Pn = loc.shape[1], loc.shape[3], loc.shape[4]
    out = np.zeros((N, Lq, Mh, Dh), F64)
    for lvl in range(L):
        H, W = int(shapes[lvl, 0]), int(shapes[lvl, 1])
        vl = value[:, int(starts[lvl]):int(starts[lvl]) + H * W]
        for p in range(Pn):
            x = loc[:, :, :, lvl, p, 0] * W - 0.5
            y = loc[:, :, :, lvl, p, 1] * H - 0.5
            inside = (x > -1) & (y > -1) & (x < W) & (y < H)
            x0 = np.where(inside, np.floor(x), 0).astype(np.int64)
            y0 = np.where(inside, np.floor(y), 0).astype(np.int64)
            fx, fy = x - x0, y - y0
            a = attn[:, :, :, lvl, p]
            for dy, dx, cw in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)),
                               (1, 1, fy * fx)):
                xi, yi = x0 + dx, y0 + dy
                ok = inside & (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
                g = _gather(vl, W, np.clip(yi, 0, H - 1), np.clip(xi, 0, W - 1))
                out += np.where(ok, a * cw, 0.0)[..., None] * g
    return out


def _fma32(a, b, c):
    """fp32 fused multiply-add a*b + c rounded once (a*b of two floats is exact in float64)."""
    return (a.astype(F64) * b.astype(F64) + c.astype(F64)).astype(F32)


def msda_ours_fp16(value, shapes, starts, loc, attn, half_locations=True):
    """Our CUDA kernel's fp16 path: half storage, fp32 math and accumulation (msda_core.h).
    `half_locations=False`: locations kept in fp32 (not a shipped path: the plugin takes them in
    value's type; measured to show what the half locations cost). Returns [N, Lq, M, D] float16."""
    v = value.astype(F16).astype(F32)
    lc = loc.astype(F16).astype(F32) if half_locations else loc.astype(F32)
    aw = attn.astype(F16).astype(F32)
    N, _, Mh, Dh = v.shape
    Lq, L, Pn = lc.shape[1], lc.shape[3], lc.shape[4]
    acc = np.zeros((N, Lq, Mh, Dh), F32)
    for lvl in range(L):
        H, W = int(shapes[lvl, 0]), int(shapes[lvl, 1])
        vl = v[:, int(starts[lvl]):int(starts[lvl]) + H * W]
        for p in range(Pn):
            x = _fma32(lc[:, :, :, lvl, p, 0], F32(W), F32(-0.5))       # loc_x * W - 0.5 (fused)
            y = _fma32(lc[:, :, :, lvl, p, 1], F32(H), F32(-0.5))
            inside = (x > -1) & (y > -1) & (x < W) & (y < H)
            x0 = np.where(inside, np.floor(x), 0).astype(np.int64)
            y0 = np.where(inside, np.floor(y), 0).astype(np.int64)
            fx = (x - x0.astype(F32)).astype(F32)
            fy = (y - y0.astype(F32)).astype(F32)
            gx, gy = (F32(1) - fx).astype(F32), (F32(1) - fy).astype(F32)
            a = aw[:, :, :, lvl, p]
            for dy, dx, cw in ((0, 0, gy * gx), (0, 1, gy * fx), (1, 0, fy * gx), (1, 1, fy * fx)):
                xi, yi = x0 + dx, y0 + dy
                ok = inside & (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
                w = np.where(ok, (a * cw.astype(F32)).astype(F32), F32(0))    # attn * corner weight
                g = _gather(vl, W, np.clip(yi, 0, H - 1), np.clip(xi, 0, W - 1))
                acc = _fma32(w[..., None], g, acc)                             # acc += w * v (fused)
    return acc.astype(F16)


def msda_nvidia_fp16(value, shapes, starts, loc, attn):
    """TensorRT's MultiscaleDeformableAttnPlugin_TRT fp16 arithmetic (half coordinates, half weights,
    half running sum), one numpy float16 operation per CUDA half intrinsic. Returns float16."""
    v = value.astype(F16)
    lc = loc.astype(F16)
    aw = attn.astype(F16)
    N, _, Mh, Dh = v.shape
    Lq, L, Pn = lc.shape[1], lc.shape[3], lc.shape[4]
    col = np.zeros((N, Lq, Mh, Dh), F16)
    half, one, minus_one = F16(0.5), F16(1), F16(-1)
    for lvl in range(L):
        H, W = int(shapes[lvl, 0]), int(shapes[lvl, 1])
        Hh, Wh = F16(H), F16(W)                                   # __int2half_rd (exact here)
        vl = v[:, int(starts[lvl]):int(starts[lvl]) + H * W]
        for p in range(Pn):
            locW, locH, weight = lc[:, :, :, lvl, p, 0], lc[:, :, :, lvl, p, 1], aw[:, :, :, lvl, p]
            hIm = (locH * Hh) - half                              # __hsub(__hmul(locH, H), 0.5)
            wIm = (locW * Wh) - half
            inside = (hIm > minus_one) & (wIm > minus_one) & (hIm < Hh) & (wIm < Wh)
            hIm = np.where(inside, hIm, F16(0))                   # outside points are skipped: keep them finite
            wIm = np.where(inside, wIm, F16(0))
            hLow = np.floor(hIm).astype(np.int64)                 # __half2int_rd
            wLow = np.floor(wIm).astype(np.int64)
            lh = hIm - hLow.astype(F16)                           # __hsub(h, __int2half_rd(hLow))
            lw = wIm - wLow.astype(F16)
            hh, hw = one - lh, one - lw
            hHigh, wHigh = hLow + 1, wLow + 1

            def corner(yi, xi, ok):
                g = _gather(vl, W, np.clip(yi, 0, H - 1), np.clip(xi, 0, W - 1))
                return np.where(ok[..., None], g, F16(0))
            v1 = corner(hLow, wLow, (hLow >= 0) & (wLow >= 0))
            v2 = corner(hLow, wHigh, (hLow >= 0) & (wHigh <= W - 1))
            v3 = corner(hHigh, wLow, (hHigh <= H - 1) & (wLow >= 0))
            v4 = corner(hHigh, wHigh, (hHigh <= H - 1) & (wHigh <= W - 1))
            w1 = (hh * hw)[..., None] * v1                        # __hmul(__hmul(hh, hw), v1)
            w2 = (hh * lw)[..., None] * v2
            w3 = (lh * hw)[..., None] * v3
            w4 = (lh * lw)[..., None] * v4
            w1 = w1 + w2                                          # __hadd
            w3 = w3 + w4
            val = w1 + w3
            col = np.where(inside[..., None], col + val * weight[..., None], col)  # __hadd(col, __hmul(val, w))
    return col


def msda_ours_fp32(value, shapes, starts, loc, attn):
    """Our CPU kernel (fp32). Returns [N, Lq, M, D] float32."""
    from runtime.native import msda
    N, _, Mh, Dh = value.shape
    out = msda.ms_deform_attn_cpu(value.astype(F32), shapes.astype(np.int64), starts.astype(np.int64),
                                  loc.astype(F32), attn.astype(F32))
    return out.reshape(N, loc.shape[1], Mh, Dh)


VARIANTS = {"ours fp32": msda_ours_fp32, "ours fp16": msda_ours_fp16, "NVIDIA fp16": msda_nvidia_fp16}
# op level only: what the half *locations* cost (fp16 value and weights, fp32 locations and math)
OP_EXTRA = {"fp16, fp32 locations": lambda *a: msda_ours_fp16(*a, half_locations=False)}


# ----------------------------------------------------------------------------------------------
# trained-like inputs
# ----------------------------------------------------------------------------------------------
def _ring():
    """Deformable DETR's initial offsets in pixels: [M, P, 2]."""
    theta = 2 * np.pi * np.arange(M) / M
    d = np.stack([np.cos(theta), np.sin(theta)], -1)
    d = d / np.abs(d).max(-1, keepdims=True)
    return d[:, None, :] * (np.arange(P) + 1)[None, :, None]


def make_case(rng, N, Lq, shapes, ref, spread=1.0):
    """ref [N, Lq, 2] normalised reference points -> (value, shapes, starts, loc, attn) float32."""
    shapes = np.asarray(shapes, np.int64)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = np.concatenate([[0], np.cumsum(areas)[:-1]]).astype(np.int64)
    S, L = int(areas.sum()), len(shapes)
    value = rng.standard_normal((N, S, M, D)) * np.exp(0.5 * rng.standard_normal((1, 1, M, D)))
    ring = _ring()[None, None, :, None] * spread                                  # [1, 1, M, 1, P, 2]
    scale = np.exp(0.4 * rng.standard_normal((N, Lq, M, L, P, 1)))
    off = ring * scale + 1.5 * spread * rng.standard_normal((N, Lq, M, L, P, 2))  # pixels
    wh = shapes[:, ::-1].astype(F64)[None, None, None, :, None, :]                # (W_l, H_l)
    loc = ref[:, :, None, None, None, :] + off / wh
    logits = 1.5 * rng.standard_normal((N, Lq, M, L * P))
    attn = np.exp(logits - logits.max(-1, keepdims=True))
    attn = (attn / attn.sum(-1, keepdims=True)).reshape(N, Lq, M, L, P)
    return value.astype(F32), shapes, starts, loc.astype(F32), attn.astype(F32)


def cases(rng):
    S = sum(h * w for h, w in LEVELS)
    centres = np.concatenate([np.stack(np.meshgrid((np.arange(w) + 0.5) / w, (np.arange(h) + 0.5) / h), -1)
                              .reshape(-1, 2) for h, w in LEVELS])
    yield "encoder self-attn (N=1, Lq=5100, L=4)", make_case(rng, 1, S, LEVELS, centres[None])
    boxes = rng.uniform(0.05, 0.95, (T, QUERIES, 2))
    yield "decoder cross-attn (N=4, Lq=196, L=4)", make_case(rng, T, QUERIES, LEVELS, boxes, spread=4.0)
    yield "TCA 48x80 (N=1, Lq=196, L=T=4)", make_case(rng, 1, QUERIES, [LEVELS[0]] * T, boxes[:1], spread=4.0)


def errors(got, ref):
    d = np.abs(got.astype(F64) - ref)
    scale = float(np.abs(ref).max())
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "max_rel_to_max_ref": float(d.max() / scale),
            "ref_max_abs": scale}


def op_study(rng):
    rows = []
    for name, case in cases(rng):
        ref = msda_fp64(*case)
        row = {"case": name}
        for vname, fn in {**VARIANTS, **OP_EXTRA}.items():
            t0 = time.perf_counter()
            row[vname] = errors(fn(*case), ref)
            row[vname]["emulation_s"] = time.perf_counter() - t0
        # storage alone: fp64 math on half-rounded inputs, output rounded to half (the floor of any fp16 path)
        q = [a.astype(F16).astype(F64) if a.dtype == F32 else a for a in case]
        row["half storage only"] = errors(msda_fp64(*q).astype(F16), ref)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------
# end to end on the R50 model
# ----------------------------------------------------------------------------------------------
def e2e_study(size, seed=0, threads=0):
    import torch

    import mdqe
    import mdqe.model.deform_attn as deform_attn
    from export.wrappers import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_OUTPUTS, DecoderGraph, EncoderGraph

    if threads:
        torch.set_num_threads(threads)
    cfg = mdqe.get_config("r50_ytvis21")
    torch.manual_seed(seed)
    model = mdqe.build_model(cfg).eval()
    g = torch.Generator().manual_seed(seed + 1)
    # frames of the valid size, zero-padded to a multiple of 32 as the runtime pads them (e.g. 360x640
    # in 384x640, the authors' 360p setting); valid_hw drives the model's padding masks
    H, W = (-(-n // 32) * 32 for n in size)
    images = torch.zeros(cfg.num_frames, 3, H, W)
    images[:, :, :size[0], :size[1]] = torch.randn(cfg.num_frames, 3, size[0], size[1], generator=g)
    valid_hw = torch.tensor([list(size)] * cfg.num_frames, dtype=torch.int64)
    original = deform_attn.ms_deform_attn

    def run(fn):
        def patched(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, *a, **k):
            arrs = [t.detach().cpu().numpy() for t in (value, spatial_shapes, level_start_index, sampling_locations,
                                                       attention_weights)]
            out = fn(*arrs)
            N, Lq = value.shape[0], sampling_locations.shape[1]
            return torch.from_numpy(np.ascontiguousarray(out, dtype=F32).reshape(N, Lq, -1))
        deform_attn.ms_deform_attn = patched
        try:
            with torch.no_grad():
                enc = EncoderGraph(model)(images, valid_hw)
                feats = dict(zip(ENCODER_OUTPUTS, enc), valid_hw=valid_hw)
                dec = DecoderGraph(model)(*(feats[k] for k in DECODER_INPUTS))
        finally:
            deform_attn.ms_deform_attn = original
        return {k: v.numpy().astype(F64) for k, v in zip(DECODER_OUTPUTS, dec)}

    t0 = time.perf_counter()
    ref = run(msda_fp64)
    rows = {"reference run s": time.perf_counter() - t0}
    sig = 1 / (1 + np.exp(-ref["pred_logits"]))
    for vname, fn in VARIANTS.items():
        t0 = time.perf_counter()
        out = run(fn)
        s = 1 / (1 + np.exp(-out["pred_logits"]))
        flips = np.sign(out["pred_masks"]) != np.sign(ref["pred_masks"])
        rows[vname] = {
            "class_score_max_abs": float(np.abs(s - sig).max()),
            "top_class_changed": int((s.argmax(-1) != sig.argmax(-1)).sum()),
            "box_max_abs": float(np.abs(out["pred_boxes"] - ref["pred_boxes"]).max()),
            "mask_logit_max_abs": float(np.abs(out["pred_masks"] - ref["pred_masks"]).max()),
            "mask_logit_ref_max_abs": float(np.abs(ref["pred_masks"]).max()),
            "mask_sign_flips": int(flips.sum()), "mask_pixels": int(flips.size),
            "run_s": time.perf_counter() - t0,
        }
    return rows


def build_parser():
    ap = make_parser("python -m benchmarks.msda_precision", __doc__.split("\n\n")[0])
    add_seed_arg(ap)
    ap.add_argument("--e2e-size", default=(192, 352), type=parse_hw, metavar="HxW",
                    help="HxW (valid size) of the end-to-end run; frames are zero-padded to multiples of 32 "
                         "(default 192x352)")
    ap.add_argument("--no-e2e", action="store_true", help="only the op-level study")
    add_threads_arg(ap, help="torch threads for the end-to-end run")
    add_report_arg(ap)
    return ap


@cli_main
def main(argv=None) -> int:
    """Prints the study as it goes; ``--report`` also writes it as JSON."""
    args = build_parser().parse_args(argv)
    h, w = args.e2e_size

    print(f"MSDeformAttn precision vs fp64 | {platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__} | "
          f"R50 360p shapes, trained-like inputs, seed {args.seed}")
    rows = op_study(np.random.default_rng(args.seed))
    names = list(VARIANTS) + list(OP_EXTRA) + ["half storage only"]
    print(f"{'case':40s} " + " ".join(f"{n + ' max/mean abs':>26s}" for n in names))
    for r in rows:
        print(f"{r['case']:40s} " + " ".join(f"{r[n]['max_abs']:12.2e} / {r[n]['mean_abs']:9.2e}   " for n in names)
              + f" (max |ref| {r['ours fp32']['ref_max_abs']:.2f})")
    report = {"machine": platform.machine(), "cpus": os.cpu_count(), "seed": args.seed, "op": rows}
    if not args.no_e2e:
        print(f"\nend to end: r50_ytvis21, RANDOM weights (seed {args.seed}), T=4 frames of normal(0,1) at {h}x{w}; "
              "MSDeformAttn replaced in encoder and decoder, rest PyTorch fp32; vs the fp64-MSDeformAttn run")
        e2e = e2e_study((h, w), args.seed, args.threads)
        hdr = (f"{'variant':12s} {'class score':>12s} {'top class chg':>13s} {'box':>10s} {'mask logit':>11s} "
               f"{'mask sign flips':>22s}")
        print(hdr)
        for vname in VARIANTS:
            r = e2e[vname]
            print(f"{vname:12s} {r['class_score_max_abs']:12.2e} {r['top_class_changed']:13d} {r['box_max_abs']:10.2e} "
                  f"{r['mask_logit_max_abs']:11.2e} {r['mask_sign_flips']:>10d} / {r['mask_pixels']}")
        report["e2e"] = {"size": [h, w], **e2e}
    if args.report:
        from runtime.atomic import write_json
        write_json(args.report, report)
        print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
