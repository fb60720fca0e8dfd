"""Segmentation time of ``hrtem-tl segment`` for one large image and for a batch, fp32 vs bf16.

An untrained U-Net (ResNet-18 encoder; timing does not depend on the weights) in a
model folder at 0.5 Å/px; calibrated TIFFs of ``--size`` px at 0.5 Å/px (no
resampling); each file is read, standardised, tiled (256 px tiles, 64 px overlap),
segmented, and its mask TIFF, overlay PNG and particle CSV are written, as the
command does. Reports seconds for one image and for ``--batch`` images, in fp32 and
with bf16 autocast, and the fp32/bf16 time ratio (CPUs without AMX or AVX512-BF16
emulate bf16, which is then slower: reported, not judged). Nothing is asserted.

    python benchmarks/bench_segment.py [--size 2048] [--batch 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048, help="image side [px] (default: 2048)")
    ap.add_argument("--batch", type=int, default=16, help="images in the batch (default: 16)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default: 2)")
    ap.add_argument("--tile", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from hrtem_tl.model import build_unet
    from hrtem_tl.models import save_model
    from hrtem_tl.segment import segment_files
    from hrtem_tl.train import Precision, bf16_supported

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.manual_seed(0)
        folder = save_model(build_unet(), tmp / "model", {"pixel_size": 0.5, "crop": 160, "domains": ["bench"]})
        rng = np.random.default_rng(0)
        files = []
        for i in range(args.batch):
            path = tmp / f"im{i}.tif"
            tifffile.imwrite(path, rng.poisson(20, (args.size, args.size)).astype(np.float32), imagej=True,
                             resolution=(20.0, 20.0), metadata={"unit": "nm"})
            files.append(path)
        print(f"{args.size} x {args.size} px, {args.threads} threads, tiles {args.tile} px; "
              f"CPU bf16 native: {bf16_supported()}")
        times = {}
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
            precision = Precision("cpu", dtype)
            segment_files(files[:1], folder, tmp / "warm", tile=args.tile, precision=precision, progress=False,
                          stdout=open("/dev/null", "w"))  # warm-up (allocator, oneDNN kernels)
            for label, batch in (("1 image", files[:1]), (f"{len(files)} images", files)):
                start = time.perf_counter()
                segment_files(batch, folder, tmp / "out", tile=args.tile, precision=precision, progress=False,
                              stdout=open("/dev/null", "w"))
                times[name, label] = time.perf_counter() - start
                print(f"{name}  {label:>10s}: {times[name, label]:8.2f} s  ({times[name, label] / len(batch):.2f} s/image)")
        for label in ("1 image", f"{len(files)} images"):
            print(f"fp32 / bf16 time ratio, {label}: {times['fp32', label] / times['bf16', label]:.2f}")


if __name__ == "__main__":
    main()
