#!/usr/bin/env python
"""Build TensorRT engines from an exported model directory (encoder.onnx, decoder.onnx, export.json).

    python export/build_engines.py --model out/r50 --plugin-lib build/libmdqe_trt_plugin.so
    python export/build_engines.py --model out/r50 --print-only          # trtexec lines, no TensorRT needed

Optimization profiles: the encoder's frame batch N and resolution H x W, the decoder's S (memory
tokens) and h x w (mask features) derived from the same resolution range; T is fixed by the graph.
Precision: an fp16-typed export (``export/to_onnx.py --precision fp16``) is built as a strongly
typed network (TensorRT 11 only builds those; TensorRT 10 with STRONGLY_TYPED); an fp32 export is built in fp32, or with
the fp16 builder flag on TensorRT 10 (``--fp16``). The equivalent trtexec command lines for
TensorRT 10 and 11 are printed either way (docs/export.md).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Dict, List, Optional, Sequence, Tuple

if __name__ == "__main__" and not __package__:
    # `python export/build_engines.py` puts export/, not the folder holding the packages, first on
    # sys.path: put that folder there instead and run this file as the module export.build_engines.
    import runpy
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runpy.run_module("export.build_engines", run_name="__main__", alter_sys=True)
    raise SystemExit(0)   # not reached: the module's own __main__ block exits

from runtime.cli import add_model_arg, add_plugin_lib_arg, add_precision_arg, cli_main, make_parser  # noqa: E402
from runtime.contract import (MSDA_GRIDSAMPLE, MSDA_ONNX, MSDA_TRT_BUILTIN, OUR_PLUGIN,  # noqa: E402
                              TRT_BUILTIN_PLUGIN, TRT_PLUGIN_STATIC_LIBRARY, level_sizes, plugin_identity)
from runtime.errors import RuntimeErrorBase  # noqa: E402

PLUGIN_LIB_NAME = OUR_PLUGIN.library                       # getCreators(): --dynamicPlugins / loadLibrary
STATIC_PLUGIN_LIB_NAME = TRT_PLUGIN_STATIC_LIBRARY           # registers itself when loaded: --staticPlugins


class BuildError(RuntimeErrorBase, RuntimeError):
    """The model directory, the plugin library or TensorRT cannot build the engines (exit 2)."""


# ----------------------------------------------------------------------------------------------
# shapes
# ----------------------------------------------------------------------------------------------
def _pad(v: int, div: int) -> int:
    return -(-int(v) // div) * div


def parse_size(text: str) -> Tuple[int, int]:
    try:
        h, w = text.lower().split("x")
        return int(h), int(w)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be HxW (e.g. 384x672), got {text!r}") from None


def load_meta(model_dir: str) -> dict:
    """export.json of ``model_dir``, validated by the runtime's one validation (runtime.model_dir:
    types, ranges, tensor names/ranks/sizes) plus the config fields the profiles need."""
    from runtime.errors import ModelDirError
    from runtime.model_dir import load_model_dir, require_graph_files
    try:
        spec = load_model_dir(model_dir)
        require_graph_files(spec)
    except ModelDirError as e:
        raise BuildError(str(e)) from None
    meta = spec.raw
    cfg = spec.config
    path = os.path.join(model_dir, "export.json")
    for key, alt in (("hidden_dim", "hidden_dim"), ("mask_dim", "mask_dim"), ("num_feature_levels", "num_levels")):
        if key not in cfg and alt not in meta:
            raise BuildError(f"{path}: needs config.{key} (or {alt}) to size the TensorRT profiles")
        cfg.setdefault(key, meta.get(alt))
    if "export_size" not in meta:
        raise BuildError(f"{path}: needs export_size [height, width] (the profiles' optimum size)")
    meta = dict(meta, config=cfg)
    return meta


def profiles(meta: dict, min_size=None, opt_size=None, max_size=None, min_frames=1, opt_frames=None,
             max_frames=None) -> Dict[str, Dict[str, Tuple[tuple, tuple, tuple]]]:
    """{graph: {input: (min, opt, max)}} for both graphs."""
    cfg = meta["config"]
    div = int(meta["preprocess"].get("size_divisibility", 32))
    T = int(meta["num_frames"])
    L = int(meta.get("num_levels", cfg["num_feature_levels"]))
    C, Q, E, Dm = int(cfg["hidden_dim"]), int(meta["num_queries"]), int(meta["embed_dim"]), int(cfg["mask_dim"])
    grid = int(round(Q ** 0.5))
    smallest = _pad(8 * grid, div)
    longest = _pad(int(meta["preprocess"]["max_size"]), div)
    min_size = min_size or (smallest, smallest)
    opt_size = opt_size or tuple(meta["export_size"])
    max_size = max_size or (longest, longest)
    opt_frames = opt_frames or T
    max_frames = max_frames or T
    for name, (h, w) in (("min", min_size), ("opt", opt_size), ("max", max_size)):
        if h % div or w % div or h <= 0 or w <= 0:
            raise BuildError(f"{name} size {h}x{w}: sides must be positive multiples of {div}")
        if min(h, w) < smallest:
            raise BuildError(f"{name} size {h}x{w}: sides must be >= {smallest} (query grid {grid}x{grid} at stride 8)")
    if not (min_size[0] <= opt_size[0] <= max_size[0] and min_size[1] <= opt_size[1] <= max_size[1]):
        raise BuildError(f"sizes must satisfy min <= opt <= max per side: {min_size} {opt_size} {max_size}")
    if not 1 <= min_frames <= opt_frames <= max_frames:
        raise BuildError(f"frames must satisfy 1 <= min <= opt <= max, got {min_frames} {opt_frames} {max_frames}")

    def s_tokens(hw):
        return sum(a * b for a, b in level_sizes(hw[0], hw[1], L))

    enc = {"images": tuple((n, 3, hw[0], hw[1]) for n, hw in
                           ((min_frames, min_size), (opt_frames, opt_size), (max_frames, max_size))),
           # valid (unpadded) size per frame, int64 [N, 2]: follows the frame batch N
           "valid_hw": tuple((n, 2) for n in (min_frames, opt_frames, max_frames))}
    # only the dynamic inputs get a range; the others are static in the graph (spatial_shapes [L,2],
    # level_start_index [L], query_* [T,Q,...]); the onnx-form decoder does not even read
    # spatial_shapes / level_start_index (it takes level sizes from mask_features' shape)
    dec = {
        "memory": tuple((T, s_tokens(hw), C) for hw in (min_size, opt_size, max_size)),
        "mask_features": tuple((T, Dm, hw[0] // 4, hw[1] // 4) for hw in (min_size, opt_size, max_size)),
    }
    del Q, E
    return {"encoder": enc, "decoder": dec}


# ----------------------------------------------------------------------------------------------
# trtexec lines
# ----------------------------------------------------------------------------------------------
def _shapes_arg(prof: Dict[str, tuple], which: int) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in shp[which])}" for name, shp in prof.items())


def trtexec_commands(model_dir: str, meta: dict, profs: dict, plugin_lib: Optional[str], engine_dir: str,
                     trt_major: int, fp16: bool, static_plugins: bool = False) -> List[List[str]]:
    """trtexec argument lists, one per graph. TensorRT 10: fp32 graph + --fp16 (weakly typed) or a
    typed fp16 graph with --stronglyTyped; TensorRT 11: the graph's types are the precision."""
    typed16 = meta.get("dtype") == "fp16"
    cmds = []
    for graph in ("encoder", "decoder"):
        cmd = ["trtexec", f"--onnx={os.path.join(model_dir, meta[graph]['file'])}",
               f"--saveEngine={os.path.join(engine_dir, graph + '.plan')}"]
        if _needs_plugin_library(meta):
            lib = plugin_lib or os.path.join("build", PLUGIN_LIB_NAME)
            if static_plugins and os.path.basename(lib) == PLUGIN_LIB_NAME:
                # --staticPlugins wants the self-registering variant (docs/native.md)
                lib = os.path.join(os.path.dirname(lib), STATIC_PLUGIN_LIB_NAME)
            cmd.append(f"--{'staticPlugins' if static_plugins else 'dynamicPlugins'}={lib}")
        prof = profs[graph]
        cmd += [f"--minShapes={_shapes_arg(prof, 0)}", f"--optShapes={_shapes_arg(prof, 1)}",
                f"--maxShapes={_shapes_arg(prof, 2)}"]
        if trt_major <= 10:
            if typed16:
                cmd.append("--stronglyTyped")
            elif fp16:
                cmd.append("--fp16")
        cmds.append(cmd)
    return cmds


def _form(meta: dict) -> str:
    return str(meta.get("msda", MSDA_ONNX))


def _needs_plugin_library(meta: dict) -> bool:
    """Only our plugin form needs a plugin library loaded; NVIDIA's MultiscaleDeformableAttnPlugin_TRT
    (trt-builtin form) is in libnvinfer_plugin, which trtexec / polygraphy / init_libnvinfer_plugins load."""
    ident = plugin_identity(_form(meta))
    return bool(ident and ident.needs_plugin_library)


def describe_form(meta: dict) -> str:
    """One line on what the graph's MSDeformAttn needs from TensorRT."""
    form = _form(meta)
    ident = plugin_identity(form)
    if ident is None:
        return (f"MSDeformAttn form {form}: plain ONNX, no plugin"
                + (" (GridSample: TensorRT 10.14+/11.x miscompile it in DETR-style graphs, docs/export.md)"
                   if form == MSDA_GRIDSAMPLE else ""))
    if ident.needs_plugin_library:
        return f"MSDeformAttn form {form}: {ident.op_type} from {ident.library} (loaded below)"
    version = (meta.get("plugin") or {}).get("version", ident.version)
    need = "TensorRT >= 10.11" if version == "2" else "TensorRT >= 8.4"
    return (f"MSDeformAttn form {form}: NVIDIA's {ident.op_type} version {version} from {ident.library} "
            f"(no --dynamicPlugins; needs {need}; its fp16 path accumulates in half)")


def describe_precision(meta: dict, trt_major: int, fp16_flag: bool) -> str:
    if meta.get("dtype") == "fp16":
        return "strongly typed network from the fp16-typed graph (fp32 kept where the export put it)"
    if trt_major >= 11:
        return ("strongly typed network from an fp32 graph = fp32 engine "
                "(export with --precision fp16 for fp16 on TensorRT 11)")
    return "fp32 graph, fp16 builder flag (--fp16)" if fp16_flag else "fp32 graph, fp32 engine"


def format_command(cmd: List[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def polygraphy_commands(model_dir: str, meta: dict, plugin_lib: Optional[str], trt_major: int = 10,
                        fp16_flag: bool = True) -> List[str]:
    """polygraphy lines comparing TensorRT with ONNX Runtime reference files written by
    `python export/polygraphy_ref.py --model DIR` (inputs + ONNX Runtime outputs, every MSDA form;
    ONNX Runtime runs plugin / trt-builtin nodes with our CPU kernel there). Only the plugin form
    passes --plugins (polygraphy's TensorRT loader initialises libnvinfer_plugin itself, which holds
    the trt-builtin form's MultiscaleDeformableAttnPlugin_TRT)."""
    lines = []
    lib = plugin_lib or os.path.join("build", PLUGIN_LIB_NAME)
    if os.path.basename(lib) == PLUGIN_LIB_NAME:
        # polygraphy --plugins only dlopens (ctypes.CDLL): use the self-registering variant
        lib = os.path.join(os.path.dirname(lib), STATIC_PLUGIN_LIB_NAME)
    typed16 = meta.get("dtype") == "fp16"
    # fp16 engines: 1e-2; fp32 engines: 1e-3 (TensorRT may use TF32 for fp32 matmuls/convs)
    tol = "--atol 1e-2 --rtol 1e-2" if (typed16 or (fp16_flag and trt_major <= 10)) else "--atol 1e-3 --rtol 1e-3"
    for graph in ("encoder", "decoder"):
        onnx_path = os.path.join(model_dir, meta[graph]["file"])
        ref = os.path.join(model_dir, "polygraphy")
        cmd = f"polygraphy run {onnx_path} --trt"
        if _needs_plugin_library(meta):
            cmd += f" --plugins {lib}"
        if typed16 or trt_major >= 11:
            cmd += " --strongly-typed"
        elif fp16_flag:
            cmd += " --fp16"
        cmd += (f" --load-inputs {ref}/{graph}_inputs.json --load-outputs {ref}/{graph}_ort_outputs.json {tol}")
        lines.append(cmd)
    return lines


# ----------------------------------------------------------------------------------------------
# TensorRT Python API
# ----------------------------------------------------------------------------------------------
def import_tensorrt():
    try:
        import tensorrt as trt  # noqa: F401
    except ImportError as e:
        raise BuildError(
            "TensorRT's Python package is not importable here (`import tensorrt` failed: "
            f"{e}). Install TensorRT 10/11 on the GPU machine (e.g. JetPack, or `pip install tensorrt` "
            "where NVIDIA's index is reachable), or use --print-only to get the equivalent trtexec "
            "command lines.") from e
    return trt


def load_plugin_library(trt, path: str, logger) -> None:
    if not os.path.isfile(path):
        raise BuildError(f"plugin library not found: {path} (build trt_plugins/, or pass --plugin-lib)")
    trt.init_libnvinfer_plugins(logger, "")
    registry = trt.get_plugin_registry()
    try:
        registry.load_library(path)
    except Exception as e:  # older bindings / a library without getCreators
        import ctypes
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as e2:
            raise BuildError(f"cannot load plugin library {path}: {e}; {e2}") from e2


def check_builtin_creator(trt, meta: dict) -> None:
    """Fail early, with the TensorRT version in the message, when libnvinfer_plugin lacks the
    MultiscaleDeformableAttnPlugin_TRT version the graph names (version "2" needs TensorRT 10.11+)."""
    version = (meta.get("plugin") or {}).get("version", TRT_BUILTIN_PLUGIN.version)
    registry = trt.get_plugin_registry()
    getter = getattr(registry, "get_creator", None) or getattr(registry, "get_plugin_creator", None)
    creator = None
    if getter is not None:
        try:
            creator = getter(TRT_BUILTIN_PLUGIN.op_type, version, TRT_BUILTIN_PLUGIN.namespace)
        except Exception:
            creator = None
    if creator is None:
        raise BuildError(f"TensorRT {trt.__version__}'s libnvinfer_plugin has no {TRT_BUILTIN_PLUGIN.op_type} "
                         f"version {version!r} (version 2 needs TensorRT >= 10.11): re-export with "
                         "--msda trt-builtin --plugin-version 1, or use --msda plugin / onnx")


def build_engine(trt, onnx_path: str, prof: Dict[str, tuple], out_path: str, strongly_typed: bool, fp16_flag: bool,
                 workspace_mb: int, logger) -> None:
    builder = trt.Builder(logger)
    flags = 0
    if strongly_typed:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_path):
        errs = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BuildError(f"TensorRT ONNX parser failed on {onnx_path}:\n{errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if fp16_flag and not strongly_typed:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    names = {network.get_input(i).name for i in range(network.num_inputs)}
    for name, (mn, op, mx) in prof.items():
        if name in names:
            profile.set_shape(name, mn, op, mx)
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BuildError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    from runtime.atomic import write_bytes
    write_bytes(out_path, serialized)   # IHostMemory supports the buffer protocol


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def parse_args(argv: Optional[Sequence[str]] = None):
    p = make_parser("python export/build_engines.py",
                    "Build TensorRT engines for an exported MDQE model directory.",
                    also=("python -m export.build_engines", "mdqe-build-engines"))
    add_model_arg(p, required=True)
    add_plugin_lib_arg(p, help=f"path of {PLUGIN_LIB_NAME} (needed for --msda plugin exports only; "
                               "trt-builtin uses libnvinfer_plugin, the onnx/gridsample forms no plugin)")
    p.add_argument("--engine-dir", help="where to write encoder.plan / decoder.plan (default MODEL/engines)")
    g = p.add_argument_group("optimization profile (TensorRT min/opt/max shapes)")
    g.add_argument("--profile-min-size", type=parse_size, metavar="HxW", help="smallest HxW (default: 8*grid, padded)")
    g.add_argument("--profile-opt-size", type=parse_size, metavar="HxW",
                   help="HxW to optimise for (default: export_size)")
    g.add_argument("--profile-max-size", type=parse_size, metavar="HxW",
                   help="largest HxW (default: max_size x max_size, padded)")
    g.add_argument("--profile-min-frames", type=int, default=1, help="encoder frame batch: min (default 1)")
    g.add_argument("--profile-opt-frames", type=int, help="encoder frame batch: opt (default T)")
    g.add_argument("--profile-max-frames", type=int, help="encoder frame batch: max (default T)")
    add_precision_arg(p, default="fp16",
                      help="fp32 exports on TensorRT 10: fp16 sets the fp16 builder flag (trtexec --fp16); "
                           "fp16-typed exports and TensorRT 11 always build the precision written in the graph")
    p.add_argument("--workspace-mb", type=int, default=4096)
    p.add_argument("--trt-version", type=int, choices=(10, 11),
                   help="for --print-only: which trtexec to print for (default: both)")
    p.add_argument("--static-plugins", action="store_true",
                   help=f"print --staticPlugins with {STATIC_PLUGIN_LIB_NAME} instead of --dynamicPlugins")
    p.add_argument("--print-only", action="store_true", help="print trtexec/polygraphy lines; do not import TensorRT")
    return p.parse_args(argv)


@cli_main
def main(argv: Optional[Sequence[str]] = None) -> int:
    """Exit 0, 2 (BuildError: bad model directory, plugin library, TensorRT missing); runtime/cli.py."""
    args = parse_args(argv)
    meta = load_meta(args.model)
    profs = profiles(meta, args.profile_min_size, args.profile_opt_size, args.profile_max_size,
                     args.profile_min_frames, args.profile_opt_frames, args.profile_max_frames)
    engine_dir = args.engine_dir or os.path.join(args.model, "engines")
    fp16_flag = args.precision == "fp16"
    majors = [args.trt_version] if args.trt_version else [10, 11]
    for major in majors:
        print(f"# TensorRT {major}: " + describe_precision(meta, major, fp16_flag))
        print("# " + describe_form(meta))
        for cmd in trtexec_commands(args.model, meta, profs, args.plugin_lib, engine_dir, major, fp16_flag,
                                    args.static_plugins):
            print(format_command(cmd))
    print("# compare TensorRT with ONNX Runtime (reference files: python export/polygraphy_ref.py --model "
          f"{args.model})")
    for line in polygraphy_commands(args.model, meta, args.plugin_lib, majors[-1], fp16_flag):
        print(line)
    if args.print_only:
        return 0
    trt = import_tensorrt()
    major = int(trt.__version__.split(".")[0])
    logger = trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")   # NVIDIA's plugins (trt-builtin form)
    if _needs_plugin_library(meta):
        if not args.plugin_lib:
            raise BuildError(f"this export uses the {OUR_PLUGIN.op_type} plugin: pass --plugin-lib "
                             f"PATH/{PLUGIN_LIB_NAME}")
        load_plugin_library(trt, args.plugin_lib, logger)
    elif _form(meta) == MSDA_TRT_BUILTIN:
        check_builtin_creator(trt, meta)
    strongly = major >= 11 or meta.get("dtype") == "fp16"
    for graph in ("encoder", "decoder"):
        out = os.path.join(engine_dir, f"{graph}.plan")
        print(f"building {out} with TensorRT {trt.__version__}: {describe_precision(meta, major, fp16_flag)}",
              flush=True)
        build_engine(trt, os.path.join(args.model, meta[graph]["file"]), profs[graph], out, strongly,
                     fp16_flag and not strongly, args.workspace_mb, logger)
    print(f"engines written to {engine_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
