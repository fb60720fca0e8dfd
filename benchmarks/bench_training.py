"""Training and evaluation throughput of the U-Net (ResNet-18 encoder).

Measures, in one run and on synthetic data of a profile's sizes (default: cpu, 128 px
crops, batch 16; evaluation on whole 320 px images):

* training samples/s (``--quick``: batch 8) in fp32 and with bf16 autocast (CPU) and the ratio. CPUs without
  AMX or AVX512-BF16 emulate bf16, which is then slower than fp32: reported, not judged;
* the speed-up of training with the encoder frozen (freeze="encoder") over full
  fine-tuning, in fp32;
* evaluation images/s;
* peak memory (resident set; on CUDA also torch's peak allocation);
* ``--compile``: ``torch.compile`` (inductor) of the bf16 training step and of bf16
  evaluation against the eager loop (compile time reported apart), and how far the
  compiled and eager losses and masks differ;
* ``--crops 128 160 192``: training samples/s (bf16) for each crop size;
* on CUDA, if present: the same with the GPU's autocast dtype, then how many models
  train at once (one process each) and their aggregate samples/s.

Each step is the training loop of ``train.train_stage``: a random D4-augmented crop
batch (``random_batch``), channels-last forward under autocast, cross-entropy, Adam.
Nothing is asserted; numbers and ratios come from the same run.

    python benchmarks/bench_training.py [--quick] [--profile cpu] [--steps 8] [--batch B] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

from hrtem_tl.config import load_profile
from hrtem_tl.model import apply_freezing, build_unet, set_train_mode
from hrtem_tl.train import Precision, bf16_supported, evaluate, random_batch, standardize


def synthetic(n: int, size: int, seed: int = 0):
    """Standardised noisy images with disk masks (content does not change the timing)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        for _ in range(3):
            cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(size / 16, size / 8)]
            masks[i][np.hypot(yy - cy, xx - cx) < r] = 1
    images = masks + rng.normal(0, 0.5, masks.shape)
    return standardize(images), masks


def train_rate(model, data, precision: Precision, *, batch: int, crop: int, steps: int, freeze: str = "none",
               warmup: int = 1) -> float:
    """Training samples/s over ``steps`` steps after ``warmup`` untimed ones."""
    model = model.to(precision.device, memory_format=torch.channels_last)
    apply_freezing(model, freeze)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    set_train_mode(model, freeze)
    rng = np.random.default_rng(0)

    def step():
        x, y = random_batch(*data, batch, crop, rng)
        x = x.to(precision.device).contiguous(memory_format=torch.channels_last)
        with precision.autocast():
            loss = F.cross_entropy(model(x), y.to(precision.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(warmup):
        step()
    _sync(precision)
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    loss.item()
    _sync(precision)
    apply_freezing(model, "none")
    return steps * batch / (time.perf_counter() - start)


def eval_rate(model, data, precision: Precision, repeat: int = 1) -> float:
    evaluate(model, data[0][:4], data[1][:4], precision)  # warm-up
    _sync(precision)
    start = time.perf_counter()
    for _ in range(repeat):
        evaluate(model, *data, precision)
    _sync(precision)
    return repeat * len(data[0]) / (time.perf_counter() - start)


def _sync(precision: Precision) -> None:
    if precision.device.startswith("cuda"):
        torch.cuda.synchronize()


def rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _concurrent_worker(rank, k, batch, crop, steps, size, queue, barrier):
    torch.backends.cudnn.benchmark = True
    precision = Precision.choose(True, "cuda")
    data = synthetic(16, size, seed=rank)
    torch.manual_seed(rank)
    model = build_unet()
    barrier.wait()
    rate = train_rate(model, data, precision, batch=batch, crop=crop, steps=steps, warmup=2)
    queue.put((rate, torch.cuda.max_memory_allocated() / 2**30))


def concurrent_models(k: int, batch: int, crop: int, steps: int, size: int) -> tuple[float, float]:
    """Aggregate samples/s of ``k`` models training at once, one process each."""
    ctx = torch.multiprocessing.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(k)
    procs = [ctx.Process(target=_concurrent_worker, args=(r, k, batch, crop, steps, size, queue, barrier))
             for r in range(k)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=900) for _ in procs]
    for p in procs:
        p.join()
    return sum(r for r, _ in results), max(m for _, m in results)


def compiled_section(fresh, train, val, precision: Precision, *, batch: int, crop: int, steps: int) -> None:
    """Eager against ``torch.compile`` (inductor) in one run: training and evaluation rates,
    compile time, and the largest difference of loss and of predicted masks."""
    eager_train = train_rate(fresh(), train, precision, batch=batch, crop=crop, steps=steps)
    eager_eval = eval_rate(fresh(), val, precision)
    start = time.perf_counter()
    model = torch.compile(fresh())
    train_rate(model, train, precision, batch=batch, crop=crop, steps=1, warmup=2)  # compiles forward and backward
    compile_s = time.perf_counter() - start
    comp_train = train_rate(model, train, precision, batch=batch, crop=crop, steps=steps)
    row("train bf16, eager", eager_train, "samples/s")
    row("train bf16, torch.compile (after compiling)", comp_train, "samples/s")
    row("torch.compile / eager (training)", comp_train / eager_train, "x")
    row("compile time of the training step", compile_s, "s")
    start = time.perf_counter()
    evaluate(model, val[0][:4], val[1][:4], precision)
    row("compile time of evaluation", time.perf_counter() - start, "s")
    comp_eval = eval_rate(model, val, precision)
    row("evaluate bf16, eager (whole images)", eager_eval, "images/s")
    row("torch.compile / eager (evaluation)", comp_eval / eager_eval, "x")
    eager, compiled = fresh().eval(), model.eval()
    x = torch.from_numpy(np.ascontiguousarray(val[0][:4, None]))
    with torch.no_grad(), precision.autocast():
        a, b = eager(x).float(), compiled(x).float()
    row("largest logit difference, compiled vs eager", float((a - b).abs().max()), "")
    row("pixels whose mask differs, compiled vs eager", float((a.argmax(1) != b.argmax(1)).float().mean()), "share")


def row(name: str, value: float, unit: str) -> None:
    print(f"{name:52s} {value:10.2f}  {unit}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Training throughput (see the module docstring).")
    ap.add_argument("--profile", default="cpu", help="sizes from this profile (crop, batch, image size)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per measurement (default 8; --quick 3)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: the profile's; --quick 8)")
    ap.add_argument("--quick", action="store_true", help="2 steps of batch 8, 8 evaluation images")
    ap.add_argument("--no-cuda", action="store_true", help="skip the CUDA section")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile (inductor) on the CPU")
    ap.add_argument("--crops", nargs="*", type=int, default=[], help="also measure bf16 training at these crops")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps = 2 if args.quick else args.steps
    profile = load_profile(args.profile)
    t, size = profile.training, profile.simulation.image_size
    batch, crop = args.batch or (8 if args.quick else t.batch_size), t.crop
    print(f"profile {profile.name}: batch {batch}, crop {crop} px, evaluation on {size} px images; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {bf16_supported()}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    train = synthetic(32, size)
    val = synthetic(8 if args.quick else 16, size, seed=1)
    torch.manual_seed(0)
    base = build_unet()
    state = {k: v.clone() for k, v in base.state_dict().items()}

    def fresh():
        base.load_state_dict(state)
        return base

    fp32, bf16 = Precision("cpu", None), Precision("cpu", torch.bfloat16)
    print()
    print(f"{'CPU measurement':52s} {'value':>10s}  unit")
    r32 = train_rate(fresh(), train, fp32, batch=batch, crop=crop, steps=steps)
    row("train fp32", r32, "samples/s")
    r16 = train_rate(fresh(), train, bf16, batch=batch, crop=crop, steps=steps)
    row("train bf16 autocast", r16, "samples/s")
    row("bf16 / fp32" + ("" if bf16_supported() else " (bf16 emulated on this CPU)"), r16 / r32, "x")
    renc = train_rate(fresh(), train, fp32, batch=batch, crop=crop, steps=steps, freeze="encoder")
    row("train fp32, encoder frozen", renc, "samples/s")
    row("frozen encoder speed-up over full fine-tuning", renc / r32, "x")
    rdec = train_rate(fresh(), train, fp32, batch=batch, crop=crop, steps=steps, freeze="decoder")
    row("frozen decoder speed-up over full fine-tuning", rdec / r32, "x")
    row("evaluate fp32 (whole images)", eval_rate(fresh(), val, fp32), "images/s")
    for c in args.crops:
        row(f"train bf16, crop {c} px", train_rate(fresh(), train, bf16, batch=batch, crop=c, steps=steps), "samples/s")
    if args.compile:
        compiled_section(fresh, train, val, bf16, batch=batch, crop=crop, steps=steps)
    row("peak resident memory", rss_mib(), "MiB")
    row("load average at the end", os.getloadavg()[0], f"(of {os.cpu_count()} cores)")

    if args.no_cuda or not torch.cuda.is_available():
        print("\nCUDA: not available" if not args.no_cuda else "\nCUDA: skipped")
        return
    gpu = load_profile("gpu").training if args.profile == "cpu" else t
    batch, crop = gpu.batch_size, gpu.crop
    size = max(crop, size)
    torch.backends.cudnn.benchmark = True
    amp = Precision.choose(True, "cuda")
    fp32c = Precision("cuda", None)
    train = synthetic(32, size)
    val = synthetic(16, size, seed=1)
    steps_gpu = 10 if args.quick else 30
    print(f"\nCUDA: {torch.cuda.get_device_name()}, batch {batch}, crop {crop} px, autocast {amp.name}")
    print(f"{'CUDA measurement':52s} {'value':>10s}  unit")
    torch.cuda.reset_peak_memory_stats()
    g32 = train_rate(fresh(), train, fp32c, batch=batch, crop=crop, steps=steps_gpu, warmup=3)
    row("train fp32", g32, "samples/s")
    gamp = train_rate(fresh(), train, amp, batch=batch, crop=crop, steps=steps_gpu, warmup=3)
    row(f"train {amp.name} autocast", gamp, "samples/s")
    row(f"{amp.name} / fp32", gamp / g32, "x")
    genc = train_rate(fresh(), train, amp, batch=batch, crop=crop, steps=steps_gpu, warmup=3, freeze="encoder")
    row(f"frozen encoder speed-up ({amp.name})", genc / gamp, "x")
    row("evaluate (autocast, whole images)", eval_rate(fresh(), val, amp, repeat=3), "images/s")
    peak = torch.cuda.max_memory_allocated() / 2**30
    row("peak torch allocation, one model", peak, "GiB")
    free, total = torch.cuda.mem_get_info()
    fit = int(free / 2**30 // max(peak * 1.2, 1e-3))
    row("models that fit at once (free memory / 1.2 x peak)", fit, "models")
    base.cpu()
    torch.cuda.empty_cache()
    best = (0.0, 1)
    for k in (1, 2, 4, 8, 16):
        if k > max(fit, 1):
            break
        rate, mem = concurrent_models(k, batch, crop, steps_gpu, size)
        row(f"{k} model(s) at once: aggregate ({mem:.1f} GiB peak each)", rate, "samples/s")
        best = max(best, (rate, k))
    row(f"best: {best[1]} models at once, over 1 model", best[0] / gamp, "x")


if __name__ == "__main__":
    main()
