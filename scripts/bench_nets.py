"""Training / inference throughput and peak memory of the score networks, as ratios in one run.

For each network (CIFAR-10 NCSN++ and DDPM++ at 32x32x3, the 16x16x1 ``ncsnpp_digits`` default):
speed is timed in one process, one forward + backward step per mode in turn (round-robin, so
load from other processes hits every mode alike), best and median over the rounds; peak memory
growth is measured in a fresh subprocess per mode over two steps (CPU: peak RSS, VmHWM,
minus the RSS with net and inputs built, so gradients count, with glibc's mmap threshold fixed
at 64 KiB so that freed tensors leave RSS at once; CUDA: max_memory_allocated growth).

Modes: ``reference`` (our network with score_sde's own operators swapped back in: the
``upfirdn2d_native`` FIR path on (B*C, 1, H, W), the two-einsum attention over separate NIN
projections and plain GroupNorm -> SiLU -> conv that keeps every activation; same weights,
same outputs, so it stands for the official implementation),
``fp32`` (ours, the baseline of every ratio), ``channels_last``, ``compile`` (torch.compile),
``bf16`` (autocast; CPU with AVX512-BF16/AMX or CUDA), ``checkpoint`` (activation checkpointing
per level), ``infer`` (no-grad forward, eval mode) and ``fast`` (bf16 autocast + channels_last +
torch.compile, the GPU target; not run by default).

    .venv/bin/python scripts/bench_nets.py                       # everything (CPU: ~30 min)
    .venv/bin/python scripts/bench_nets.py --nets digits --modes fp32 reference channels_last --rounds 5

Against the real official code (``--official PATH``: score_sde_pytorch at cb1f359 with ``op/`` made
CPU-only, or a folder holding it),
see :mod:`bench_official` (same folder) and docs/performance.md:

    .venv/bin/python scripts/bench_nets.py --official OFFICIAL --nets ncsnpp ddpmpp \
        --threads 2 --batch 16 --rounds 4 [--ours lean:recompute_norm_act=true ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

NETS = {"ncsnpp": "ncsnpp_cifar10", "ddpmpp": "ddpmpp_cifar10", "digits": "ncsnpp_digits"}
MODES = ["fp32", "reference", "channels_last", "compile", "bf16", "checkpoint", "infer", "fast"]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> None:
    """Linux keeps the peak RSS (VmHWM) across fork/exec, so a child would inherit its parent's;
    writing 5 to clear_refs resets it to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        line = next(ln for ln in f if ln.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def use_reference_ops():
    """score_sde's own FIR and attention operators (same math); returns ``swap(reference: bool)``
    that puts them in place of ours (True) or restores ours (False)."""
    import torch
    import torch.nn.functional as F

    from sgm_lightning.nets import attention, fir, ncsnpp, resblocks

    def upfirdn2d_native(x, k, up, down, p0, p1):
        b, c, h, w = x.shape
        out = x.reshape(b * c, h, 1, w, 1)  # zero insertion by padding, as upfirdn2d_native
        out = F.pad(out, (0, up - 1, 0, 0, 0, up - 1)).reshape(b * c, 1, h * up, w * up)
        out = F.pad(out, (p0, p1, p0, p1))
        out = F.conv2d(out, torch.flip(k, [0, 1]).to(x.dtype).view(1, 1, *k.shape))
        out = out[:, :, ::down, ::down]
        return out.reshape(b, c, out.shape[-2], out.shape[-1])

    def downsample(x, kernel, factor=2):
        p = kernel.shape[0] - factor
        return upfirdn2d_native(x, kernel, 1, factor, (p + 1) // 2, p // 2)

    def upsample(x, kernel, factor=2):
        p = kernel.shape[0] - factor
        return upfirdn2d_native(x, kernel, factor, 1, (p + 1) // 2 + factor - 1, p // 2)

    def fir_filter(x, kernel, pad):
        return upfirdn2d_native(x, kernel, 1, 1, pad[0], pad[1])

    def attn_forward(self, x):
        b, c, h, w = x.shape
        hn = self.norm(x)
        wq, wk, wv = self.qkv.weight[:, :, 0, 0].chunk(3)
        bq, bk, bv = self.qkv.bias.chunk(3)

        def nin(t, wt, bt):  # official NIN: permute, contract over channels, permute back
            return (torch.einsum("bhwi,oi->bhwo", t.permute(0, 2, 3, 1), wt) + bt).permute(0, 3, 1, 2)

        q, k, v = nin(hn, wq, bq), nin(hn, wk, bk), nin(hn, wv, bv)
        att = torch.einsum("bchw,bcij->bhwij", q, k) * (int(c) ** (-0.5))
        att = F.softmax(att.reshape(b, h, w, h * w), dim=-1).reshape(b, h, w, h, w)
        out = nin(torch.einsum("bhwij,bcij->bchw", att, v), self.proj.weight[:, :, 0, 0], self.proj.bias)
        return attention.skip_sum(x, out, self.skip_rescale)

    def plain_norm_act(norm, act, x, *_):  # autograd keeps every activation, as the official blocks
        return act(norm(x))

    def plain_norm_act_conv(norm, act, conv, x, dropout=None, **_):
        h = act(norm(x))
        return conv(dropout(h) if dropout is not None else h)

    ours = (fir.downsample, fir.upsample, fir.fir_filter, attention.AttnBlock.forward, resblocks.norm_act,
            resblocks.norm_act_conv)
    theirs = (downsample, upsample, fir_filter, attn_forward, plain_norm_act, plain_norm_act_conv)

    def swap(reference: bool) -> None:
        (fir.downsample, fir.upsample, fir.fir_filter, attention.AttnBlock.forward, resblocks.norm_act,
         resblocks.norm_act_conv) = theirs if reference else ours
        ncsnpp.norm_act = resblocks.norm_act

    return swap


class Case:
    """One (network, mode): the built net, its inputs and a ``step()`` (forward + backward)."""

    def __init__(self, net_key: str, mode: str, batch: int, device: str, swap):
        import torch

        from sgm_lightning.nets import PRESETS, build_network

        torch.manual_seed(0)
        cfg = dict(PRESETS[NETS[net_key]])
        cfg["checkpoint_levels"] = mode == "checkpoint"
        self.net = build_network(**cfg).to(device)
        c, size = cfg["num_channels"], cfg["image_size"]
        self.x = torch.rand(batch, c, size, size, device=device)
        self.labels = (torch.rand(batch, device=device) * 20 + 0.01 if cfg["embedding_type"] == "fourier"
                       else torch.rand(batch, device=device) * 999)
        if mode in ("channels_last", "fast"):
            self.net = self.net.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.model = torch.compile(self.net) if mode in ("compile", "fast") else self.net
        self.autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=mode in ("bf16", "fast"))
        self.mode, self.swap, self.batch, self.cuda = mode, swap, batch, device.startswith("cuda")

    def step(self) -> float:
        """Seconds for one step (forward + backward; ``infer``: no-grad forward)."""
        import torch

        if self.swap is not None:
            self.swap(self.mode == "reference")
        t0 = time.perf_counter()
        if self.mode == "infer":
            with torch.no_grad():
                self.model.eval()(self.x, self.labels)
        else:
            with self.autocast:
                loss = self.model.train()(self.x, self.labels).float().square().mean()
            loss.backward()
        if self.cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        self.net.zero_grad(set_to_none=False)
        return dt


def memory_case(net_key: str, mode: str, batch: int, device: str) -> dict:
    """Peak memory growth of two steps, in a fresh process (the caller)."""
    import torch

    swap = use_reference_ops() if mode == "reference" else None
    case = Case(net_key, mode, batch, device, swap)
    if case.cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_peak_rss()
        base = _rss_bytes()  # net and inputs built; gradients not yet allocated
    case.step()
    case.step()
    peak = torch.cuda.max_memory_allocated() if case.cuda else _peak_rss_bytes()
    return {"peak_growth_gib": (peak - base) / 2**30}


def speed(net_key: str, modes: list[str], batch: int, rounds: int, device: str) -> dict[str, list[float]]:
    """Round-robin over the modes (one step each per round) so that load from other processes
    hits every mode alike; returns the per-step seconds of each mode, warm-up excluded."""
    swap = use_reference_ops() if "reference" in modes else None
    cases = {m: Case(net_key, m, batch, device, swap) for m in modes}
    for case in cases.values():  # warm-up (torch.compile compiles here)
        case.step()
    times: dict[str, list[float]] = {m: [] for m in modes}
    for _ in range(rounds):
        for m, case in cases.items():
            times[m].append(case.step())
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    ap.add_argument("--modes", nargs="+", default=MODES[:-1], choices=MODES)
    ap.add_argument("--no-memory", action="store_true", help="skip the per-mode memory subprocesses")
    ap.add_argument("--batch", type=int, default=16, help="batch for the CIFAR-10 nets (digits: 4x)")
    ap.add_argument("--rounds", type=int, default=3, help="timed steps per mode (best and median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per side before the rounds (--official)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, nargs="+", default=[0],
                    help="intra-op threads (0: torch default); with --official one run per value")
    ap.add_argument("--memory-case", help=argparse.SUPPRESS)
    ap.add_argument("--official", metavar="PATH", help="compare with score_sde_pytorch at PATH (bench_official.py)")
    ap.add_argument("--ours", action="append", default=[], metavar="NAME:k=v,...",
                    help="with --official: also time our network with these NCSNpp options (repeatable)")
    ap.add_argument("--official-modes", nargs="+", default=["train", "infer", "memory"],
                    choices=["train", "infer", "memory", "e2e"], help="e2e: sgm train itself vs the official loop")
    ap.add_argument("--glibc-defaults", action="store_true",
                    help="--official speed rounds with glibc's malloc defaults (default: freed memory kept)")
    ap.add_argument("--e2e-steps", type=int, default=12, help="steps of each loop in the e2e mode")
    ap.add_argument("--profile", action="store_true",
                    help="with --official: profile one training step of each side after the timed rounds")
    ap.add_argument("--official-case", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.official or args.official_case:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import bench_official

        return bench_official.main(args)
    args.threads = args.threads[0]
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu" and "AVX512" not in torch.backends.cpu.get_cpu_capability():
        # no native bf16 on this CPU: emulated, not worth measuring
        args.modes = [m for m in args.modes if m not in ("bf16", "fast")]
    if args.memory_case:  # child process: one measurement, JSON on the last line
        net_key, mode = args.memory_case.split(":")
        batch = args.batch * 4 if net_key == "digits" else args.batch
        print(json.dumps(memory_case(net_key, mode, batch, args.device)))
        return
    print(f"device={args.device} batch={args.batch} (digits {4 * args.batch}) rounds={args.rounds} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"{'net':8} {'mode':14} {'best img/s':>10} {'median':>8} {'x fp32':>7} {'peak GiB':>9} {'x fp32':>7}")
    for net_key in args.nets:
        batch = args.batch * 4 if net_key == "digits" else args.batch
        times = speed(net_key, args.modes, batch, args.rounds, args.device)
        mem = {m: float("nan") for m in args.modes}
        for mode in [] if args.no_memory else args.modes:
            cmd = [sys.executable, __file__, "--memory-case", f"{net_key}:{mode}", "--batch", str(args.batch),
                   "--device", args.device, "--threads", str(args.threads), "--modes", mode]
            # a fixed mmap threshold: glibc then returns freed tensors at once and RSS follows live memory
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
            mem[mode] = (json.loads(proc.stdout.strip().splitlines()[-1])["peak_growth_gib"]
                         if proc.returncode == 0 else float("nan"))
        best = {m: batch / min(t) for m, t in times.items()}
        med = {m: batch / statistics.median(t) for m, t in times.items()}
        b0, m0 = best.get("fp32"), mem.get("fp32")
        for m in args.modes:
            r_speed = f"{best[m] / b0:7.2f}" if b0 else "      -"
            r_mem = f"{mem[m] / m0:7.2f}" if m0 else "      -"
            print(f"{net_key:8} {m:14} {best[m]:10.2f} {med[m]:8.2f} {r_speed} {mem[m]:9.3f} {r_mem}", flush=True)
        if "reference" in best and "fp32" in best:
            print(f"{net_key:8} ours (fp32) vs score_sde-style reference: "
                  f"speed {best['fp32'] / best['reference']:.2f}x "
                  f"(median {med['fp32'] / med['reference']:.2f}x), memory {mem['fp32'] / mem['reference']:.2f}x",
                  flush=True)


if __name__ == "__main__":
    main()
