"""python -m suite.bench: the suite's LOSO engine against the hardware floor and against a
typical research script doing the same work. Prints a table and writes JSON.

Measured (each on one dataset, one configuration, the same epochs):

1. suite: full LOSO of Micro-AU CLIP through the engine (data resident, model re-initialised
   per fold, frozen tokens computed once), and its **FLOP floor**: backbone forward+backward
   FLOPs over all folds and epochs (counted with torch.utils.flop_counter) ÷ the measured
   matmul rate of this device (bf16 on GPU, fp32 on CPU).
2. peer: the same work as a typical research script does it — a per-fold loop that rebuilds
   the model and optimizer, decodes the JPEG frames through a DataLoader every epoch, batch
   32, and runs the backbone every step (no token cache). Implemented here only, as the peer.
3. frozen vs full: per-trial (full LOSO) time with cached frozen tokens vs fine-tuning
   the whole tower, at equal epochs. suite frozen is the first trial (tokens computed and
   stored); suite frozen, cached every later trial of a search (tokens read from the on-disk
   token cache, suite.token_cache).

4. trial: one search trial's work on cached frozen tokens — every fold's inner model (its
   inner-validation subjects predicted after every epoch) and outer model — with the sequential
   engine, the fold-batched engine (suite.batched) and the peer (nested, tokens not cached).

5. trial packing: trials per hour of the gsd search (its Tune stage, suite.search as
   users run it, with this run's CLIP, image size and epochs) with 1 and with K trials sharing
   each GPU (--packing K, default 4 on a GPU; on CPU only when asked: K trials share the
   cores).

6. --nested-search N (instead of 1–5): the strictly nested gsd search's rounds without Ray —
   N configurations per fold study, Optuna's ask/tell as suite.search does it, every slice in
   this process — on frozen tokens computed before the clock starts; the time outside the slices
   (Optuna, its journal, bookkeeping) is reported apart; the sequential engine then runs the
   first --sequential-configs proposals (the same configurations), compared slice by slice.

7. --trial-packing K (instead of 1–6): trials per hour with 1 and with K trial processes
   sharing the device, started as Ray starts packed trials (their share of the GPU memory, or of
   the cores), without Ray — the first round of the strictly nested gsd search,
   --packing-trials configurations.

examples:
  python -m suite.bench --scale full --trial-only --epochs 5       # the fold-batched engine on CPU
  python -m suite.bench --clip ViT-B-16 --image-size 224 --scale full   # on a GPU
  python -m suite.bench --scale full --nested-search 64 --round-size 16 --epochs 40   # the search's rounds
  python -m suite.bench --scale full --nested-search 8 --round-size 4 --sequential-configs 0 --protocol 'transfer:casme2->samm'
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m suite.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--dataset", default="casme2", help="a registered release: casme2, samm, casme3, … (default: %(default)s)")
    a("--protocol", default="loso", help="--nested-search: loso (on --dataset) | transfer:SRC->DST | composite:A+B (default: %(default)s)")
    a("--clip", default="tiny", help="open_clip model: tiny (random init, CPU) or e.g. ViT-B-16 (default: %(default)s)")
    a("--image-size", type=int, default=112, help="input size in pixels (default: %(default)s)")
    a("--scale", default="small", choices=["small", "full"], help="synthetic release size; full has the real counts (default: %(default)s)")
    a("--data-root", type=Path, help="a release folder (default: the synthetic release at --scale)")
    a("--epochs", type=int, default=3, help="epochs per model, the same for every row (default: %(default)s)")
    a("--packing", type=int, help="trials per device to compare with 1 (default: 4 on a GPU, skipped on CPU)")
    a("--packing-trials", type=int, default=8, help="trials per packing measurement (--packing, --trial-packing; default: %(default)s)")
    a("--no-packing", action="store_true", help="skip the packing rows (they run suite.search, which needs Ray)")
    a("--trial-only", action="store_true", help="only the frozen rows and one search trial's work per engine (no full fine-tuning)")
    a("--nested-search", type=int, metavar="N",
      help="only this: the strictly nested gsd search with N configurations per fold study, without Ray, batched vs sequential (round 1)")
    a("--trial-packing", type=int, metavar="K",
      help="only this: trials/hour with 1 and K trial processes per device, started as Ray would, without Ray")
    a("--round-size", type=int, default=16, help="--nested-search: proposals per fold study per round (default: %(default)s)")
    a("--sequential-configs", type=int, default=2, help="--nested-search: configurations run again sequentially for the ratio (default: %(default)s)")
    a("--out", type=Path, help="JSON report (default: <results>/bench/bench-DATASET-SCALE-CLIP.json)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from .measure import benchmark  # torch, open_clip: after the arguments, so --help is instant

    benchmark(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
