"""Export the best recipe checkpoint as a model folder for `upcycle-se enhance --model`.

The folder holds what inference needs: hyperparams.yaml (from upcycle_se/hparams/inference.yaml, with
the generator's settings from <save>/model_config.json) and generator.ckpt (the noisy->clean generator).
It loads with upcycle_se's UpCycleEnhancement and with SpeechBrain's WaveformEnhancement. With --onnx it
also holds generator.onnx (input "wav" [batch, time] float32 at 16 kHz, output "enhanced"), checked
against onnxruntime. The checkpoint with the highest --ckpt-key in its CKPT.yaml is chosen (by default
the key the recipe selected by: pesq, or snr_gain without paired validation; unixtime picks the latest); a CKPT+* folder given directly is exported as it is. The folder is
built beside --out, checked by loading and running it once, then renamed into place, so a failed export
leaves nothing behind.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``export`` options."""
    parser.add_argument("--checkpoint", required=True, metavar="FOLDER",
                        help="recipe output folder, its save/ folder, or one save/CKPT+* folder")
    parser.add_argument("--out", required=True, metavar="FOLDER", help="model folder to create")
    parser.add_argument("--ckpt-key", default=None, metavar="KEY",
                        help="CKPT.yaml value to maximise when choosing the checkpoint (default: pesq, or "
                             "snr_gain where the run had no paired validation)")
    parser.add_argument("--onnx", action="store_true",
                        help="also write generator.onnx, checked against onnxruntime (needs onnx, onnxruntime)")
    parser.add_argument("--max-attenuation-db", default=None, metavar="DB",
                        help="the folder's own attenuation limit in dB, applied when it enhances unless a run "
                             "option says otherwise (as the packaged default's 20); default: none")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    """Exports; prints the chosen checkpoint, the model folder and the ONNX check."""
    from upcycle_se.export import ONNX_FILE, chosen_key, export_model

    info = export_model(args.checkpoint, args.out, ckpt_key=args.ckpt_key, overwrite=args.overwrite,
                        onnx=args.onnx, max_attenuation_db=args.max_attenuation_db)
    key = chosen_key(info.checkpoint.meta, args.ckpt_key)
    how = (f"{key} = {info.checkpoint.meta[key]}, best of {info.n_compared}"
           if info.n_compared else "chosen by hand")
    print(f"upcycle-se export: {info.checkpoint.path.name} ({how}) -> {info.folder}")
    if info.onnx_max_diff is not None:
        print(f"upcycle-se export: {info.folder / ONNX_FILE} matches PyTorch within {info.onnx_max_diff:.2g} "
              "(max abs difference, onnxruntime CPU)")
    return 0
