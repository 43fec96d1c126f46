"""Run the whole pipeline on a small built-in corpus: build, train, export, enhance, score.

1. builds the ``broad_small`` synthetic corpus (flite / espeak-ng voices and Piper neural pseudo-speakers,
   training noise from broad randomized generators, VoiceBank-DEMAND layout; ``--corpus small``: the older
   five fixed noise families and no Piper voice);
2. trains Up-Cycle-SENet with the recipe's small CPU config (``recipes/VoiceBankDEMAND/train.py
   hparams/upcycle_small.yaml``; unpaired by default), which ends by scoring the best checkpoint on the
   unseen test speakers (noisy vs enhanced);
3. exports the best checkpoint to a model folder and enhances one noisy test file with it;
4. prints the test-set table and that file's scores, and draws its noisy, enhanced and clean
   spectrograms in enhanced/<name>.png.

The corpus is synthetic and the run is minutes long: its scores show the pipeline working, not the
paper's VoiceBank-DEMAND figures.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import upcycle_se
from upcycle_se.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_output", help="folder for everything the demo writes")
    parser.add_argument("--unpaired", default="shuffle", choices=["shuffle", "disjoint", "paired"],
                        help="training data pairing (paired also switches the loss to l1gan)")
    parser.add_argument("--corpus", default="broad_small", choices=["broad_small", "small"],
                        help="corpus preset: broad_small (broad training noise, Piper voices; default) or small "
                             "(five fixed noise families; no Piper needed). Both share the same test side")
    parser.add_argument("--epochs", type=int, default=4, help="epochs at the full learning rate")
    parser.add_argument("--decay-epochs", type=int, default=2, help="epochs of linear learning-rate decay")
    parser.add_argument("--precision", default="auto", metavar="{auto,fp32,bf16}",
                        help="arithmetic of the enhancement step (see `upcycle-se enhance --help`; default: auto)")


def _recipe_dir() -> Path:
    recipe = Path(upcycle_se.__file__).resolve().parents[1] / "recipes" / "VoiceBankDEMAND"
    if not (recipe / "train.py").is_file():
        raise UserError(f"{recipe}: recipe not found; the demo needs a source checkout installed with "
                        "`pip install -e .` (see README)")
    return recipe


def run(args: argparse.Namespace) -> int:
    from upcycle_se.audio import read_audio
    from upcycle_se.corpus.build import build_preset
    from upcycle_se.export import export_model
    from upcycle_se.inference import UpCycleEnhancement
    from upcycle_se.metrics import composite, pesq_wb, stoi
    from upcycle_se.plots import save_spectrograms

    from upcycle_se.models.runtime import resolve_precision

    resolve_precision(args.precision, "cpu")  # a bad value fails now, not after the training
    out = Path(args.out).resolve()
    recipe = _recipe_dir()
    started = time.time()

    print(f"[1/4] building the {args.corpus} synthetic corpus in {out / 'corpus'}", flush=True)
    corpus = out / "corpus"
    build_preset(corpus, args.corpus, seed=0)

    print("[2/4] training Up-Cycle-SENet (small CPU config) with the VoiceBankDEMAND recipe", flush=True)
    train_out = out / f"train_{args.unpaired}"
    cmd = [sys.executable, "train.py", "hparams/upcycle_small.yaml", f"--data_folder={corpus}",
           f"--output_folder={train_out}", f"--prep_folder={out / 'prepared'}", f"--unpaired={args.unpaired}",
           f"--n_epochs={args.epochs}", f"--n_epochs_decay={args.decay_epochs}", "--device=cpu"]
    if args.unpaired == "paired":
        cmd.append("--loss_type=l1gan")
    print("      " + " ".join(cmd[1:]) + f"   (in {recipe})", flush=True)
    if subprocess.run(cmd, cwd=recipe).returncode != 0:
        raise UserError(f"training failed; see {train_out / 'log.txt'}")

    print(f"[3/4] exporting the best checkpoint to {out / 'model'}", flush=True)
    export_model(train_out, out / "model", overwrite=True)

    noisy_file = sorted((corpus / "noisy_testset_wav").glob("*.wav"))[0]
    enhanced_file = out / "enhanced" / noisy_file.name
    print(f"[4/4] enhancing {noisy_file.name} -> {enhanced_file} (precision {args.precision})", flush=True)
    enhancer = UpCycleEnhancement.from_hparams(source=str(out / "model"), savedir=str(out / "model"),
                                               run_opts={"precision": args.precision})
    enhanced_file.parent.mkdir(parents=True, exist_ok=True)
    enhancer.enhance_file(noisy_file, output_filename=enhanced_file)

    clean, _ = read_audio(corpus / "clean_testset_wav" / noisy_file.name)
    noisy, sample_rate = read_audio(noisy_file)
    enhanced, _ = read_audio(enhanced_file)
    print(f"\nTest set ({len(list((corpus / 'clean_testset_wav').glob('*.wav')))} files of unseen speakers "
          "and noises; synthetic corpus, not VoiceBank-DEMAND):")
    print((train_out / "test_summary.md").read_text())
    print(f"{noisy_file.name}:")
    for name, sig in (("noisy", noisy), ("enhanced", enhanced)):
        scores = composite(clean.numpy(), sig.numpy())
        print(f"  {name:9s} PESQ {pesq_wb(clean.numpy(), sig.numpy()):.2f}  STOI {stoi(clean.numpy(), sig.numpy()):.3f}"
              f"  CSIG {scores['csig']:.2f}  CBAK {scores['cbak']:.2f}  COVL {scores['covl']:.2f}")
    figure = save_spectrograms({"noisy": noisy, "enhanced": enhanced, "clean": clean}, sample_rate,
                               enhanced_file.with_name(enhanced_file.name + ".png"), title=noisy_file.name)
    print(f"spectrograms: {figure}")
    print(f"\ndemo finished in {time.time() - started:.0f} s; outputs in {out}")
    return 0
