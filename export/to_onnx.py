#!/usr/bin/env python
"""Export MDQE to two verified ONNX graphs (encoder.onnx, decoder.onnx) plus export.json.

    python export/to_onnx.py --config tiny --weights random --output out/tiny_onnx
    python export/to_onnx.py --config r50_ytvis21 --weights ckpt.safetensors --output out/r50 \
        --msda plugin --precision fp16 --height 384 --width 640
    python export/to_onnx.py --config r50_ytvis21 --weights ckpt.safetensors --output out/r50_nv \
        --msda trt-builtin [--plugin-version 1]     # NVIDIA's MultiscaleDeformableAttnPlugin_TRT

The directory layout and tensor names are docs/INTERFACES.md section 5; docs/export.md walks
from a checkpoint to TensorRT engines. Exporter: the TorchScript-based ``torch.onnx.export(...,
dynamo=False)`` for every MSDeformAttn form (tensor-valued level sizes stay dynamic ops in the
graph; the model's MSDeformAttn modules are set to the chosen form with mdqe.ops.use_msda_impl, whose
implementations live in mdqe/ops/msda/forms/; the form names and plugin identities are
runtime.contract's MSDA_FORMS / OUR_PLUGIN / TRT_BUILTIN_PLUGIN).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

if __name__ == "__main__" and not __package__:
    # `python export/to_onnx.py` (the documented command) puts export/, not the folder holding the
    # packages, first on sys.path: put that folder there instead and run this file as the module
    # export.to_onnx (what `python -m export.to_onnx` and the mdqe-export script run).
    import runpy
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runpy.run_module("export.to_onnx", run_name="__main__", alter_sys=True)
    raise SystemExit(0)   # not reached: the module's own __main__ block exits

from runtime.atomic import file_sha256, publish_dir  # noqa: E402
from runtime.cli import (add_precision_arg, add_progress_arg, add_seed_arg, add_threads_arg,  # noqa: E402
                         cli_main, make_parser, positive_int)
from runtime.contract import (FORMAT_VERSION, IMAGES, MASK_STRIDE, MSDA_EXPORT_DEFAULT, MSDA_FORMS,  # noqa: E402
                              MSDA_GRIDSAMPLE, MSDA_TRT_BUILTIN, OUR_PLUGIN, TRT_BUILTIN_PLUGIN, VALID_HW,
                              check_msda_form, level_strides, plugin_identity, preprocess_meta)
from runtime.errors import RuntimeErrorBase  # noqa: E402
DEFAULT_OPSET = 17
MIN_OPSET = 16          # GridSample
GRIDSAMPLE_BAD_OPSET = 20   # TensorRT 10.13 computes opset-20 GridSample wrongly (docs/export.md)


class ExportError(RuntimeErrorBase, RuntimeError):
    """A user-facing export failure (bad argument, checkpoint/config mismatch, unwritable output...): exit 2."""


def _log(msg: str, quiet: bool = False) -> None:
    if not quiet:
        print(msg, flush=True)


# ----------------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------------
def sha256_state_dict(state) -> str:
    """Hash of the tensors (sorted names, dtype, shape, bytes): identifies random weights too."""
    from mdqe.checkpoint import state_dict_sha256
    return state_dict_sha256(state)


def check_state_fits(model, state: dict, source: str) -> None:
    """Raise ExportError listing missing / unexpected / wrongly shaped keys."""
    own = model.state_dict()
    missing = sorted(k for k in own if k not in state)
    unexpected = sorted(k for k in state if k not in own)
    shapes = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in own if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shapes:
        def fmt(items, n=25):
            return "\n      ".join(items[:n]) + (f"\n      ... and {len(items) - n} more" if len(items) > n else "")
        parts = [f"checkpoint {source} does not fit config {model.cfg.name!r}:"]
        if missing:
            parts.append(f"  {len(missing)} missing keys:\n      {fmt(missing)}")
        if unexpected:
            parts.append(f"  {len(unexpected)} unexpected keys:\n      {fmt(unexpected)}")
        if shapes:
            parts.append(f"  {len(shapes)} keys with other shapes:\n      {fmt(shapes)}")
        raise ExportError("\n".join(parts))


def _config_diff(a, b) -> list:
    da, db = a.to_dict(), b.to_dict()
    return sorted(k for k in set(da) | set(db) if da.get(k) != db.get(k))


def build_model_with_weights(config: str, weights: str, seed: int):
    """-> (model in eval mode, cfg, weights info dict). `config` is a preset name, or "checkpoint"
    to take the config stored in the checkpoint file."""
    import torch
    import mdqe

    if weights == "random":
        if config == "checkpoint":
            raise ExportError("--config checkpoint needs --weights PATH (a checkpoint that stores its config)")
        try:
            cfg = mdqe.get_config(config)
        except KeyError as e:
            raise ExportError(str(e.args[0]) if e.args else str(e)) from e
        torch.manual_seed(seed)
        model = mdqe.build_model(cfg)
        info = {"source": "random", "seed": int(seed), "sha256": sha256_state_dict(model.state_dict())}
        return model.eval(), cfg, info
    if not os.path.isfile(weights):
        raise ExportError(f"--weights {weights!r}: no such file (give a checkpoint path or 'random')")
    try:
        from mdqe.checkpoint import load_checkpoint
    except ImportError as e:
        raise ExportError(f"cannot load checkpoints: mdqe.checkpoint is unavailable ({e})") from e
    requested = None
    if config != "checkpoint":
        try:
            requested = mdqe.get_config(config)
        except KeyError as e:
            raise ExportError(str(e.args[0]) if e.args else str(e)) from e
    try:
        try:
            state, cfg, _extra = load_checkpoint(weights)          # the config stored in the file, if any
        except Exception as e:
            if requested is None or "stores no config" not in str(e):
                raise
            state, cfg, _extra = load_checkpoint(weights, requested)
    except ExportError:
        raise
    except Exception as e:  # CheckpointError, safetensors / pickle errors, OSError
        raise ExportError(f"cannot load checkpoint {weights}: {e}") from e
    if requested is not None and cfg != requested:
        diff = _config_diff(cfg, requested)
        raise ExportError(f"checkpoint {weights} was saved with config {cfg.name!r}, which differs from "
                          f"--config {config} in {diff}; pass --config checkpoint to export with the stored config")
    model = mdqe.build_model(cfg)
    check_state_fits(model, state, weights)
    model.load_state_dict(state, strict=True)
    info = {"source": os.path.abspath(weights), "sha256": file_sha256(weights)}
    return model.eval(), cfg, info


# ----------------------------------------------------------------------------------------------
# output directory (atomic)
# ----------------------------------------------------------------------------------------------
OUTPUT_FILES = ("encoder.onnx", "decoder.onnx", "export.json")


def check_output_dir(out: str) -> str:
    """Validate --output before any work: creatable/writable, and not a foreign non-empty folder."""
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ExportError(f"--output {out} exists and is not a directory")
    if os.path.isdir(out):
        entries = [e for e in os.listdir(out) if not e.startswith(".")]
        if entries and "export.json" not in entries:
            raise ExportError(f"--output {out} is a non-empty directory that holds no export.json; "
                              "refusing to write into it (choose an empty or new directory)")
        probe_dir = out
    else:
        probe_dir = os.path.dirname(out)
        while probe_dir and not os.path.exists(probe_dir):
            probe_dir = os.path.dirname(probe_dir)
        if not probe_dir or not os.path.isdir(probe_dir):
            raise ExportError(f"--output {out}: no existing parent directory")
    if not os.access(probe_dir, os.W_OK | os.X_OK):
        raise ExportError(f"--output {out}: directory {probe_dir} is not writable")
    try:
        with tempfile.TemporaryFile(dir=probe_dir):
            pass
    except OSError as e:
        raise ExportError(f"--output {out}: cannot write in {probe_dir}: {e}") from e
    return out


def publish(tmp_dir: str, out: str) -> None:
    """Move the finished files into `out` (runtime.atomic.publish_dir): a new directory is renamed into
    place in one step; in an existing export directory each file is replaced atomically, export.json last."""
    publish_dir(tmp_dir, out, [n for n in OUTPUT_FILES if n != "export.json"] + ["export.json"])


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------
def _shape_spec(shape, dyn: Dict[int, str]):
    return [dyn.get(i, int(s)) for i, s in enumerate(shape)]


def _export_graph(module, args, path, input_names, output_names, dynamic_axes, opset, msda, plugin_version=None):
    import torch
    from mdqe.ops import use_msda_impl
    from mdqe.ops.msda.forms import DOMAIN_VERSION

    ident = plugin_identity(msda)
    with use_msda_impl(module, msda, plugin_version), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape-derived Python ints / legacy exporter notice
        try:
            torch.onnx.export(module, tuple(args), path, dynamo=False, opset_version=opset,
                              input_names=list(input_names), output_names=list(output_names),
                              dynamic_axes={k: v for k, v in dynamic_axes.items()
                                            if k in input_names or k in output_names},
                              do_constant_folding=True,
                              custom_opsets={ident.onnx_domain: DOMAIN_VERSION} if ident else None)
        except Exception as e:  # torch.onnx errors (unsupported opset/op) -> one clear line
            raise ExportError(f"torch.onnx.export of {os.path.basename(path)} failed (opset {opset}, "
                              f"msda={msda}): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else e}") from e


def _restore_inputs(path: str, names, example_args) -> None:
    """Put back graph inputs the exporter dropped because the graph does not read them (the onnx-form
    decoder derives level sizes from mask_features' shape and ignores the spatial_shapes /
    level_start_index values), so every graph keeps the input list of docs/INTERFACES.md section 5."""
    import onnx
    from onnx import helper

    m = onnx.load(path)
    present = [i.name for i in m.graph.input]
    if all(n in present for n in names):
        return
    inits = {i.name for i in m.graph.initializer}
    by_name = {i.name: i for i in m.graph.input}
    new_inputs = []
    for n, t in zip(names, example_args):
        if n in by_name:
            new_inputs.append(by_name[n])
        else:
            elem = helper.np_dtype_to_tensor_dtype(t.detach().cpu().numpy().dtype)
            new_inputs.append(helper.make_tensor_value_info(n, elem, list(t.shape)))
    rest = [i for i in m.graph.input if i.name not in names and i.name not in inits]
    del m.graph.input[:]
    m.graph.input.extend(new_inputs + rest)
    onnx.save(m, path)


def _strip_custom_opset(path: str) -> None:
    """pure-ONNX forms: drop unused custom-domain opset imports (if any) so the graph is plain ONNX."""
    import onnx

    domains = {OUR_PLUGIN.onnx_domain, TRT_BUILTIN_PLUGIN.onnx_domain}
    m = onnx.load(path)
    if any(o.domain in domains for o in m.opset_import):
        kept = [o for o in m.opset_import if o.domain not in domains]
        del m.opset_import[:]
        m.opset_import.extend(kept)
        onnx.save(m, path)


@dataclass
class ExportPlan:
    """What the export works on, fixed by `prepare_model`: the model in eval mode, its config, the
    weights record for export.json, the export/verification size and the two graph wrappers."""
    model: object
    cfg: object
    weights_info: dict
    height: int
    width: int
    encoder: object     # export.wrappers.EncoderGraph(model)
    decoder: object     # export.wrappers.DecoderGraph(model)


@dataclass
class TorchReference:
    """PyTorch fp32 outputs on the seeded verification input, per case ("unpadded", "padded"):
    cases[case] = valid_hw [T, 2] int64; refs[case] = (images [T, 3, H, W], valid_hw, encoder outputs
    {name: tensor} (+ valid_hw), decoder input tuple, decoder outputs {name: tensor})."""
    cases: Dict[str, object]
    refs: Dict[str, tuple]

    @property
    def encoder_args(self) -> tuple:
        """The traced encoder inputs: (images, valid_hw) of the padded case."""
        return self.refs["padded"][:2]

    @property
    def decoder_args(self) -> tuple:
        return self.refs["padded"][3]

    @property
    def encoder_outputs(self) -> dict:
        return self.refs["padded"][2]

    @property
    def decoder_outputs(self) -> dict:
        return self.refs["padded"][4]


def check_export_args(msda: str, plugin_version: Optional[str], dtype: str, opset: int,
                      height: Optional[int], width: Optional[int]) -> Optional[str]:
    """Validate the arguments that need no model (ExportError on a bad one); returns the plugin
    version to write (the trt-builtin default filled in, else `plugin_version` as given)."""
    check_msda_form(msda, "--msda", ExportError)
    if plugin_version is not None and msda != MSDA_TRT_BUILTIN:
        raise ExportError("--plugin-version applies to --msda trt-builtin only")
    if plugin_version is not None and plugin_version not in TRT_BUILTIN_PLUGIN.versions:
        raise ExportError(f"--plugin-version must be one of {', '.join(TRT_BUILTIN_PLUGIN.versions)}, "
                          f"got {plugin_version!r}")
    if msda == MSDA_TRT_BUILTIN and plugin_version is None:
        plugin_version = TRT_BUILTIN_PLUGIN.version
    if dtype not in ("fp32", "fp16"):
        raise ExportError(f"--dtype must be 'fp32' or 'fp16', got {dtype!r}")
    if not isinstance(opset, int) or opset < MIN_OPSET:
        raise ExportError(f"--opset {opset}: needs >= {MIN_OPSET} (GridSample)")
    if opset > 21:
        raise ExportError(f"--opset {opset}: this exporter supports opsets {MIN_OPSET}..21")
    if (height is None) != (width is None):
        raise ExportError("--height and --width go together")
    return plugin_version


def prepare_model(config: str, weights: str, seed: int, height: Optional[int], width: Optional[int],
                  opset: int, msda: str, threads: int, quiet: bool) -> ExportPlan:
    """Stage 1/6. Build the model with its weights (`build_model_with_weights`), choose the export size
    (default: the config's test shorter side by 16:9, both rounded up to size_divisibility) and check it
    against the config -> ExportPlan."""
    import torch
    from .wrappers import DecoderGraph, EncoderGraph

    _log(f"[1/6] building model {config!r} with weights {weights!r}", quiet)
    model, cfg, winfo = build_model_with_weights(config, weights, seed)
    div = cfg.size_divisibility
    if height is None:
        height = -(-cfg.test_shorter_side // div) * div
        width = -(-int(round(cfg.test_shorter_side * 16 / 9)) // div) * div
    for name, v in (("--height", height), ("--width", width)):
        if v <= 0 or v % div:
            raise ExportError(f"{name} {v}: must be a positive multiple of {div} (images are padded to it)")
    min_side = 8 * cfg.grid_size
    if min(height, width) < min_side:
        raise ExportError(f"--height/--width {height}x{width}: the level-0 map (stride 8) must be at least "
                          f"{cfg.grid_size}x{cfg.grid_size} for the query grid, i.e. sides >= {min_side}")
    if opset >= GRIDSAMPLE_BAD_OPSET and msda == MSDA_GRIDSAMPLE:
        _log(f"    warning: opset {opset} GridSample is computed wrongly by TensorRT 10.13; prefer opset 17/18", quiet)
    if threads:
        torch.set_num_threads(threads)
    return ExportPlan(model=model, cfg=cfg, weights_info=winfo, height=height, width=width,
                      encoder=EncoderGraph(model).eval(), decoder=DecoderGraph(model).eval())


def torch_reference(plan: ExportPlan, seed: int, quiet: bool) -> TorchReference:
    """Stage 2/6. Seeded input images [T, 3, H, W] ~ normal(0, 1) (generator seed + 1) in two cases:
    every pixel valid, and padded frames (valid = 15/16 of each side, e.g. 360x600 of 384x640) whose
    padded area is zero as the runtime's preprocessing leaves it; PyTorch fp32 encoder and decoder
    outputs for both -> TorchReference (the padded case is also the traced input)."""
    import torch
    from .wrappers import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_OUTPUTS, run_torch

    height, width, T = plan.height, plan.width, plan.cfg.num_frames
    g = torch.Generator().manual_seed(seed + 1)
    images = torch.randn(T, 3, height, width, generator=g)
    cases = {"unpadded": torch.tensor([[height, width]] * T, dtype=torch.int64),
             "padded": torch.tensor([[height - height // 16, width - width // 16]] * T, dtype=torch.int64)}

    def case_images(valid_hw):
        im = images.clone()
        im[:, :, int(valid_hw[0, 0]):, :] = 0
        im[:, :, :, int(valid_hw[0, 1]):] = 0
        return im

    _log(f"[2/6] PyTorch reference at {height}x{width}, {T} frames (unpadded, and padded to it from "
         f"{cases['padded'][0, 0]}x{cases['padded'][0, 1]})", quiet)
    refs = {}
    for case, vhw in cases.items():
        r_enc = run_torch(plan.encoder, (case_images(vhw), vhw), ENCODER_OUTPUTS)
        r_enc[VALID_HW] = vhw
        d_args = tuple(r_enc[k] for k in DECODER_INPUTS)
        refs[case] = (case_images(vhw), vhw, r_enc, d_args, run_torch(plan.decoder, d_args, DECODER_OUTPUTS))
    return TorchReference(cases=cases, refs=refs)


def trace_encoder(plan: ExportPlan, ref: TorchReference, path: str, opset: int, msda: str,
                  plugin_version: Optional[str], quiet: bool) -> None:
    """Stage 3/6. torch.onnx.export of the EncoderGraph on the padded reference input -> `path`
    (images [N, 3, H, W], valid_hw [N, 2] -> the encoder outputs of docs/INTERFACES.md section 5)."""
    from .wrappers import ENCODER_DYNAMIC, ENCODER_INPUTS, ENCODER_OUTPUTS

    _log(f"[3/6] exporting encoder.onnx (msda={msda}, opset {opset})", quiet)
    t0 = time.time()
    _export_graph(plan.encoder, ref.encoder_args, path, ENCODER_INPUTS, ENCODER_OUTPUTS, ENCODER_DYNAMIC, opset,
                  msda, plugin_version)
    _log(f"      {time.time() - t0:.1f} s, {os.path.getsize(path) / 1e6:.1f} MB", quiet)


def trace_decoder(plan: ExportPlan, ref: TorchReference, path: str, opset: int, msda: str,
                  plugin_version: Optional[str], quiet: bool) -> None:
    """Stage 4/6. torch.onnx.export of the DecoderGraph on the padded reference encoder outputs -> `path`,
    with the inputs the exporter dropped put back (`_restore_inputs`), so the graph keeps the decoder
    input list of docs/INTERFACES.md section 5."""
    from .wrappers import DECODER_DYNAMIC, DECODER_INPUTS, DECODER_OUTPUTS

    _log("[4/6] exporting decoder.onnx", quiet)
    t0 = time.time()
    _export_graph(plan.decoder, ref.decoder_args, path, DECODER_INPUTS, DECODER_OUTPUTS, DECODER_DYNAMIC, opset,
                  msda, plugin_version)
    _restore_inputs(path, DECODER_INPUTS, ref.decoder_args)
    _log(f"      {time.time() - t0:.1f} s, {os.path.getsize(path) / 1e6:.1f} MB", quiet)


def postprocess_graphs(plan: ExportPlan, paths: Sequence[str], msda: str, dtype: str, quiet: bool) -> None:
    """Rewrite the exported graph files in place: pure-ONNX forms lose unused custom opset imports;
    --precision fp16 types them in mixed precision (export.fp16.convert_graph_fp16 with the policy read
    from the model's fp16 marks, export.fp16.Fp16Policy)."""
    import onnx

    if plugin_identity(msda) is None:
        for p in paths:
            _strip_custom_opset(p)
    if dtype == "fp16":
        from .fp16 import Fp16Policy, convert_graph_fp16
        _log("      converting both graphs to mixed fp16 (fp32 kept for normalizations, softmax, heads, "
             "MSDA accumulation)", quiet)
        # the wrappers call the model's methods, not its forward: nodes are scoped /<module path in the model>/
        policy = Fp16Policy.from_module(plan.model)
        for p in paths:
            onnx.save(convert_graph_fp16(onnx.load(p), policy), p)


def check_graphs(plan: ExportPlan, enc_path: str, dec_path: str, msda: str, plugin_version: Optional[str],
                 quiet: bool) -> Dict[str, dict]:
    """Stage 5/6. onnx.checker, shape inference and the MSDeformAttn form of both graphs (node counts
    the config implies, export/verify.py; VerificationError on a mismatch) -> census per graph:
    {"encoder"|"decoder": {"nodes", "msda_custom_nodes", "GridSample", "Gather"}}."""
    import onnx
    from mdqe.ops.msda.forms import expected_gridsample_nodes, expected_msda_calls
    from . import verify as V

    ident = plugin_identity(msda)
    expected = expected_msda_calls(plan.cfg)
    expected_grid = expected_gridsample_nodes(plan.cfg)
    census_all = {}
    _log("[5/6] checking graphs (onnx.checker, shape inference, MSDeformAttn nodes)", quiet)
    for name, p in (("encoder", enc_path), ("decoder", dec_path)):
        m = onnx.load(p)
        inferred = V.check_graph(m, name)
        V.check_msda_form(inferred, name, msda, expected[name], expected_grid[name], plugin_version)
        census = V.op_census(m)
        n_custom = sum(census.get(f"{i.onnx_domain}::{i.op_type}", 0) for i in (OUR_PLUGIN, TRT_BUILTIN_PLUGIN))
        census_all[name] = {"nodes": len(m.graph.node), "msda_custom_nodes": n_custom,
                            "GridSample": census.get("GridSample", 0), "Gather": census.get("Gather", 0)}
        _log(f"      {name}: {len(m.graph.node)} nodes, {n_custom} "
             f"{ident.op_type if ident else 'MSDA custom'} nodes, {census.get('GridSample', 0)} GridSample, "
             f"{census.get('Gather', 0)} Gather", quiet)
    return census_all


def verify_numerics(plan: ExportPlan, ref: TorchReference, enc_path: str, dec_path: str, msda: str, dtype: str,
                    seed: int, threads: int, quiet: bool) -> dict:
    """Stage 6/6. ONNX Runtime vs PyTorch fp32 on both reference cases: the encoder on the images, the
    decoder on the PyTorch encoder outputs; outputs that miss the plain tolerance (or pass it with a
    small margin) are judged against PyTorch fp32's own error vs fp64. Raises VerificationError on a
    failure; returns the "verification" record of export.json."""
    from runtime.native.ort_ops import kernel_name
    from . import verify as V
    from .wrappers import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_OUTPUTS

    ident = plugin_identity(msda)
    height, width, T = plan.height, plan.width, plan.cfg.num_frames
    atol, rtol = (V.FP32_ATOL, 0.0) if dtype == "fp32" else (V.FP16_ATOL, V.FP16_RTOL)
    _log(f"[6/6] ONNX Runtime vs PyTorch (fp32) on the same seeded input; tolerance "
         f"{'%.0e abs' % atol if dtype == 'fp32' else '%.0e + %.0e * max|ref|' % (atol, rtol)}", quiet)
    results = {}
    for case, (c_images, c_valid, c_ref_enc, _, c_ref_dec) in ref.refs.items():
        feeds_enc = {"images": c_images.numpy(), VALID_HW: c_valid.numpy()}
        got_enc = V.run_ort(enc_path, feeds_enc, ENCODER_OUTPUTS, threads)
        ref_enc_np = {k: v.numpy() for k, v in c_ref_enc.items()}
        res_enc = V.compare(got_enc, ref_enc_np, ENCODER_OUTPUTS, atol, rtol)
        if dtype == "fp16":  # selection near-ties may flip in fp16: counted, bounded (export/verify.py)
            res_enc.update(V.compare_selection_fp16(got_enc, ref_enc_np, atol, rtol))
        feeds_dec = {k: ref_enc_np[k] for k in DECODER_INPUTS}
        got_dec = V.run_ort(dec_path, feeds_dec, DECODER_OUTPUTS, threads)
        ref_dec_np = {k: v.numpy() for k, v in c_ref_dec.items()}
        res_dec = V.compare(got_dec, ref_dec_np, DECODER_OUTPUTS, atol, rtol)
        if V.needs_reference_error(res_enc, res_dec):
            _log(f"      {case}: some outputs exceed the plain tolerance or pass it with a margin below "
                 f"{V.MIN_MARGIN:g}x: measuring PyTorch fp32's own error vs fp64", quiet)
            err_enc, err_dec = reference_rounding_error(plan.model, c_images, c_valid, c_ref_enc, c_ref_dec)
            res_enc = V.compare(got_enc, ref_enc_np, ENCODER_OUTPUTS, atol, rtol, err_enc)
            if dtype == "fp16":
                res_enc.update(V.compare_selection_fp16(got_enc, ref_enc_np, atol, rtol))
            res_dec = V.compare(got_dec, ref_dec_np, DECODER_OUTPUTS, atol, rtol, err_dec)
        _log(V.format_report(f"encoder ({case})", res_enc), quiet)
        _log(V.format_report(f"decoder ({case})", res_dec), quiet)
        V.raise_on_failure(f"encoder ({case})", res_enc)
        V.raise_on_failure(f"decoder ({case})", res_dec, "decoder fed with the PyTorch encoder outputs")
        results[case] = (res_enc, res_dec)
    if ident is not None:
        _log(f"      {ident.op_type} nodes ran in ONNX Runtime with the {kernel_name()} MSDeformAttn CPU "
             "kernel", quiet)
    res_enc, res_dec = results["unpadded"]
    verification = {
        "input": {"images": [T, 3, height, width], "seed": seed + 1, "distribution": "normal(0,1)",
                  "valid_hw": {c: v[0].tolist() for c, v in ref.cases.items()}},
        "reference": "PyTorch fp32",
        "tolerance": {"atol": atol, "rtol_of_max_abs_ref": rtol},
        "encoder": {k: r["max_abs_err"] for k, r in res_enc.items()},
        "decoder": {k: r["max_abs_err"] for k, r in res_dec.items()},
        "padded": {g: {k: r["max_abs_err"] for k, r in rr.items()}
                   for g, rr in zip(("encoder", "decoder"), results["padded"])},
        "margin": {f"{g}.{k}": round(r["margin"], 2) for g, rr in (("encoder", res_enc), ("decoder", res_dec))
                   for k, r in rr.items() if "margin" in r and r["margin"] != float("inf")},
    }
    if dtype == "fp16":
        verification["selection_flips"] = {
            c: f"{r[0]['query_points']['selection_flips']}/{r[0]['query_points']['selection_points']}"
            for c, r in results.items()}
    ref_errs = {f"{g}.{k}": r["ref_fp32_vs_fp64"] for g, rr in (("encoder", res_enc), ("decoder", res_dec))
                for k, r in rr.items() if "ref_fp32_vs_fp64" in r}
    if ref_errs:
        verification["reference_fp32_vs_fp64"] = ref_errs
        verification["tolerance"]["ref_err_factor"] = V.REF_ERR_FACTOR
    return verification


def write_model_dir(tmp_dir: str, out: str, meta: dict) -> None:
    """Write export.json beside the two graphs in `tmp_dir`, then publish the folder as `out`
    (`publish`: one rename, or atomic per-file replaces with export.json last)."""
    with open(os.path.join(tmp_dir, "export.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")
    publish(tmp_dir, out)


def export_model(config: str = "tiny", weights: str = "random", output: str = "out/onnx",
                 msda: str = MSDA_EXPORT_DEFAULT, dtype: str = "fp32", height: Optional[int] = None,
                 width: Optional[int] = None, opset: int = DEFAULT_OPSET, verify: bool = True, seed: int = 0,
                 quiet: bool = False, threads: int = 0, plugin_version: Optional[str] = None) -> dict:
    """Export, verify and publish. Returns the export.json dict. Raises ExportError on bad
    arguments and export.verify.VerificationError when a check fails (nothing is published then).
    `plugin_version`: trt-builtin form only, "2" (default, TensorRT >= 10.11) or "1".

    Stages: check_export_args -> prepare_model -> torch_reference -> trace_encoder -> trace_decoder
    -> postprocess_graphs (custom opsets, fp16) -> check_graphs -> verify_numerics -> write_model_dir;
    the graphs are written in a temporary sibling folder of `output` until published."""
    t_start = time.time()
    plugin_version = check_export_args(msda, plugin_version, dtype, opset, height, width)
    out = check_output_dir(output)
    from mdqe.ops.msda.forms import expected_msda_calls

    plan = prepare_model(config, weights, seed, height, width, opset, msda, threads, quiet)
    ref = torch_reference(plan, seed, quiet)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.tmp-", dir=parent)
    try:
        enc_path, dec_path = os.path.join(tmp_dir, "encoder.onnx"), os.path.join(tmp_dir, "decoder.onnx")
        trace_encoder(plan, ref, enc_path, opset, msda, plugin_version, quiet)
        trace_decoder(plan, ref, dec_path, opset, msda, plugin_version, quiet)
        postprocess_graphs(plan, (enc_path, dec_path), msda, dtype, quiet)
        census = check_graphs(plan, enc_path, dec_path, msda, plugin_version, quiet)
        if verify:
            verification = verify_numerics(plan, ref, enc_path, dec_path, msda, dtype, seed, threads, quiet)
        else:
            verification = {}
            _log("[6/6] numerical verification skipped (--no-verify)", quiet)
        meta = build_export_json(plan.cfg, enc_out=ref.encoder_outputs, dec_out=ref.decoder_outputs,
                                 height=plan.height, width=plan.width, msda=msda, dtype=dtype, opset=opset,
                                 weights=plan.weights_info, verification=verification,
                                 expected_plugin_nodes=expected_msda_calls(plan.cfg), plugin_version=plugin_version,
                                 census=census)
        write_model_dir(tmp_dir, out, meta)
    finally:
        if os.path.isdir(tmp_dir):
            shutil.rmtree(tmp_dir, ignore_errors=True)
    _log(f"done in {time.time() - t_start:.1f} s: {out}/{{encoder.onnx,decoder.onnx,export.json}}", quiet)
    return meta


def reference_rounding_error(model, images, valid_hw, ref_enc, ref_dec):
    """max |PyTorch fp32 - PyTorch fp64| per output on the verification input (the decoder gets the
    fp32 encoder outputs, as the ONNX decoder did)."""
    import copy
    import torch
    from .wrappers import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_OUTPUTS, DecoderGraph, EncoderGraph, run_torch

    m64 = copy.deepcopy(model).double().eval()
    enc64 = run_torch(EncoderGraph(m64), (images.double(), valid_hw), ENCODER_OUTPUTS)
    dec_in = tuple(ref_enc[k].double() if ref_enc[k].is_floating_point() else ref_enc[k] for k in DECODER_INPUTS)
    dec64 = run_torch(DecoderGraph(m64), dec_in, DECODER_OUTPUTS)

    def err(a, b):
        if not a.is_floating_point():
            return float((a.long() - b.long()).abs().max()) if a.numel() else 0.0
        return float((a.double() - b).abs().max()) if a.numel() else 0.0
    return ({k: err(ref_enc[k], enc64[k]) for k in ENCODER_OUTPUTS},
            {k: err(ref_dec[k], dec64[k]) for k in DECODER_OUTPUTS})


def build_export_json(cfg, enc_out, dec_out, height, width, msda, dtype, opset, weights, verification,
                      expected_plugin_nodes, plugin_version=None, census=None) -> dict:
    from .wrappers import DECODER_DYNAMIC, DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_DYNAMIC, ENCODER_OUTPUTS

    enc_outputs = {k: _shape_spec(enc_out[k].shape, ENCODER_DYNAMIC.get(k, {})) for k in ENCODER_OUTPUTS}
    # level count is fixed by the config; S, h, w follow the resolution
    dec_inputs = {k: _shape_spec(enc_out[k].shape, DECODER_DYNAMIC.get(k, {})) for k in DECODER_INPUTS}
    dec_outputs = {k: _shape_spec(dec_out[k].shape, DECODER_DYNAMIC.get(k, {})) for k in DECODER_OUTPUTS}
    io_types = {"float": "float32", "int": "int64"}
    ident = plugin_identity(msda)
    return {
        "format_version": FORMAT_VERSION,
        "config": json.loads(json.dumps(cfg.to_dict())),
        "model_name": cfg.name,
        "num_frames": cfg.num_frames,
        "num_queries": cfg.num_grid_queries,
        "num_classes": cfg.num_classes,
        "class_names": list(cfg.class_names),
        "embed_dim": cfg.embed_dim,
        "mask_dim": cfg.mask_dim,
        "hidden_dim": cfg.hidden_dim,
        "num_levels": cfg.num_feature_levels,
        "mask_stride": MASK_STRIDE,
        "level_strides": level_strides(cfg.num_feature_levels),
        "preprocess": preprocess_meta(cfg),
        "export_size": [height, width],
        "dynamic_size": True,
        "encoder": {"file": "encoder.onnx", "inputs": {IMAGES: ["N", 3, "H", "W"], VALID_HW: ["N", 2]},
                    "outputs": enc_outputs,
                    "msda_nodes": expected_plugin_nodes["encoder"] if ident else 0},
        "decoder": {"file": "decoder.onnx", "inputs": dec_inputs, "outputs": dec_outputs,
                    "msda_nodes": expected_plugin_nodes["decoder"] if ident else 0},
        "io_dtypes": io_types,
        "msda": msda,
        # the custom node's identity (plugin / trt-builtin forms); {} for the pure-ONNX forms
        "plugin": ({"name": ident.op_type, "version": plugin_version or ident.version, "namespace": ident.namespace,
                    "onnx_domain": ident.onnx_domain, "library": ident.library,
                    "needs_plugin_library": ident.needs_plugin_library} if ident else {}),
        "node_census": census or {},
        "opset": opset,
        "dtype": dtype,
        "weights": weights,
        "verification": verification,
        "exporter": _exporter_info(),
    }


def _exporter_info() -> dict:
    import onnx
    import torch
    return {"tool": "export/to_onnx.py", "torch": torch.__version__, "onnx": onnx.__version__,
            "torch_onnx_exporter": "torchscript (dynamo=False)",
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None):
    p = make_parser("python export/to_onnx.py",
                    "Export MDQE to verified encoder/decoder ONNX graphs + export.json (docs/export.md).",
                    also=("python -m export.to_onnx", "mdqe-export"))
    p.add_argument("--config", required=True,
                   help="preset name (tiny, r50_ytvis21, r50_ovis), or 'checkpoint' for the config stored in --weights")
    p.add_argument("--weights", required=True, help="checkpoint (.safetensors from mdqe.checkpoint, or .pth) or 'random'")
    p.add_argument("--output", required=True, help="output directory (created; replaced files are swapped in atomically)")
    p.add_argument("--msda", choices=MSDA_FORMS, default=MSDA_EXPORT_DEFAULT,
                   help="MSDeformAttn form: onnx (default: pure ONNX, bilinear with Gather, no GridSample), "
                        "gridsample (pure ONNX with GridSample), plugin (our MDQEMSDeformAttn TensorRT plugin, fp32 "
                        "accumulation), trt-builtin (NVIDIA's MultiscaleDeformableAttnPlugin_TRT in libnvinfer_plugin)")
    p.add_argument("--plugin-version", choices=TRT_BUILTIN_PLUGIN.versions, default=None,
                   help="--msda trt-builtin: plugin_version of the nodes, 2 (default; IPluginV3, TensorRT >= 10.11) "
                        "or 1 (IPluginV2DynamicExt, TensorRT 8.4 .. 10.x, e.g. JetPack 6's 10.3)")
    add_precision_arg(p, help="graph precision; fp16: mixed-precision typed graph for TensorRT 11 strongly typed "
                              "networks")
    p.add_argument("--height", type=positive_int,
                   help="export/verification height (multiple of 32; graphs stay dynamic)")
    p.add_argument("--width", type=positive_int, help="export/verification width (multiple of 32)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the ONNX Runtime vs PyTorch comparison (checker/structure checks still run)")
    add_seed_arg(p, help="seed of random weights and of the verification input")
    add_threads_arg(p, help="CPU threads for PyTorch/ONNX Runtime")
    add_progress_arg(p)
    return p.parse_args(argv)


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Exit 0, 2 (ExportError: bad input), 3 (VerificationError: nothing written); runtime/cli.py."""
    args = parse_args(argv)
    from .verify import VerificationError
    try:
        export_model(config=args.config, weights=args.weights, output=args.output, msda=args.msda,
                     dtype=args.precision, height=args.height, width=args.width, opset=args.opset,
                     verify=args.verify, seed=args.seed, quiet=args.no_progress, threads=args.threads,
                     plugin_version=args.plugin_version)
    except VerificationError as e:
        raise VerificationError(f"verification failed, nothing written: {e}") from e
    return 0


if __name__ == "__main__":
    sys.exit(main())
