#!/usr/bin/env python
"""Write a Triton Inference Server model repository from an exported model directory.

    python export/to_triton.py --model DIR --output REPO [--triton-backend onnxruntime|tensorrt|python] [options]
    python -m export.to_triton ...        (or the console script mdqe-triton)

REPO gets (docs/serving.md):
    mdqe_encoder/   config.pbtxt + 1/model.onnx (onnxruntime) | 1/model.plan (tensorrt)
                    | 1/model.py + encoder.onnx + export.json (python: our ONNX Runtime session)
    mdqe_decoder/   the same for the decoder
    mdqe_video/     config.pbtxt (Python backend, sequence batcher) + 1/model.py + 1/export.json:
                    one stream per correlation id; frames in, per-frame instances out; BLS to the two above
    README.md       how to start the server (CPU test here, GPU server)

Every config.pbtxt is parsed back with tritonclient's model-config protobuf (exit 3 if one does
not parse). Bad input (missing model directory, engines or plugin library; a plugin-form graph for
the onnxruntime backend) prints one line and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from typing import Dict, List, Optional, Sequence

if __name__ == "__main__" and not __package__:
    # `python export/to_triton.py` puts export/, not the folder holding the packages, first on
    # sys.path: put that folder there instead and run this file as the module export.to_triton.
    import runpy
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runpy.run_module("export.to_triton", run_name="__main__", alter_sys=True)
    raise SystemExit(0)   # not reached: the module's own __main__ block exits

from runtime.atomic import write_text  # noqa: E402
from dataclasses import asdict  # noqa: E402

from runtime.cli import (EXIT_VERIFY, add_model_arg, add_output_arg, add_plugin_lib_arg,  # noqa: E402
                         add_providers_arg, add_threads_arg, cli_main, error, make_parser)
from runtime.contract import (DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS,  # noqa: E402
                              INT64_TENSORS, MSDA_PLUGIN, OUR_PLUGIN, TENSOR_RANKS,
                              TRT_PLUGIN_LIBRARY, TRT_PLUGIN_STATIC_LIBRARY, plugin_identity)
from runtime.errors import UsageError  # noqa: E402
from runtime.model_dir import load_model_dir, require_graph_files  # noqa: E402
from runtime.serving import protocol as P  # noqa: E402
from runtime.infer import add_postprocess_args, postprocess_from_args  # noqa: E402

# Triton's TensorRT backend only dlopen()s the libraries of --backend-config=tensorrt,plugins=...
# (then calls initLibNvInferPlugins for NVIDIA's own): the library must register its creator when
# loaded, i.e. the self-registering variant, not the getCreators() one (docs/native.md).

BACKENDS = ("onnxruntime", "tensorrt", "python")


def _dims(meta_section: dict, kind: str, name: str) -> List[int]:
    """Dims of a tensor from export.json (named dims -> -1); rank from the contract if absent."""
    shape = ((meta_section or {}).get(kind) or {}).get(name) if isinstance((meta_section or {}).get(kind), dict) else None
    if not shape:
        return [-1] * TENSOR_RANKS[name]
    return [int(d) if isinstance(d, int) else -1 for d in shape]


def _tensor_block(kind: str, names: Sequence[str], meta_section: dict, meta_kind: str) -> str:
    rows = []
    for n in names:
        dt = "TYPE_INT64" if n in INT64_TENSORS else "TYPE_FP32"
        rows.append(f'  {{ name: "{n}" data_type: {dt} dims: {_dims(meta_section, meta_kind, n)} }}')
    return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"


def _params_block(params: Dict[str, str]) -> str:
    out = []
    for k, v in params.items():
        out.append(f'parameters {{ key: "{k}" value: {{ string_value: {json.dumps(v)} }} }}\n')
    return "".join(out)


def graph_config(name: str, graph: str, backend: str, meta: dict, instances: int, device: str,
                 inputs: Sequence[str], params: Optional[Dict[str, str]] = None) -> str:
    """config.pbtxt of mdqe_encoder / mdqe_decoder."""
    section = meta.get(graph) or {}
    outputs = ENCODER_OUTPUTS if graph == "encoder" else DECODER_OUTPUTS
    head = f'name: "{name}"\n'
    if backend == "onnxruntime":
        head += 'platform: "onnxruntime_onnx"\nbackend: "onnxruntime"\ndefault_model_filename: "model.onnx"\n'
    elif backend == "tensorrt":
        head += 'platform: "tensorrt_plan"\nbackend: "tensorrt"\ndefault_model_filename: "model.plan"\n'
    else:
        head += 'backend: "python"\n'
    kind = "KIND_GPU" if (device == "gpu" or backend == "tensorrt") else "KIND_CPU"
    text = (head + "max_batch_size: 0\n"
            + _tensor_block("input", inputs, section, "inputs")
            + _tensor_block("output", outputs, section, "outputs")
            + f"instance_group [ {{ kind: {kind} count: {int(instances)} }} ]\n"
            + _params_block(params or {}))
    return text


def video_config(name: str, params: Dict[str, str], idle_s: float, max_streams: int, instances: int) -> str:
    """config.pbtxt of mdqe_video: Python backend under the sequence batcher (oldest strategy)."""
    outs = ",\n".join(f'  {{ name: "{n}" data_type: TYPE_{P.OUTPUT_TYPES[n]} dims: {P.OUTPUT_DIMS.get(n, [-1])} }}'
                      for n in P.OUTPUTS)
    return (f'name: "{name}"\nbackend: "python"\nmax_batch_size: 0\n'
            "sequence_batching {\n"
            f"  max_sequence_idle_microseconds: {int(idle_s * 1e6)}\n"
            f"  oldest {{ max_candidate_sequences: {int(max_streams)} max_queue_delay_microseconds: 0 }}\n"
            "  control_input [\n"
            f'    {{ name: "{P.START}" control [ {{ kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] }} ] }},\n'
            f'    {{ name: "{P.END}" control [ {{ kind: CONTROL_SEQUENCE_END int32_false_true: [ 0, 1 ] }} ] }}\n'
            "  ]\n}\n"
            "input [\n"
            f'  {{ name: "{P.FRAME}" data_type: TYPE_UINT8 dims: [ -1, -1, 3 ] }},\n'
            f'  {{ name: "{P.FRAME_INDEX}" data_type: TYPE_INT64 dims: [ 1 ] }}\n]\n'
            f"output [\n{outs}\n]\n"
            f"instance_group [ {{ kind: KIND_CPU count: {int(instances)} }} ]\n"
            + _params_block(params))


def parse_config(text: str, where: str = "config.pbtxt"):
    """Parse config.pbtxt text with tritonclient's model-config protobuf; returns the ModelConfig."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise UsageError(f"checking {where} needs tritonclient[grpc] (pip install .[serve]): {e}") from e
    return text_format.Parse(text, model_config_pb2.ModelConfig())


MODEL_PY = '''"""Generated by export/to_triton.py: the model lives in the mdqe-deploy package ({module})."""
from {module} import {cls} as TritonPythonModel  # noqa: F401
'''


def _readme(args, spec, repo_name: str, msda: str, dec_inputs: List[str]) -> str:
    plugin = os.path.abspath(args.plugin_lib) if args.plugin_lib else f"/path/to/{TRT_PLUGIN_STATIC_LIBRARY}"
    trt_line = ""
    if args.backend == "tensorrt":
        if msda == MSDA_PLUGIN:
            trt_line = (f"\nThe engines hold {OUR_PLUGIN.op_type} plugin layers: the TensorRT backend loads the plugin "
                        f"library named on the command line:\n\n    --backend-config=tensorrt,plugins=\"{plugin}\"\n\n"
                        f"(or `LD_PRELOAD` it). Triton only loads the library, so it must be the self-registering "
                        f"`{TRT_PLUGIN_STATIC_LIBRARY}`, not `{TRT_PLUGIN_LIBRARY}` (which registers nothing on load). "
                        "A library that fails to load is only logged; the engine then fails to deserialize "
                        "(plugin creator not found). With `--msda trt-builtin` engines (NVIDIA's "
                        "MultiscaleDeformableAttnPlugin_TRT from libnvinfer_plugin, which the TensorRT backend "
                        "initialises itself) no library is needed.\n")
        else:
            trt_line = (f"\nThese engines use the `{msda}` MSDeformAttn form: no plugin library is needed "
                        f"(a plugin-form engine would need `--backend-config=tensorrt,plugins=\"{plugin}\"`).\n")
    return f"""# MDQE Triton model repository

Generated by `python export/to_triton.py --model {args.model} --output {args.output} --triton-backend {args.backend}`
from model `{spec.model_name or '?'}` (T = {spec.num_frames} frames per clip, {spec.num_classes} classes,
MSDeformAttn form `{msda}`). Layout and protocol: docs/serving.md of mdqe-deploy.

| model | backend | what |
|---|---|---|
| `{P.ENCODER_MODEL}` | {args.backend} | encoder, one frame: `images [N,3,H,W]` -> per-frame features |
| `{P.DECODER_MODEL}` | {args.backend} | decoder, one clip of T frames -> `pred_logits, pred_boxes, pred_masks, pred_embeds, pred_queries` |
| `{P.VIDEO_MODEL}` | python, sequence batcher | one stream per correlation id: frames in, per-frame instances (track id, class, score, RLE) out; BLS to the two above; idle streams evicted after {args.stream_idle_s:g} s; at most {args.max_streams} streams |

The Python models import the `runtime` package of mdqe-deploy: the Python that runs them
(the first `python3` on `PATH` of the server) needs `pip install mdqe-deploy` (or
`PYTHONPATH` = a checkout), numpy, OpenCV, scipy, pycocotools and onnxruntime.
Decoder inputs used: {', '.join(dec_inputs)}.

## CPU, with the tritonserver bundled in nvidia-pytriton (how the tests run it)

Only the Python backend is bundled, so generate the repository with `--triton-backend python`, then

    pip install -c constraints.txt ".[serve]" && pip install --no-deps nvidia-pytriton==0.7.0
    python -m runtime.serving.server --repo {args.output} --grpc-port 8001 --http-port 8000 --metrics-port 8002
    python -m runtime.client --url 127.0.0.1:8001 --video VIDEO.mp4 --output out/run

(`runtime.serving.server` copies the bundled backends, adds the Python-backend stub of this
Python, sets `LD_LIBRARY_PATH`/`PATH`/`PYTHONPATH`, binds 127.0.0.1 and stops the server on Ctrl-C.)

## GPU server (NGC container `nvcr.io/nvidia/tritonserver:<yy.mm>-py3`)

    docker run --gpus all --rm -p 8000:8000 -p 8001:8001 -p 8002:8002 \\
        -v $PWD/{repo_name}:/models -v $PWD/mdqe-deploy:/opt/mdqe nvcr.io/nvidia/tritonserver:<yy.mm>-py3 \\
        bash -c "pip install /opt/mdqe && tritonserver --model-repository /models{' --backend-config=tensorrt,plugins=' + chr(34) + plugin + chr(34) if (args.backend == 'tensorrt' and msda == MSDA_PLUGIN) else ''}"

The TensorRT engines must be built with the same TensorRT version as the container's
(`export/build_engines.py`), on the same GPU model.
{trt_line}"""


def build_repository(args) -> str:
    spec = load_model_dir(args.model)
    meta = spec.raw
    msda = spec.msda
    out = os.path.abspath(args.output)
    if os.path.exists(out) and os.listdir(out) and not args.force:
        raise UsageError(f"output {args.output} exists and is not empty (use --force to replace it)")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(out) + ".", dir=parent)
    try:
        dec_inputs = [s.strip() for s in args.decoder_inputs.split(",")] if args.decoder_inputs else list(DECODER_INPUTS)
        bad = [n for n in dec_inputs if n not in DECODER_INPUTS]
        if bad:
            raise UsageError(f"--decoder-inputs: {bad} are not decoder inputs ({', '.join(DECODER_INPUTS)})")
        configs: Dict[str, str] = {}
        for graph, name in (("encoder", P.ENCODER_MODEL), ("decoder", P.DECODER_MODEL)):
            vdir = os.path.join(tmp, name, "1")
            os.makedirs(vdir)
            inputs = list(ENCODER_INPUTS) if graph == "encoder" else dec_inputs
            params = None
            if args.backend == "onnxruntime":
                require_graph_files(spec)
                ident = plugin_identity(msda)
                if ident is not None:
                    raise UsageError(f"{args.model} holds {msda}-form graphs ({ident.op_type} nodes), which Triton's "
                                     "onnxruntime backend cannot run: re-export with --msda onnx, or use "
                                     "--triton-backend python (our ONNX Runtime session with the custom op) or tensorrt")
                shutil.copy2(spec.encoder_path if graph == "encoder" else spec.decoder_path,
                             os.path.join(vdir, "model.onnx"))
            elif args.backend == "tensorrt":
                engine_dir = args.engine_dir or os.path.join(args.model, "engines")
                src = None
                for d in (engine_dir, args.model):
                    for ext in (".plan", ".engine"):
                        if os.path.isfile(os.path.join(d, graph + ext)):
                            src = os.path.join(d, graph + ext)
                            break
                    if src:
                        break
                if src is None:
                    raise UsageError(f"no TensorRT engine {graph}.plan in {engine_dir} or {args.model} "
                                     "(build them with export/build_engines.py, or pass --engine-dir)")
                if args.plugin_lib and os.path.basename(args.plugin_lib) == TRT_PLUGIN_LIBRARY:
                    raise UsageError(f"--plugin-lib {args.plugin_lib}: Triton only loads plugin libraries, and "
                                     f"{TRT_PLUGIN_LIBRARY} registers nothing on load; use {TRT_PLUGIN_STATIC_LIBRARY}")
                shutil.copy2(src, os.path.join(vdir, "model.plan"))
            else:
                require_graph_files(spec)
                shutil.copy2(spec.encoder_path if graph == "encoder" else spec.decoder_path,
                             os.path.join(vdir, spec.encoder_file if graph == "encoder" else spec.decoder_file))
                shutil.copy2(os.path.join(args.model, "export.json"), os.path.join(vdir, "export.json"))
                write_text(os.path.join(vdir, "model.py"),
                           MODEL_PY.format(module="runtime.serving.python_models", cls="GraphModel"))
                params = {"graph": graph, "providers": args.providers or "cpu", "threads": str(args.threads)}
            configs[name] = graph_config(name, graph, args.backend, meta, args.instances, args.instance_kind, inputs,
                                         params)
        vdir = os.path.join(tmp, P.VIDEO_MODEL, "1")
        os.makedirs(vdir)
        shutil.copy2(os.path.join(args.model, "export.json"), os.path.join(vdir, "export.json"))
        write_text(os.path.join(vdir, "model.py"), MODEL_PY.format(module="runtime.serving.python_models",
                                                                   cls="VideoModel"))
        filt, trk = postprocess_from_args(args, spec)       # the runtime.infer flags and presets
        pipeline = {"filter": asdict(filt), "tracker": asdict(trk),
                    "min_pair_score": args.min_pair_score, "min_pairs": args.min_pairs}
        configs[P.VIDEO_MODEL] = video_config(P.VIDEO_MODEL, {
            "pipeline": json.dumps(pipeline, sort_keys=True), "stream_idle_s": f"{args.stream_idle_s:g}",
            "max_streams": str(args.max_streams), "encoder_model": P.ENCODER_MODEL, "decoder_model": P.DECODER_MODEL,
            "decoder_inputs": json.dumps(dec_inputs), "class_names": json.dumps(list(spec.class_names)),
            "num_frames": str(spec.num_frames)}, args.stream_idle_s, args.max_streams, args.video_instances)
        for name, text in configs.items():
            parse_config(text, f"{name}/config.pbtxt")      # raises on a config Triton would not read
            write_text(os.path.join(tmp, name, "config.pbtxt"), text)
        write_text(os.path.join(tmp, "README.md"), _readme(args, spec, os.path.basename(out), msda, dec_inputs))
        if os.path.exists(out):
            old = out + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("python export/to_triton.py", __doc__.split("\n\n")[0],
                    also=("python -m export.to_triton", "mdqe-triton"))
    add_model_arg(p, required=True)
    add_output_arg(p, help="model repository to write")
    p.add_argument("--triton-backend", dest="backend", default="python", choices=BACKENDS,
                   help="encoder/decoder models: Triton's onnxruntime backend, tensorrt_plan engines, or "
                        "Python-backend models running our ONNX Runtime sessions (the only one the bundled "
                        "tritonserver of nvidia-pytriton can serve)")
    p.add_argument("--engine-dir", default=None, help="tensorrt: folder with encoder.plan/decoder.plan "
                                                      "(default MODEL/engines, then MODEL)")
    add_plugin_lib_arg(p, help=f"tensorrt: path of {TRT_PLUGIN_STATIC_LIBRARY} (the self-"
                                                      "registering build) on the server, named in the README's "
                                                      "server command (plugin-form engines)")
    p.add_argument("--decoder-inputs", default=None,
                   help="comma list of the decoder inputs to send (an engine of the onnx-form decoder may lack "
                        "spatial_shapes,level_start_index); default all of INTERFACES.md section 5")
    p.add_argument("--instance-kind", default="cpu", choices=("cpu", "gpu"),
                   help="Triton instance kind (KIND_CPU / KIND_GPU) of the encoder/decoder (tensorrt is always GPU)")
    add_providers_arg(p, help="python: ONNX Runtime providers (cpu, auto, or a comma list)")
    add_threads_arg(p, help="python: ONNX Runtime intra-op threads")
    p.add_argument("--instances", type=int, default=1, help="instances of the encoder and of the decoder")
    p.add_argument("--video-instances", type=int, default=1, help="instances of mdqe_video")
    p.add_argument("--stream-idle-s", type=float, default=60.0, help="a stream silent this long is evicted")
    p.add_argument("--max-streams", type=int, default=64, help="streams mdqe_video holds at most (per instance)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --output")
    add_postprocess_args(p)                 # the same preset and flags as python -m runtime.infer
    g = p.add_argument_group("per-video output (as python -m runtime.infer)")
    g.add_argument("--min-pair-score", type=float, default=0.05)
    g.add_argument("--min-pairs", type=int, default=10)
    return p


@cli_main
def main(argv=None) -> int:
    """Exit 0, 2 (UsageError, ModelDirError, ParamError: bad input), 3 (a generated config.pbtxt does
    not parse); runtime/cli.py."""
    args = build_parser().parse_args(argv)
    if args.max_streams < 1 or args.stream_idle_s <= 0 or args.instances < 1 or args.video_instances < 1:
        raise UsageError("--max-streams, --instances, --video-instances must be >= 1 and --stream-idle-s > 0")
    try:
        out = build_repository(args)
    except Exception as e:   # a config that tritonclient's protobuf rejects: verification failed
        if type(e).__name__ == "ParseError":
            return error(f"generated config does not parse: {e}", EXIT_VERIFY)
        raise
    print(json.dumps({"repository": out, "backend": args.backend,
                      "models": [P.ENCODER_MODEL, P.DECODER_MODEL, P.VIDEO_MODEL]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
