"""Enhance audio files or folders (recursively) with an Up-Cycle-SENet model.

Each input file is written to OUTDIR under its own name (files found in a folder keep their path
relative to it), at its own sample rate, channel count, length and format. Outputs that already exist
are skipped unless --overwrite; every output is written to a hidden .part file and renamed when
complete, so an interrupted run leaves no half-written file. A file that cannot be enhanced is reported
on one line and counted, and the run goes on; the exit status is 1 if any file failed and 2 if there was
nothing to enhance (a missing path, a folder with no audio). With --spectrogram, OUTDIR/<name>.png (e.g.
a.wav.png) shows the noisy and enhanced spectrograms of each output, written also for skipped outputs that
have none yet.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Tuple, Union

from upcycle_se.audio import AUDIO_EXTENSIONS
from upcycle_se.errors import UserError

PROG = "upcycle-se enhance"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the ``enhance`` options."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="audio files and/or folders (searched recursively)")
    parser.add_argument("-o", "--output-dir", required=True, metavar="OUTDIR", help="folder for the enhanced files")
    parser.add_argument("--model", metavar="NAME|FOLDER", default=None,
                        help="a packaged model by name (default, unpaired, small; see the README's model table) "
                             "or a model folder made by `upcycle-se export` (default: default)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--precision", default="auto", metavar="{auto,fp32,bf16}",
                        help="arithmetic of the model: auto = bf16 where the CPU/GPU has bf16 hardware (AMX, "
                             "AVX512-BF16, CUDA bf16), fp32 elsewhere; bf16 forces it (slow without that "
                             "hardware); fp32 (default: auto)")
    parser.add_argument("--compile", action="store_true",
                        help="run the model through torch.compile (inductor, weights frozen): faster passes, "
                             "mostly in bf16, after a compile of a minute or more for each new input shape; "
                             "pays off on long files and on many files of one length (default: off)")
    parser.add_argument("--max-attenuation-db", default=None, metavar="DB",
                        help="attenuation limit: no time-frequency bin is attenuated by more than DB dB (a floor "
                             "of 10^(-DB/20) on the mask gain, as DeepFilterNet's); keeps more residual noise and "
                             "more of the speech; 'none': no limit (default: the model's own, 20 dB for the "
                             "packaged default and unpaired models, none for small)")
    parser.add_argument("--batch-size", type=int, default=None, metavar="N",
                        help="chunks (times channels) per forward pass (default: the model's, 4)")
    parser.add_argument("--chunk-seconds", type=float, default=None, metavar="S",
                        help="enhance in chunks of S seconds, cross-faded (0: whole files; default: the model's, 4)")
    parser.add_argument("--overlap-seconds", type=float, default=None, metavar="S",
                        help="cross-fade between chunks (default: the model's, 0.5)")
    parser.add_argument("--channels", choices=("each", "downmix"), default="each",
                        help="multichannel files: enhance each channel, or downmix to mono (default: each)")
    parser.add_argument("--spectrogram", action="store_true",
                        help="also write <output>.png beside each output: noisy and enhanced spectrograms")
    parser.add_argument("--overwrite", action="store_true", help="redo outputs that already exist")


def run(args: argparse.Namespace) -> int:
    """Enhances every input; returns 0, 1 (some file failed) or raises UserError (nothing to enhance)."""
    from tqdm import tqdm

    from upcycle_se.streaming import check_chunking
    from upcycle_se.models.runtime import resolve_precision

    from upcycle_se.models.attenuation import check_max_attenuation_db

    resolve_precision(args.precision, "cpu")  # a bad value is one error line before any work
    max_attenuation_db = getattr(args, "max_attenuation_db", None)
    check_max_attenuation_db(max_attenuation_db)  # likewise; None (not given) keeps the model's own limit
    out_dir = Path(args.output_dir).expanduser()
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"{out_dir}: exists and is not a folder")
    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size must be >= 1, got {args.batch_size}")
    jobs, problems = collect_jobs(args.inputs, out_dir)
    if not jobs:
        raise UserError("; ".join(_failure(*p)[0] for p in problems) if problems else "no input")
    failed: List[Tuple[str, str]] = []  # (line, reason)
    for path, problem in problems:
        failed.append(_failure(path, problem))
        _report(failed[-1][0])

    todo = [(src, dst) for src, dst in jobs if args.overwrite or not dst.is_file()]
    skipped = len(jobs) - len(todo)
    done = 0
    if todo:
        # only when there is work: a rerun costs nothing
        enhancer = load_enhancer(args.model, args.device, args.precision, compile=args.compile,
                                 max_attenuation_db=max_attenuation_db)
        check_chunking(enhancer.chunk_seconds if args.chunk_seconds is None else args.chunk_seconds,
                       enhancer.overlap_seconds if args.overlap_seconds is None else args.overlap_seconds)
        with tqdm(todo, desc="enhancing", unit="file", disable=None, file=sys.stderr) as bar:
            for src, dst in bar:
                bar.set_postfix_str(src.name, refresh=False)
                done += _attempt(src, failed, bar, lambda: enhancer.enhance_to_file(
                    src, dst, channels=args.channels, chunk_seconds=args.chunk_seconds,
                    overlap_seconds=args.overlap_seconds, batch_size=args.batch_size))
    plotted = 0
    if args.spectrogram:
        made = set(todo)
        plots = [(src, dst) for src, dst in jobs
                 if dst.is_file() and ((src, dst) in made or not spectrogram_path(dst).is_file())]
        with tqdm(plots, desc="spectrograms", unit="file", disable=None, file=sys.stderr) as bar:
            for src, dst in bar:
                plotted += _attempt(src, failed, bar, lambda: write_spectrogram(src, dst))
    summary = f"{PROG}: {done} done, {skipped} skipped"
    if skipped:
        summary += " (output exists; --overwrite redoes them)"
    summary += f", {len(failed)} failed"
    if failed:
        counts = Counter(reason for _, reason in failed)
        summary += " (" + ", ".join(f"{n} {reason}" for reason, n in counts.most_common()) + ")"
    summary += f" -> {out_dir}"
    if args.spectrogram:
        summary += f"; {plotted} spectrogram(s) (<output>.png)"
    print(summary)
    return 1 if failed else 0


def collect_jobs(inputs: Iterable[str], out_dir: Path) -> Tuple[List[Tuple[Path, Path]], List[Tuple[Path, str]]]:
    """(source, output) pairs for the inputs, and (path, problem) for each input that gave nothing to do.

    A file maps to ``out_dir/<name>``; a folder's audio files (by extension, hidden files and anything
    under ``out_dir`` left out) map to ``out_dir/<path relative to the folder>``. An output that is its
    input, or that of an earlier input, is a problem.
    """
    jobs: List[Tuple[Path, Path]] = []
    problems: List[Tuple[Path, str]] = []
    claimed = {}
    out_resolved = out_dir.resolve()
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            # Earlier outputs are not inputs, when OUTDIR lies inside the folder.
            skip_out = out_resolved != path.resolve() and _is_within(out_resolved, path.resolve())
            found = sorted(
                p for p in path.rglob("*")
                if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and not (skip_out and _is_within(p.resolve(), out_resolved))
            )
            if not found:
                problems.append((path, f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) in this folder"))
            pairs = [(p, out_dir / p.relative_to(path)) for p in found]
        elif path.exists():
            pairs = [(path, out_dir / path.name)]
        else:
            problems.append((path, "no such file or folder"))
            pairs = []
        for src, dst in pairs:
            if dst.resolve() == src.resolve():
                problems.append((src, "the output would overwrite the input; choose another OUTDIR"))
                continue
            key = os.path.normcase(str(dst.resolve()))
            if key in claimed:
                if claimed[key] != src.resolve():
                    problems.append((src, f"same output name as {claimed[key]} ({dst}); enhance them separately"))
                continue
            claimed[key] = src.resolve()
            jobs.append((src, dst))
    return jobs, problems


def load_enhancer(model: str = None, device: str = "cpu", precision: str = "auto", compile: bool = False,
                  max_attenuation_db: Optional[Union[float, str]] = None):
    """Loads ``model`` (a packaged model's name or a model folder; None: the default packaged model) on
    ``device`` in ``precision`` (auto, fp32, bf16), through ``torch.compile`` with ``compile`` (SpeechBrain's
    run option), with the attenuation limit ``max_attenuation_db`` (dB, or "none" for no limit; None: the
    model's own); one-line UserError if impossible."""
    import torch

    from upcycle_se.inference import PACKAGED_MODELS, UpCycleEnhancement, packaged_model_dir

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available here (use --device cpu)")
    # A name is a packaged model unless a folder of that name exists here (the folder wins: it is explicit).
    if model is None or (model in PACKAGED_MODELS and not Path(model).expanduser().is_dir()):
        name = model or "default"
        folder = packaged_model_dir(name)
        if not folder.is_dir():
            raise UserError(
                f"the packaged model {name!r} is missing ({folder}); pass --model FOLDER, made from a trained "
                "recipe with `upcycle-se export --checkpoint <recipe output folder> --out FOLDER`")
    else:
        folder = Path(model).expanduser()
    run_opts = {"device": device, "precision": precision}
    if compile:
        run_opts["compile"] = True
    if max_attenuation_db is not None:
        run_opts["max_attenuation_db"] = max_attenuation_db
    return UpCycleEnhancement.from_hparams(source=folder, run_opts=run_opts)


def spectrogram_path(output: Path) -> Path:
    """Where ``--spectrogram`` puts the figure of ``output``: beside it, ``<name>.png`` (``a.wav.png``)."""
    return output.with_name(output.name + ".png")


def write_spectrogram(noisy: Path, enhanced: Path) -> Path:
    """Saves the noisy and enhanced spectrograms (channels averaged, at the files' rate) beside ``enhanced``."""
    from upcycle_se.audio import read_audio
    from upcycle_se.plots import save_spectrograms

    noisy_sig, sample_rate = read_audio(noisy, allow_multichannel=True)
    enhanced_sig, _ = read_audio(enhanced, allow_multichannel=True)
    return save_spectrograms({"noisy": noisy_sig, "enhanced": enhanced_sig}, sample_rate,
                             spectrogram_path(enhanced), title=noisy.name)


def _attempt(src: Path, failed: List[Tuple[str, str]], bar, action: Callable[[], object]) -> int:
    """Runs ``action`` for ``src``; 1 if it worked, else 0 with the failure reported and recorded."""
    try:
        action()
        return 1
    except (KeyboardInterrupt, SystemExit):
        raise
    except UserError as err:
        failed.append(_failure(src, str(err)))
    except Exception as err:  # one bad file must not stop the run
        lines = str(err).strip().splitlines()
        failed.append(_failure(src, f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")))
    _report(failed[-1][0], bar)
    return 0


def _failure(path: Path, message: str) -> Tuple[str, str]:
    """(one-line report ``path: problem``, short reason for the summary: the problem without details)."""
    prefix = f"{path}: "
    problem = message[len(prefix):] if message.startswith(prefix) else message
    return prefix + problem, problem.split(" (")[0].split(";")[0]


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _report(line: str, bar=None) -> None:
    message = f"{PROG}: failed: {line}"
    if bar is not None:
        bar.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr)
