"""The CPU training-step levers of docs/performance.md, each alone, as ratios measured in one run.

- ``adam``: one Adam step over the NCSN++ CIFAR-10 parameters (62.8M) with PyTorch's per-tensor
  loop, ``foreach`` and ``fused`` kernels (``optim.implementation``), random gradients.
- ``dropout``: the lean path's dropout mask on a (16, 128, 32, 32) activation, ``bernoulli_`` vs
  ``rand >= p`` (what ``norm_act_conv`` draws).
- ``conv``: a 3x3 'same' convolution at the CIFAR-10 U-Nets' shapes, each part with oneDNN and
  with Winograd: the forward (NNPACK, :func:`sgm_lightning.nets.layers.conv3x3`), the input
  gradient (NNPACK over the flipped, transposed kernel) and the weight gradient (our F(3x3, 4x4),
  :func:`~sgm_lightning.nets.layers.conv3x3_weight_grad`), and which one ``conv3x3`` takes; run
  with freed memory kept (as ``sgm train``), timings in turn.
- ``faults``: training steps of the NCSN++ CIFAR-10 network (forward + backward + Adam) in a fresh
  process with glibc's defaults and with :func:`~sgm_lightning.training.allocator.keep_freed_memory`:
  minor page faults, system time and wall time per step after two warm-up steps.

Best of ``--repeat`` timings; threads as given (default 2); the CPU is printed first.

    .venv/bin/python scripts/bench_levers.py [--only adam dropout conv faults] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def best_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def cifar_ncsnpp():
    from sgm_lightning.nets import PRESETS, build_network

    torch.manual_seed(0)
    return build_network(**PRESETS["ncsnpp_cifar10"])


def adam(repeat: int) -> None:
    params = list(cifar_ncsnpp().parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    base = None
    for name, kw in (("for_loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        opt = torch.optim.Adam(params, lr=2e-4, **kw)
        ms = best_ms(opt.step, repeat)
        base = base or ms
        print(f"adam     {name:9} {ms:8.1f} ms per step   {base / ms:5.2f}x the per-tensor loop", flush=True)


def dropout(repeat: int) -> None:
    x, p = torch.randn(16, 128, 32, 32), 0.1
    fns = (lambda: torch.empty_like(x, dtype=torch.bool).bernoulli_(1 - p), lambda: torch.rand_like(x) >= p)
    a, b = (min(ms) for ms in zip(*[[best_ms(fn, 1) for fn in fns] for _ in range(6 * repeat)]))  # in turn
    print(f"dropout  mask of {tuple(x.shape)}: bernoulli_ {a:.2f} ms, rand >= p {b:.2f} ms   {a / b:.2f}x", flush=True)


def conv_case(batch: int, cin: int, cout: int, size: int, repeat: int) -> None:
    from sgm_lightning.nets import layers

    A = torch.ops.aten
    x, w = torch.randn(batch, cin, size, size), torch.randn(cout, cin, 3, 3) / (9 * cin) ** 0.5
    g = torch.randn(batch, cout, size, size)
    flipped = w.flip(2, 3).transpose(0, 1).contiguous()

    def onednn_grad(part):
        mask = [part == "input", part == "weight", False]
        return lambda: A.convolution_backward(g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)

    pairs = {  # part: (oneDNN, Winograd, whether conv3x3 takes Winograd)
        "forward": (lambda: F.conv2d(x, w, padding=1), lambda: torch._nnpack_spatial_convolution(x, w, None, [1, 1]),
                    layers.winograd_chosen(x, w)),
        "input gradient": (onednn_grad("input"), lambda: torch._nnpack_spatial_convolution(g, flipped, None, [1, 1]),
                           layers.winograd_chosen(g, w.transpose(0, 1))),
        "weight gradient": (onednn_grad("weight"), lambda: layers.conv3x3_weight_grad(g, x),
                            layers.winograd_weight_grad_chosen(x, w)),
    }
    times = {part: ([], []) for part in pairs}
    for _ in range(repeat):  # in turn, so that load hits both alike
        for part, (direct, wino, _) in pairs.items():
            times[part][0].append(best_ms(direct, 1))
            times[part][1].append(best_ms(wino, 1))
    cells = []
    for part, (direct, wino) in times.items():
        d, v = min(direct), min(wino)
        cells.append(f"{part} {d:6.1f} -> {v:6.1f} ms ({d / v:4.2f}x, {'used' if pairs[part][2] else 'not used'})")
    print(f"conv3x3  batch {batch:2} {cin:3}->{cout:3} at {size:2}x{size:<2}: oneDNN -> Winograd: " + "; ".join(cells),
          flush=True)


def conv(repeat: int) -> None:
    from sgm_lightning.training.allocator import keep_freed_memory

    keep_freed_memory()  # as sgm train: fresh tensors would page-fault in each call otherwise
    for batch in (16, 4):
        for cin, cout, size in ((128, 128, 32), (256, 128, 32), (128, 256, 32), (256, 256, 32), (256, 256, 16),
                                (512, 256, 16), (256, 256, 8)):
            if batch == 16 or size == 32:
                conv_case(batch, cin, cout, size, repeat)


FAULTS_CHILD = """
import json, resource, sys, time, torch
sys.path.insert(0, sys.argv[2])
from bench_levers import cifar_ncsnpp
from sgm_lightning.training.allocator import keep_freed_memory
torch.set_num_threads(int(sys.argv[3]))
if sys.argv[1] == "kept":
    keep_freed_memory()
net = cifar_ncsnpp().train()
opt = torch.optim.Adam(net.parameters(), lr=2e-4, fused=True)
g = torch.Generator().manual_seed(0)
x, sigma = torch.rand(16, 3, 32, 32, generator=g), 0.01 * 5000 ** torch.rand(16, generator=g)
rows = []
for i in range(5):
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    opt.zero_grad(set_to_none=True)
    net(x, sigma).square().mean().backward()
    opt.step()
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    rows.append((r1.ru_minflt - r0.ru_minflt, r1.ru_stime - r0.ru_stime, time.perf_counter() - t0))
print(json.dumps(rows[2:]))
"""


def faults(threads: int) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env["PYTHONPATH"] = os.path.dirname(here)
    res = {}
    for mode in ("glibc defaults", "kept"):
        out = subprocess.run([sys.executable, "-c", FAULTS_CHILD, mode.split()[0], here, str(threads)],
                             capture_output=True, text=True, env=env, check=True)
        rows = json.loads(out.stdout.strip().splitlines()[-1])
        res[mode] = [sum(col) / len(rows) for col in zip(*rows)]
        f, sys_s, wall = res[mode]
        print(f"faults   NCSN++ CIFAR-10 step, batch 16, {mode:14}: {f:9.0f} minor faults, {sys_s:5.2f} s system, "
              f"{wall:5.2f} s wall per step (mean of steps 3-5)", flush=True)
    print(f"faults   kept / defaults: wall {res['glibc defaults'][2] / res['kept'][2]:.2f}x faster", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", default=["adam", "dropout", "conv", "faults"],
                    choices=["adam", "dropout", "conv", "faults"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from bench_official import cpu_description

    print(f"# {cpu_description()}; {args.threads} threads; load {os.getloadavg()[0]:.2f}", flush=True)
    if not torch.backends.nnpack.is_available() and "conv" in args.only:
        print("conv3x3  this torch has no NNPACK: skipped")
        args.only.remove("conv")
    for name in args.only:
        faults(args.threads) if name == "faults" else globals()[name](args.repeat)


if __name__ == "__main__":
    main()
