"""Import the authors' released Up-Cycle-SENet checkpoint as a model folder for `upcycle-se enhance --model`.

CHECKPOINT is a file saved by the authors' main.py (github.com/towardsDLCV/Up-Cycle-SENet: a dict with
G_A2B, G_B2A, D_A, D_B and optimizer states; DDP's "module." prefixes are fine) or a bare G_A2B state
dict. In their code A is noisy and B clean speech: G_A2B, the enhancer, becomes generator.ckpt; G_B2A,
D_A and D_B are kept as gen_c2n.ckpt, disc_noisy.ckpt and disc_clean.ckpt so that the recipes'
--init_from fine-tunes all four. The file is loaded with weights_only=True: a checkpoint that needs code to
load is refused. The folder is built beside --out, checked by loading and running it once, then renamed
into place.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``import-reference`` options."""
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="the authors' checkpoint (.pth)")
    parser.add_argument("--out", required=True, metavar="FOLDER", help="model folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    """Imports; prints the model folder, what it holds and the command to enhance with it."""
    from upcycle_se.export import import_reference

    folder = import_reference(args.checkpoint, args.out, overwrite=args.overwrite)
    held = ", ".join(sorted(p.name for p in folder.glob("*.ckpt")))
    print(f"upcycle-se import-reference: {args.checkpoint} -> {folder} ({held})")
    print(f"next: upcycle-se enhance noisy/ -o enhanced/ --model {folder}")
    return 0
