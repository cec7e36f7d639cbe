"""Our networks against the real official score_sde_pytorch, side by side (``bench_nets.py --official``).

Both sides live in one process, built with identical weights (ours from the official state dict
through ``load_official_state``), checked equal first (eval outputs and input gradients, max
relative error < 1e-4), then timed interleaved round-robin (official, ours, each ``--ours``
variant, official, ...) so that load from other processes hits every side alike:

- ``train``: one optimisation step. Official: ``losses.get_step_fn`` (DSM loss + backward + lr
  warm-up + grad clip + Adam + EMA), as ``run_lib.train``. Ours: the project's ``ScoreModule``
  driven as Lightning's automatic optimisation does (zero_grad, training_step, backward,
  on_before_optimizer_step, clip_grad_norm_, Adam, LR schedule, on_train_batch_end with the EMA);
  the Trainer loop itself is not included (``sgm train`` adds it).
- ``infer``: one no-grad forward in eval mode.
- ``e2e``: ``sgm train`` itself (a subprocess: the Trainer loop, data loader with the config's
  workers, logging; CIFAR-10 files of random pixels in the real format, the config's settings
  otherwise) against the official raw step loop (``run_lib.train``'s inner step on a fixed batch,
  no data loader), each the median img/s over steps after ``--warmup``; our raw step loop runs
  step by step in turn with the official one, so the end-to-end ratio stands next to the
  raw-step ratio.
- Speed rounds run with freed memory kept in the process (:mod:`sgm_lightning.training.allocator`,
  as ``sgm train``), for both sides alike: with glibc's defaults each step page-faults its
  activations back in (about 200,000 faults and 1-3 s of system time per step here, more for the
  official side), which made same-round ratios swing by +-15%; ``--glibc-defaults`` measures that.
- ``memory``: peak growth of a second training step. CPU: the RSS high-water mark with glibc's mmap
  threshold fixed at 64 KiB so freed tensors leave RSS at once, one side per fresh process. CUDA:
  ``max_memory_allocated`` growth in this process, after the timed rounds (exact there, and a
  compiled variant is already compiled).
- ``--profile``: one more training step per side under torch.profiler (wall time, GPU busy time
  and kernel count on CUDA, the top operators and kernels).

Every report states the CPU (model and SIMD flags), torch, threads, batch, the official commit and
the load average. ``ml_collections`` (needed by the official configs) is replaced by a minimal
attribute-dict stand-in when it is not installed.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import types

OFFICIAL_CONFIGS = {"ncsnpp": "configs.ve.cifar10_ncsnpp_continuous", "ddpmpp": "configs.vp.cifar10_ddpmpp_continuous"}
PROJECT_CONFIGS = {"ncsnpp": "cifar10_ncsnpp.yaml", "ddpmpp": "cifar10_ddpmpp.yaml"}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- the official code ------------------------------------------------------------------------
def official_dir(path: str) -> str:
    """``path`` itself when it holds ``models/ncsnpp.py``, else its ``score_sde_pytorch`` child."""
    for cand in (path, os.path.join(path, "score_sde_pytorch")):
        if os.path.isfile(os.path.join(cand, "models", "ncsnpp.py")):
            return os.path.abspath(cand)
    raise SystemExit(f"--official {path}: no score_sde_pytorch (models/ncsnpp.py) there")


def official_commit(path: str) -> str:
    try:  # only a checkout of its own: a copy inside another repository would report that one's HEAD
        top, head = subprocess.run(["git", "-C", path, "rev-parse", "--show-toplevel", "--short", "HEAD"],
                                   capture_output=True, text=True, check=True).stdout.split()
        if os.path.realpath(top) == os.path.realpath(path):
            return head
    except (OSError, ValueError, subprocess.CalledProcessError):
        pass
    for readme in glob.glob(os.path.join(path, "..", "README*")) + glob.glob(os.path.join(path, "README*")):
        m = re.search(r"commit ([0-9a-f]{7,40})", open(readme, encoding="utf-8", errors="replace").read())
        if m:
            return m.group(1)
    return "unknown"


def _ml_collections_stand_in() -> None:
    try:
        import ml_collections  # noqa: F401
        return
    except ImportError:
        pass

    class ConfigDict(dict):  # what the official config files use: attribute get/set, to_dict
        def __getattr__(self, k):
            try:
                return self[k]
            except KeyError:
                raise AttributeError(k) from None

        def __setattr__(self, k, v):
            self[k] = v

        def to_dict(self):
            return {k: v.to_dict() if isinstance(v, ConfigDict) else v for k, v in self.items()}

    sys.modules["ml_collections"] = types.SimpleNamespace(ConfigDict=ConfigDict)


def import_official(path: str, device: str):
    d = official_dir(path)
    if d not in sys.path:
        sys.path.insert(0, d)
    _ml_collections_stand_in()
    note = ""
    if device.startswith("cuda"):
        import importlib

        op = importlib.import_module("op.upfirdn2d")  # the module (the package exports its function by that name)
        if getattr(op, "upfirdn2d_op", None) is None:  # the CUDA extension is not built: native on CUDA too
            def upfirdn2d(x, k, up=1, down=1, pad=(0, 0)):  # the official signature
                return op.upfirdn2d_native(x, k, up, up, down, down, pad[0], pad[1], pad[0], pad[1])

            import models.up_or_down_sampling as uds

            op.upfirdn2d = uds.upfirdn2d = upfirdn2d
            note = "official FIR runs upfirdn2d_native on CUDA (extension not built)"
    return d, note


def official_config(net: str, batch: int, device: str):
    import importlib

    import torch

    cfg = importlib.import_module(OFFICIAL_CONFIGS[net]).get_config()
    cfg.training.batch_size = batch
    cfg.device = torch.device(device)
    return cfg


class Official:
    """The official training state and step, as ``run_lib.train`` builds them."""

    def __init__(self, net: str, batch: int, device: str):
        import losses
        import sde_lib
        import torch
        from models import ncsnpp  # noqa: F401  (registers the model)
        from models import utils as mutils
        from models.ema import ExponentialMovingAverage

        torch.manual_seed(0)
        self.cfg = cfg = official_config(net, batch, device)
        self.model = mutils.create_model(cfg)
        self.ema = ExponentialMovingAverage(self.model.parameters(), decay=cfg.model.ema_rate)
        self.optimizer = losses.get_optimizer(cfg, self.model.parameters())
        self.state = dict(optimizer=self.optimizer, model=self.model, ema=self.ema, step=0)
        m = cfg.model
        sde = (sde_lib.VESDE(m.sigma_min, m.sigma_max, m.num_scales) if cfg.training.sde.lower() == "vesde"
               else sde_lib.VPSDE(m.beta_min, m.beta_max, m.num_scales))
        self.step_fn = losses.get_step_fn(sde, train=True, optimize_fn=losses.optimization_manager(cfg),
                                          reduce_mean=cfg.training.reduce_mean, continuous=True,
                                          likelihood_weighting=cfg.training.likelihood_weighting)
        self.net = self.model.module

    def step(self, x):
        return float(self.step_fn(self.state, x))


class Ours:
    """``ScoreModule`` (configs/cifar10_*.yaml) with the official weights, stepped as Lightning does.

    ``options``: NCSNpp keyword options, plus step options: ``autocast=bf16`` (the loss and
    forward under bf16 autocast, as ``trainer.precision=bf16-mixed``), ``compile=true``
    (``torch.compile`` of the network; or a mode: ``compile=reduce-overhead`` adds CUDA graphs,
    as ``model.compile_mode``), ``winograd=false`` (NNPACK off: oneDNN for every
    convolution) and ``adam=for_loop|foreach|fused`` (``optim.implementation``).
    """

    def __init__(self, net: str, batch: int, device: str, official_cfg, state_dict, options: dict):
        import contextlib

        import torch

        options = dict(options)
        amp, compiled = options.pop("autocast", None), options.pop("compile", False)
        winograd = bool(options.pop("winograd", True))
        self.nnpack = lambda: torch.backends.nnpack.flags(enabled=winograd)  # a context manager per use
        adam = options.pop("adam", None)
        self.autocast = (torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if amp == "bf16"
                         else contextlib.nullcontext())

        from sgm_lightning.config import load_config
        from sgm_lightning.training import ScoreModule
        from sgm_lightning.nets import NCSNpp
        from sgm_lightning.nets.convert import load_official_state, network_kwargs_from_score_sde

        self.cfg = load_config(os.path.join(ROOT, "configs", PROJECT_CONFIGS[net]),
                               [f"data.batch_size={batch}", "logging.logger=none", "trainer.max_steps=1000",
                                *([f"optim.implementation={adam}"] if adam else []),
                                *(["model.compile=true"] if compiled else []),
                                *([f"model.compile_mode={compiled}"] if compiled not in (False, True) else [])])
        _, kwargs = network_kwargs_from_score_sde(official_cfg)
        self.net = NCSNpp(**kwargs, **options)
        if state_dict is not None:
            load_official_state(self.net, state_dict)
        # model.compile: the module's loss calls its torch.compile'd view of the net, as in sgm train
        self.module = m = ScoreModule(self.cfg, net=self.net.to(device)).to(device).train()
        self.forward = m._loss_net
        opt = m.configure_optimizers()
        self.optimizer, self.sched = opt["optimizer"], opt["lr_scheduler"]["scheduler"]
        m.trainer = types.SimpleNamespace(optimizers=[self.optimizer], global_step=0, global_rank=0, local_rank=0,
                                          world_size=1)
        m.log = lambda *a, **k: None  # Lightning's logger connector is not part of this path
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.clip, self.i, self.torch = self.cfg.optim.grad_clip, 0, torch

    def step(self, x):
        m, torch = self.module, self.torch
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast, self.nnpack():
            loss = m.training_step(x, self.i)
            loss.backward()
        m.on_before_optimizer_step(self.optimizer)
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        self.sched.step()
        m.trainer.global_step += 1
        m.on_train_batch_end(loss, x, self.i)
        self.i += 1
        return float(loss)


def parse_variants(specs: list[str]) -> dict[str, dict]:
    """``["lean:recompute_norm_act=true,memory_format=channels_last"]`` -> {"lean": {...}}."""
    import yaml

    out: dict[str, dict] = {"ours": {}}
    for spec in specs:
        name, _, opts = spec.partition(":")
        out[name] = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in opts.split(",") if kv)}
    return out


def inputs(net: str, cfg, batch: int, device: str):
    import torch

    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, 32, 32, generator=g)
    x = x * 2 - 1 if cfg.data.centered else x  # the official data scaler
    labels = (0.01 * (50 / 0.01) ** torch.rand(batch, generator=g) if net == "ncsnpp"
              else torch.rand(batch, generator=g) * 999)
    return x.to(device), labels.to(device)


def check_equal(off: Official, ours: dict, net: str, device: str) -> dict[str, float]:
    """Max relative error of eval outputs and input gradients, ours vs official, batch 4
    (on CUDA in true fp32: TF32 convolutions and matmuls are off for the check)."""
    import torch

    x, labels = inputs(net, off.cfg, 4, device)
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        return _max_rel_errs(off, ours, x, labels)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def _max_rel_errs(off: Official, ours: dict, x, labels) -> dict[str, float]:
    import torch

    def run(model):
        model.eval()
        xx = x.clone().requires_grad_(True)
        out = model(xx, labels)
        (g,) = torch.autograd.grad(out.square().mean(), xx)
        model.train()
        return out.detach(), g

    o_out, o_g = run(off.net)
    errs = {}
    for name, side in ours.items():
        out, g = run(side.net)
        errs[name] = max(float((out - o_out).abs().max() / o_out.abs().max()),
                         float((g - o_g).abs().max() / o_g.abs().max()))
    return errs


def cpu_description() -> str:
    import torch

    model = platform.processor() or "?"
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model in ("?", "x86_64", ""):
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    keep = sorted(f for f in flags if f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16",
                                            "amx_bf16", "amx_tile", "avx_vnni"))
    return (f"{model}; flags {' '.join(keep) or '-'}; {os.cpu_count()} CPUs; torch {torch.__version__} "
            f"(CPU capability {torch.backends.cpu.get_cpu_capability()})")


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def time_sides(fns: dict, rounds: int, sync, warmup: int = 2) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU seconds per call of each side, round-robin after ``warmup`` untimed calls
    each (the first steps of a fresh process pay page faults while glibc's heap grows: measured
    850k minor faults and 9 s of system time in the official NCSN++ step 1, 210k in step 3)."""
    for _ in range(warmup):  # allocator, Adam state, oneDNN primitives
        for fn in fns.values():
            fn()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync()
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
        print("  round " + ", ".join(f"{k} {w[-1]:.2f} s" for k, w in wall.items()) + f"  load {loadavg()}",
              file=sys.stderr, flush=True)
    return wall, cpu


def memory_child(args) -> None:
    """One side's peak RSS growth over a second training step on the CPU, printed as JSON (fresh
    process; CUDA measures in the main process, :func:`cuda_step_growth`)."""
    import torch

    net, side, threads = args.official_case.split(":")
    torch.set_num_threads(int(threads))
    import_official(args.official, args.device)
    cfg = official_config(net, args.batch, args.device)
    obj = (Official(net, args.batch, args.device) if side == "official"
           else Ours(net, args.batch, args.device, cfg, None, parse_variants(args.ours)[side]))
    x, _ = inputs(net, cfg, args.batch, args.device)
    obj.step(x)  # step 1 allocates the optimiser state
    base = _rss()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := current RSS
    obj.step(x)
    print(json.dumps({"peak_growth_gib": (_hwm() - base) / 2**30}))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm() -> int:
    with open("/proc/self/status") as f:
        return int(next(ln for ln in f if ln.startswith("VmHWM:")).split()[1]) * 1024


def profile_step(name: str, fn, cuda: bool) -> None:
    """One call of ``fn`` under torch.profiler: wall time, the GPU's busy time (summed kernel time)
    and kernel count, then the top operators by self CPU time and the top kernels by GPU time."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy = sum(getattr(e, "device_time", 0.0) for e in kernels) / 1e3
    ops = sorted((e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CPU),
                 key=lambda e: -e.self_cpu_time_total)
    print(f"# profile {name}: wall {wall * 1e3:.1f} ms (profiled), GPU kernels {len(kernels)} busy {busy:.1f} ms; "
          f"top self-CPU: " + ", ".join(f"{e.key} {e.self_cpu_time_total / 1e3:.1f} ms x{e.count}" for e in ops[:8]),
          flush=True)
    if kernels:
        by: dict[str, list[float]] = {}
        for e in kernels:
            by.setdefault(e.name[:60], []).append(getattr(e, "device_time", 0.0) / 1e3)
        top = sorted(by.items(), key=lambda kv: -sum(kv[1]))[:6]
        print("#   top kernels: " + "; ".join(f"{k} {sum(v):.1f} ms x{len(v)}" for k, v in top), flush=True)


def cuda_step_growth(side, x) -> float:
    """CUDA: peak allocated growth (GiB) of one training step, in this process (after a first step,
    so the optimiser state exists as in :func:`memory_child`; the caching allocator does not count)."""
    import torch

    side.step(x)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    side.step(x)
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def memory(net: str, sides: list[str], args, threads: int) -> dict[str, float]:
    out = {}
    for side in sides:
        cmd = [sys.executable, os.path.join(ROOT, "scripts", "bench_nets.py"), "--official", args.official,
               "--official-case", f"{net}:{side}:{threads}", "--batch", str(args.batch), "--device", args.device]
        for spec in args.ours:
            cmd += ["--ours", spec]
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
        try:
            out[side] = json.loads(proc.stdout.strip().splitlines()[-1])["peak_growth_gib"]
        except (IndexError, ValueError, KeyError):
            print(proc.stderr[-2000:], file=sys.stderr)
            out[side] = float("nan")
    return out


def write_cifar10_files(root: str, n: int = 512, seed: int = 0) -> None:
    """Random CIFAR-10 batches in the real python format (``cifar-10-batches-py/data_batch_1..5``)."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    base = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(base, exist_ok=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(os.path.join(base, name), "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, n).tolist()}, f)


def sgm_train_rates(net: str, args, threads: int, steps: int, root: str) -> list[float]:
    """img/s of each step of ``sgm train`` (its logged ``train/images_per_sec``, csv logger)."""
    import csv

    config = os.path.join(ROOT, "configs", PROJECT_CONFIGS[net])
    cmd = [sys.executable, "-m", "sgm_lightning", "train", "--config", config,
           f"data.root={root}", f"data.batch_size={args.batch}", f"trainer.max_steps={steps}", f"num_threads={threads}",
           "logging.logger=csv", "logging.log_every_n_steps=1", f"logging.save_dir={root}/runs",
           f"checkpoint.dir={root}/ck", "name=e2e", "sample.at_end=false", "trainer.limit_val_batches=0",
           "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false"]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    files = glob.glob(os.path.join(root, "runs", "**", "metrics.csv"), recursive=True)
    if proc.returncode or not files:
        raise SystemExit(f"sgm train failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    with open(files[0]) as f:
        return [float(r["train/images_per_sec"]) for r in csv.DictReader(f) if r.get("train/images_per_sec")]


def end_to_end(net: str, args, threads: int) -> list[tuple]:
    """Median img/s after the warm-up steps: official raw loop, our raw loop, ``sgm train``."""
    import tempfile

    import torch

    steps = args.e2e_steps
    off = Official(net, args.batch, args.device)
    ours = Ours(net, args.batch, args.device, off.cfg, off.net.state_dict(), {})
    x, _ = inputs(net, off.cfg, args.batch, args.device)
    times = {"official": [], "ours": []}
    for _ in range(steps):  # the two raw loops step by step in turn, so drift hits both alike
        for name, side in (("official", off), ("ours", ours)):
            t0 = time.perf_counter()
            side.step(x)
            times[name].append(time.perf_counter() - t0)
    rates = {name: args.batch / statistics.median(t[args.warmup:]) for name, t in times.items()}
    del off, ours
    with tempfile.TemporaryDirectory() as root:
        write_cifar10_files(root)
        logged = sgm_train_rates(net, args, threads, steps, root)
    rates["sgm train"] = statistics.median(logged[max(0, args.warmup - 1):])  # step 1 logs no rate
    print(f"{net:7} e2e    threads={threads} official raw loop {rates['official']:.3f} img/s, our raw loop "
          f"{rates['ours']:.3f} img/s, sgm train {rates['sgm train']:.3f} img/s (median of steps "
          f"{args.warmup + 1}..{steps})", flush=True)
    torch.set_num_threads(threads)
    return [(net, "e2e: raw step loop", threads, "ours", rates["ours"], rates["official"],
             rates["ours"] / rates["official"], None, 0.0, loadavg(), None),
            (net, "e2e: sgm train", threads, "sgm train", rates["sgm train"], rates["official"],
             rates["sgm train"] / rates["official"], None, 0.0, loadavg(), None)]


def main(args) -> None:
    import torch

    if args.official_case:
        return memory_child(args)
    path, note = import_official(args.official, args.device)
    kept = False
    if not args.glibc_defaults:  # both sides share the process: neither re-faults its memory each step
        from sgm_lightning.training.allocator import keep_freed_memory

        kept = keep_freed_memory()
    nets = [n for n in args.nets if n in OFFICIAL_CONFIGS] or list(OFFICIAL_CONFIGS)
    variants = parse_variants(args.ours)
    commit = official_commit(path)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    dev = (f"{torch.cuda.get_device_name()}; torch {torch.__version__}, CUDA {torch.version.cuda}; TF32 "
           f"convolutions {'on' if torch.backends.cudnn.allow_tf32 else 'off'}, matmuls "
           f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'} (both sides)" if cuda else cpu_description())
    print(f"# device: {dev}\n# official: {path} (commit {commit}){'; ' + note if note else ''}\n"
          f"# malloc: {'freed memory kept (keep_freed_memory, both sides)' if kept else 'glibc defaults'}\n"
          f"# batch {args.batch}, rounds {args.rounds} (+{args.warmup} warm-up), fp32, interleaved; "
          f"ratio = ours / official "
          f"(speed: best-of-rounds img/s; paired median = median over rounds of official time / ours in the "
          f"same round; CPU time: best process CPU seconds; memory: peak growth of a training step)", flush=True)
    rows = []
    for threads in args.threads:
        if threads:
            torch.set_num_threads(threads)
        for net in nets:
            load0 = loadavg()
            off = Official(net, args.batch, args.device)
            sd = off.net.state_dict()
            ours = {name: Ours(net, args.batch, args.device, off.cfg, sd, opts) for name, opts in variants.items()}
            errs = check_equal(off, ours, net, args.device)
            bad = {k: e for k, e in errs.items() if not e < 1e-4}
            if bad:
                raise SystemExit(f"{net}: outputs differ from the official network (max rel err {bad})")
            x, labels = inputs(net, off.cfg, args.batch, args.device)
            sides = {"official": off, **ours}
            for mode in [m for m in args.official_modes if m in ("train", "infer")]:
                if mode == "train":
                    fns = {k: (lambda s=s, x=x: s.step(x)) for k, s in sides.items()}
                else:
                    def infer(s, x=x, labels=labels):
                        def run():
                            s.net.eval()
                            with torch.no_grad(), getattr(s, "autocast", contextlib.nullcontext()), \
                                    getattr(s, "nnpack", contextlib.nullcontext)():
                                getattr(s, "forward", s.net)(x, labels)
                            s.net.train()
                        return run
                    fns = {k: infer(s) for k, s in sides.items()}
                t, c = time_sides(fns, args.rounds, sync, args.warmup)
                for k in ours:
                    rows.append((net, mode, torch.get_num_threads(), k,
                                 args.batch / min(t[k]), args.batch / min(t["official"]),
                                 min(t["official"]) / min(t[k]),
                                 statistics.median(o / u for o, u in zip(t["official"], t[k])),
                                 max(errs[k], 0.0), f"{load0} -> {loadavg()}", min(c["official"]) / min(c[k])))
                    print(_fmt(rows[-1]), flush=True)
            if args.profile:
                for k, s in sides.items():
                    profile_step(f"{net} train {k}", lambda s=s, x=x: s.step(x), cuda)
            # CUDA: in this process (peak allocated growth is exact here, and a compiled variant is warm)
            cuda_mem = ({k: cuda_step_growth(s, x) for k, s in sides.items()}
                        if cuda and "memory" in args.official_modes else None)
            del off, ours, sides
            if "e2e" in args.official_modes:
                for row in end_to_end(net, args, torch.get_num_threads()):
                    rows.append(row)
                    print(_fmt(row), flush=True)
            if "memory" in args.official_modes:
                mem = cuda_mem if cuda else memory(net, ["official", *variants], args, torch.get_num_threads())
                for k in variants:
                    rows.append((net, "memory", torch.get_num_threads(), k, mem[k], mem["official"],
                                 mem[k] / mem["official"], None, errs[k], loadavg(), None))
                    print(_fmt(rows[-1]), flush=True)
    print("\n| net | measure | threads | ours (variant) | ours | official | ours / official: best (paired median) "
          "| CPU time | load (1, 5, 15 min) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        unit = "GiB" if r[1] == "memory" else "img/s"
        ratio = f"{r[6]:.2f}x" + (f" ({r[7]:.2f}x)" if r[7] is not None else "")
        cpu = f"{r[10]:.2f}x" if r[10] is not None else "-"
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.3f} {unit} | {r[5]:.3f} {unit} | {ratio} | {cpu} "
              f"| {r[9]} |")


def _fmt(r) -> str:
    med = f" (paired median {r[7]:.2f}x, CPU time {r[10]:.2f}x)" if r[7] is not None else ""
    unit = "GiB" if r[1] == "memory" else "img/s"
    return (f"{r[0]:7} {r[1]:6} threads={r[2]} {r[3]:12} ours {r[4]:8.3f} {unit}  official {r[5]:8.3f} {unit}  "
            f"ratio {r[6]:.2f}x{med}  equal(max rel err {r[8]:.1e})  load {r[9]}")
