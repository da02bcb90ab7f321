"""Python-backend models of a generated Triton repository (export/to_triton.py writes a two-line
``model.py`` that imports one of these classes).

- ``GraphModel``: ``mdqe_encoder`` / ``mdqe_decoder`` (``--backend python``): one ONNX Runtime
  session of ``encoder.onnx`` or ``decoder.onnx`` (tensor names of docs/INTERFACES.md section 5).
- ``VideoModel``: the stateful ``mdqe_video`` under the sequence batcher. One
  ``runtime.pipeline.StreamState`` per correlation id (preprocessing, clip buffer, per-clip
  filtering, tracker and RLE are the runtime's own); the encoder and decoder run in the
  ``mdqe_encoder`` / ``mdqe_decoder`` models through BLS. Protocol: runtime/serving/protocol.py.

Stream life: START creates the state, END (or an idle timeout, ``stream_idle_s``) frees it.
A bad request (wrong frame shape, frame index out of order, unknown stream, a second START
beyond ``max_streams``) gets an error naming the problem and the stream; it changes no state,
neither of its own stream nor of any other.

numpy 2: the Python-backend stub of nvidia-pytriton 0.7.0 is built against the numpy 1 ABI;
under numpy 2 ``Tensor.as_numpy()`` and ``Tensor(name, array)`` copy wrong bytes (seen here:
zero-sized outputs, repeated first elements). DLPack does not depend on numpy's ABI, so every
tensor goes through ``np.from_dlpack`` / ``Tensor.from_dlpack`` (``_np`` / ``_tensor``).
"""
from __future__ import annotations

import json
import os
import threading
import time
from typing import Dict, List, Optional

import numpy as np

from ..backends.base import Backend, valid_hw_or_full
from ..clip_filter import FilterParams
from ..contract import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS, VALID_HW, plugin_identity
from ..model_dir import load_model_dir
from ..pipeline import StreamState
from ..tracker import TrackerParams, select_pairs
from . import protocol as P


def _pb():
    import triton_python_backend_utils as pb_utils   # only inside the Python-backend stub
    return pb_utils


def _np(tensor) -> np.ndarray:
    """A Triton tensor as a numpy array of its own (copied out of the shared memory)."""
    return np.array(np.from_dlpack(tensor), copy=True)


def _tensor(name: str, array: np.ndarray):
    a = np.ascontiguousarray(array)
    if a.size == 0:          # DLPack of an empty array: give it a valid (non-null) buffer
        a = np.empty(a.shape, a.dtype)
    return _pb().Tensor.from_dlpack(name, a)


def _params(args) -> Dict[str, str]:
    cfg = json.loads(args["model_config"])
    return {k: v.get("string_value", "") for k, v in (cfg.get("parameters") or {}).items()}


def _version_dir(args) -> str:
    return os.path.join(args["model_repository"], str(args["model_version"]))


def _error(msg: str, invalid: bool = True):
    pb = _pb()
    code = getattr(pb.TritonError, "INVALID_ARG", None) if invalid else None
    err = pb.TritonError(msg, code) if code is not None else pb.TritonError(msg)
    return pb.InferenceResponse(error=err)


class GraphModel:
    """mdqe_encoder / mdqe_decoder as ONNX Runtime sessions (parameters: graph, providers, threads)."""

    def initialize(self, args):
        params = _params(args)
        self.graph = params.get("graph", "encoder")
        folder = _version_dir(args)
        spec = load_model_dir(folder)
        path = spec.encoder_path if self.graph == "encoder" else spec.decoder_path
        import onnxruntime as ort

        from ..backends.ort_backend import resolve_providers
        providers = resolve_providers(params.get("providers") or None, ort.get_available_providers())
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if int(params.get("threads") or 0):
            so.intra_op_num_threads = int(params["threads"])
        if plugin_identity(spec.msda) is not None:           # plugin / trt-builtin custom nodes
            from ..native.ort_ops import create_session         # as runtime.backends.ort_backend does
            self.session = create_session(path, providers=providers, sess_options=so)
        else:
            self.session = ort.InferenceSession(path, sess_options=so, providers=providers)
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        self.outputs = [o.name for o in self.session.get_outputs()]
        expected = ENCODER_INPUTS if self.graph == "encoder" else DECODER_INPUTS
        missing = [n for n in expected if n not in self.inputs]
        if missing:
            raise ValueError(f"{path}: inputs {missing} missing (docs/INTERFACES.md section 5)")
        self._types = {i.name: (np.int64 if "int64" in i.type else np.float32) for i in self.inputs.values()}

    def execute(self, requests):
        pb = _pb()
        responses = []
        for r in requests:
            try:
                feed = {}
                for name, t in self._types.items():
                    x = pb.get_input_tensor_by_name(r, name)
                    if x is None:
                        raise ValueError(f"input {name} missing")
                    feed[name] = _np(x).astype(t, copy=False)
                outs = self.session.run(self.outputs, feed)
                responses.append(pb.InferenceResponse([_tensor(n, o) for n, o in zip(self.outputs, outs)]))
            except Exception as e:     # ONNX Runtime raises its own types; answer this request only
                responses.append(_error(f"{self.graph}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
        return responses

    def finalize(self):
        self.session = None


class BlsBackend(Backend):
    """A runtime backend whose encode/decode are BLS calls to the encoder/decoder models."""

    kind = "triton-bls"

    def __init__(self, spec, encoder: str, decoder: str, decoder_inputs: List[str]):
        super().__init__(spec)
        self.encoder, self.decoder, self.decoder_inputs = encoder, decoder, decoder_inputs

    def _call(self, model: str, inputs: Dict[str, np.ndarray], outputs) -> Dict[str, np.ndarray]:
        pb = _pb()
        req = pb.InferenceRequest(model_name=model, requested_output_names=list(outputs),
                                  inputs=[_tensor(n, a) for n, a in inputs.items()])
        resp = req.exec()
        if resp.has_error():
            raise RuntimeError(f"{model}: {resp.error().message()}")
        return {n: _np(pb.get_output_tensor_by_name(resp, n)) for n in outputs}

    def encode(self, images: np.ndarray, valid_hw: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        valid_hw = valid_hw_or_full(images, valid_hw)
        out = self._call(self.encoder, {"images": np.ascontiguousarray(images, np.float32), VALID_HW: valid_hw},
                         ENCODER_OUTPUTS)
        out[VALID_HW] = valid_hw
        return out

    def decode(self, feats: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
        return self._call(self.decoder, {n: feats[n] for n in self.decoder_inputs}, DECODER_OUTPUTS)


class _Stream:
    def __init__(self, state: StreamState):
        self.state = state
        self.last_seen = time.monotonic()


class VideoModel:
    """mdqe_video: stateful near-online VIS, one StreamState per correlation id."""

    def initialize(self, args):
        params = _params(args)
        self.name = args.get("model_name", P.VIDEO_MODEL)
        self.spec = load_model_dir(_version_dir(args))
        opts = json.loads(params.get("pipeline") or "{}")
        self.filter = FilterParams(**opts.get("filter", {}))
        self.tracker = TrackerParams(**opts.get("tracker", {}))
        self.min_pair_score = float(opts.get("min_pair_score", 0.05))
        self.min_pairs = int(opts.get("min_pairs", 10))
        self.idle_s = float(params.get("stream_idle_s") or 60)
        self.max_streams = int(params.get("max_streams") or 64)
        dec_inputs = json.loads(params.get("decoder_inputs") or "null") or list(DECODER_INPUTS)
        self.backend = BlsBackend(self.spec, params.get("encoder_model") or P.ENCODER_MODEL,
                                  params.get("decoder_model") or P.DECODER_MODEL, dec_inputs)
        self.streams: Dict[int, _Stream] = {}
        self.lock = threading.Lock()
        self.evicted = 0
        self._metrics()
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="mdqe-evict", daemon=True)
        self._sweeper.start()

    # -- observability --------------------------------------------------------
    def _metrics(self):
        pb = _pb()
        self.m_open = self.m_evicted = self.m_frames = None
        if not hasattr(pb, "MetricFamily"):
            return
        labels = {"model": self.name}
        # the families must outlive their metrics: keep both
        self._families = [
            pb.MetricFamily("mdqe_open_streams", "streams held by mdqe_video", pb.MetricFamily.GAUGE),
            pb.MetricFamily("mdqe_evicted_streams", "streams evicted after the idle timeout", pb.MetricFamily.COUNTER),
            pb.MetricFamily("mdqe_frames", "frames processed by mdqe_video", pb.MetricFamily.COUNTER)]
        self.m_open, self.m_evicted, self.m_frames = (f.Metric(labels=labels) for f in self._families)

    def _update_open(self):
        if self.m_open is not None:
            self.m_open.set(float(len(self.streams)))

    # -- eviction ---------------------------------------------------------------
    def _sweep(self) -> None:
        now = time.monotonic()
        with self.lock:
            for cid in [c for c, s in self.streams.items() if now - s.last_seen > self.idle_s]:
                del self.streams[cid]
                self.evicted += 1
                if self.m_evicted is not None:
                    self.m_evicted.increment(1)
            self._update_open()

    def _sweep_loop(self) -> None:
        period = max(0.05, min(1.0, self.idle_s / 4))
        while not self._stop.wait(period):
            self._sweep()

    # -- requests ---------------------------------------------------------------
    def _flag(self, request, name: str) -> bool:
        t = _pb().get_input_tensor_by_name(request, name)
        return t is not None and bool(_np(t).reshape(-1)[0])

    def _items(self, st: StreamState, f: int):
        out = []
        for tid, _mask, rle in st.final(f):
            score, cls = st.tracker.display_info(tid)
            out.append((tid, cls, score, rle))
        return out

    def _one(self, request):
        pb = _pb()
        cid = request.correlation_id()
        start, end = self._flag(request, P.START), self._flag(request, P.END)
        ft, it = pb.get_input_tensor_by_name(request, P.FRAME), pb.get_input_tensor_by_name(request, P.FRAME_INDEX)
        if ft is None or it is None:
            return _error(f"stream {cid}: request needs inputs {P.FRAME} and {P.FRAME_INDEX}")
        frame, index = _np(ft), _np(it).reshape(-1)
        if index.size != 1:
            return _error(f"stream {cid}: {P.FRAME_INDEX} must hold one value, got shape {list(index.shape)}")
        index = int(index[0])
        empty = frame.size == 0
        if frame.ndim != 3 or frame.shape[2] != 3 or (empty and not end):
            if end:
                self._drop(cid)
            return _error(f"stream {cid}: {P.FRAME} must be a BGR uint8 frame [H,W,3] with H,W > 0 "
                          f"(an empty frame only with END), got shape {list(frame.shape)}")
        with self.lock:
            s = self.streams.get(cid)
            if start:
                if s is None and len(self.streams) >= self.max_streams:
                    return _error(f"stream {cid}: {self.name} already holds max_streams={self.max_streams} streams; "
                                  f"end one or raise max_streams (export/to_triton.py --max-streams)")
                s = _Stream(StreamState(self.backend, self.filter, self.tracker))
            elif s is None:
                return _error(f"stream {cid} is unknown to {self.name}: never started, ended, or evicted after "
                              f"{self.idle_s:g} s idle; send its first frame with sequence_start")
            expected = s.state.n_frames
            if index != expected:
                if end:
                    self._drop_locked(cid)
                return _error(f"stream {cid}: frame index {index} out of order, expected {expected}")
            if start:
                self.streams[cid] = s            # a START on a live id restarts that stream
            s.last_seen = time.monotonic()
            self._update_open()
        st = s.state
        try:
            frames = []
            if not empty:
                f = st.push(frame)
                if self.m_frames is not None:
                    self.m_frames.increment(1)
                if f is not None:
                    frames.append((f, self._items(st, f)))
            pairs = []
            if end:
                if st.n_frames == 0:
                    raise ValueError("END without any frame")
                frames += [(f, self._items(st, f)) for f in st.finish()]
                pairs = select_pairs(st.tracker.summaries(), self.min_pair_score, self.min_pairs)
        except Exception as e:
            self._drop(cid)
            return _error(f"stream {cid}: {type(e).__name__}: {e}; the stream was dropped", invalid=False)
        s.last_seen = time.monotonic()
        if end:
            self._drop(cid)
        geom = st.pre.geometry
        size = geom.original if geom is not None else (0, 0)
        outs = P.pack_results(frames, size, pairs, open_streams=len(self.streams))
        return pb.InferenceResponse([_tensor(n, outs[n]) for n in P.OUTPUTS])

    def _drop_locked(self, cid: int) -> None:
        self.streams.pop(cid, None)
        self._update_open()

    def _drop(self, cid: int) -> None:
        with self.lock:
            self._drop_locked(cid)

    def execute(self, requests):
        return [self._one(r) for r in requests]

    def finalize(self):
        self._stop.set()
        self._sweeper.join(timeout=5)
        with self.lock:
            self.streams.clear()
