"""All-pairs geodesic distance matrix of a trained TwoStageVAE, streamed to a ``.npy`` file.

The work is :func:`geometry.write_distance_matrix`; this script loads the model and the codes and,
when launched by ``torchrun`` (or SLURM ``srun`` with the torchrun environment), joins the
process group so the row blocks are split over the ranks. Examples::

    python scripts/distance_matrix.py --checkpoint runs/default/checkpoints/stage2/last.ckpt \\
        --codes train --out runs/default/distances.npy
    torchrun --nproc_per_node 2 scripts/distance_matrix.py --checkpoint ... --codes codes.npy \\
        --out d.npy --accelerator cpu
    torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint $HOST:29500 \\
        scripts/distance_matrix.py --checkpoint ... --codes codes.npy --out /shared/d.npy \\
        --accelerator gpu

``--codes`` is a ``.npy`` / ``.pt`` file holding an ``(n, d)`` array, or ``train`` / ``val`` /
``test``: the encoder means of that split of the run's data (``config.yaml`` of the run folder
holding the checkpoint, else the default data). Rerunning the same command resumes an
interrupted run; an existing output of another run is refused (``--overwrite`` replaces it).
Read the result with ``geometry.open_distance_matrix(path)``.

Exit status: 0 on success, 2 for a user error (bad argument, checkpoint, codes or output path,
disconnected graph), 1 when blocks are still missing at the end (rerun to finish).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time

import torch
import torch.distributed as dist

import geometry
from lightning_modules import CheckpointError, TwoStageVAE
from pipeline.codes import load_codes

__all__ = ["main", "parse_args", "return_large_frees_to_the_os"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options.

    Args:
        argv: the arguments (``None``: ``sys.argv[1:]``).
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="TwoStageVAE checkpoint (.ckpt)")
    p.add_argument("--codes", required=True, help="(n, d) .npy/.pt file, or train/val/test")
    p.add_argument("--out", required=True, help="output .npy file (sidecars: .meta.json, .blocks)")
    p.add_argument("--k", type=int, default=40, help="neighbours per graph node (default 40)")
    p.add_argument(
        "--rtol", type=float, default=1e-3, help="relative tolerance of the graph edge lengths"
    )
    p.add_argument("--aux-points", type=int, default=None, help="random auxiliary way points")
    p.add_argument("--seed", type=int, default=0, help="seed of the auxiliary points")
    p.add_argument("--block-size", type=int, default=256, help="rows per block (default 256)")
    p.add_argument("--dtype", choices=geometry.distance_blocks.DTYPES, default="float32")
    p.add_argument(
        "--on-disconnected",
        choices=("raise", "inf"),
        default="raise",
        help="disconnected kNN graph: fail naming the components (default) or write inf",
    )
    p.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def _device(accelerator: str) -> torch.device:
    """The CPU, or this rank's CUDA device (``LOCAL_RANK``), made current.

    Raises:
        ValueError: ``gpu`` without a visible CUDA device.
    """
    if accelerator == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("--accelerator gpu, but no CUDA device is visible")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


#: glibc ``mallopt`` parameter number of ``M_MMAP_THRESHOLD`` (malloc.h)
_M_MMAP_THRESHOLD = -3


def return_large_frees_to_the_os(threshold: int = 4 << 20) -> bool:
    """Serve allocations of ``threshold`` bytes and more by ``mmap`` (glibc only; else no-op).

    Building the graph pushes millions of points through ``embed`` in chunks of tens of MB; with
    glibc's default (a threshold that rises to 32 MB after the first frees) those chunks land on
    the heap, and the small long-lived arrays allocated between them keep it from shrinking, so
    the resident memory grows with the number of chunks (README, "Distance matrices past
    memory"). Returns whether the setting was applied.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    """Write the matrix (this rank's share of the blocks); rank 0 prints a JSON summary line.

    Args:
        argv: the arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 for a user error, 1 when blocks are still missing.
    """
    t0 = time.perf_counter()
    args = parse_args(argv)
    return_large_frees_to_the_os()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    try:
        device = _device(args.accelerator)
        if world > 1:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        model = TwoStageVAE.load_from_checkpoint(args.checkpoint, map_location="cpu")
        model = model.eval().requires_grad_(False)
        z = load_codes(args.codes, model, args.checkpoint)
        model, z = model.to(device), z.to(device)
        info = geometry.write_distance_matrix(
            model.embed,
            z,
            args.out,
            k=args.k,
            rtol=args.rtol,
            aux_points=args.aux_points,
            seed=args.seed,
            on_disconnected=args.on_disconnected,
            block_size=args.block_size,
            dtype=args.dtype,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except geometry.IncompleteDistanceMatrixError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if rank == 0:
        info["seconds"] = round(time.perf_counter() - t0, 3)
        print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
