#!/usr/bin/env python3
"""Levers for keeping intelligibility (issue 27): `default` trained on with each lever, chosen on validation.

Usage::

    python benchmarks/speech_keep.py [--work /work/runs/stoi] [--arms control sisdr babble]
        [--parallel 2] [--train-only | --score-only | --render-only]

Every arm trains the previous `default` (``benchmarks/starts/base_compressed``, packaged until this benchmark's
``control`` arm replaced it) on for the same steps
with the VoiceBankDEMAND recipe (paired, supervised L1 on compressed spectra, as `default` was made:
batch 4 x 1 s, 4 + 2 epochs of 300 steps, lr 2e-4 then a linear decay, bf16 where the CPU has it, one
thread per training, ``--parallel`` trainings side by side). The arms differ in one lever each:

- ``control``: nothing else (what more steps alone buy);
- ``shortfall`` (measured, then deleted with its option: see ``docs/experiments/speech_keep.md``): removed
  speech cost twice the residual noise in the magnitude term (the asymmetric loss of Wilson et al., IWAENC 2018);
- ``sisdr``: ``--sisdr_weight=0.01``: negative SI-SDR in dB beside the L1 (Le Roux et al., ICASSP 2019),
  its gradient about half the L1's on `default` (measured on training batches when the weight was set);
- ``babble``: the training data: the same clean speech with half of the files' noise drawn from
  ``babble_many`` (2-10 talkers) instead of the ``broad`` mixture (``--train-noises broad,babble_many``);
- ``selfbabble`` (explored after the choice, not among the default ``--arms``): every second training file
  in babble of its own speaker's other utterances (:func:`build_self_babble_corpus`).

Round 2 (``--arms control selfbabble selfbabble4 selfbabble_sisdr``), the same start and steps:

- ``selfbabble4``: every fourth training file in same-voice babble (half ``selfbabble``'s share, for its PESQ cost);
- ``selfbabble_sisdr``: ``selfbabble`` with the SI-SDR term of ``sisdr`` (which bought +0.07 PESQ on ``valid``).

The unpaired round (``--arms unpaired_control unpaired_selfbabble``): the packaged `unpaired` of the time
(``base_unpaired_pauses_long``, now in ``benchmarks/starts/``) trained on with its own setting
(``--unpaired=shuffle --loss_type=gan``, remix weight 40 with noise mined from pauses, EMA 0.998, lr 5e-4, 2 + 1
epochs: 900 steps) on the main corpus (``unpaired_control``) and on ``selfbabble``'s (``unpaired_selfbabble``: the
noisy pile has same-voice babble; no clean reference is seen in either). The SI-SDR term needs clean
references, so it has no unpaired arm.

Round 3 (``--arms selfbabble_sisdr selfbabble_add long``), for the PESQ that round 2's choice paid on clicks:

- ``selfbabble_add``: ``selfbabble_sisdr``'s same-voice babble files *added* beside every broad-noise file of the
  main corpus (1,800 files instead of 1,200; 3 + 1 epochs of 450 steps, the same 1,800 steps), SI-SDR 0.01;
- ``selfbabble_add1`` (added after the first two were scored, judged by the same rule): same-voice babble
  files beside *every* broad-noise file (2,400 files, half of them same-voice babble as in ``selfbabble_sisdr``,
  which ``selfbabble_add``'s third did not keep STOI with); 2 + 1 epochs of 600 steps;
- ``long``: round 2's choice trained on from it for 7,200 more steps (its data and loss);
- a fourth validation set, ``valid_heldout`` (:data:`VALID_HELDOUT`): noise families no training corpus has
  (clicks, pink, ALSA's recorded noise; the synthetic test set's families, other seed), where the clicks cost
  of round 2 would have shown.

Choice, on validation data only (never on a set that is reported):

- ``valid``: the 80 validation files of the training corpus (2 held-out speakers, ``broad`` noise);
- ``valid_babble``: 96 files of 4 other synthetic speakers (corpus seed 1) in ``babble_many`` and ``cafe``
  noise at 0, 2.5, 5 and 7.5 dB, where `default` loses STOI on real voices (``benchmarks/stoi_loss.txt``).

Also scored, not used by round 1's choice: ``valid_selfbabble`` (:func:`build_self_babble`), ``valid_babble``'s
clean files in babble of their own speaker's other files, the diagnostic of why ``valid_babble`` misled; round 2
chooses on it. The ``long`` arm trains round 2's choice (``selfbabble_sisdr``, its data and loss) on from that
arm for 7,200 more steps (``--arms long --parallel 1``, after the others).

Every model is scored with its 20 dB attenuation limit, as `default` ships. The chosen arm (round 1) is the
one with the largest mean STOI gain over `default` on ``valid_babble`` among the arms whose PESQ on ``valid``
is at least `default`'s minus 0.02 and whose STOI gain on ``valid_babble`` is significant (95 % CI above 0);
none chosen when no arm qualifies.

Round 2's rule (:func:`choose_same_voice`, fixed before its arms were trained) asks whether an arm should
replace the round-1 choice, ``control``, now packaged as `default`: among the arms whose PESQ on ``valid`` is
at least the control's minus 0.02, whose STOI gain over the control on ``valid_selfbabble`` is significant
(95 % CI above 0) and whose STOI on ``valid`` and ``valid_babble`` is not significantly below the control's
(95 % CI reaching 0), the one with the largest mean of its STOI gains over the control on ``valid_babble``
and ``valid_selfbabble``; none (the control stays) when no arm qualifies. The unpaired round uses the same
rule with ``unpaired_control`` as the control, and an arm must also keep ``valid`` PESQ within 0.02 of the
packaged `unpaired`'s to replace it (:func:`choose_unpaired`).

Round 3's rule (:func:`choose_round3`, fixed before its arms were scored) asks whether an arm should replace
``selfbabble_sisdr`` (packaged as `default` from round 2 to round 4): among the arms whose PESQ on ``valid`` and
``valid_heldout`` and whose STOI on all four validation sets are not significantly below its (95 % CI of the
paired difference reaching 0), and whose PESQ gain is significant on at least one of ``valid`` and
``valid_heldout``, the one with the largest mean of the two mean PESQ gains (above 0); none: it stays.

Round 4's rule (:func:`choose_round4`, fixed before its arms were trained) trades a bounded STOI loss for
PESQ: among its own arms (``long_ema``, ``add_long_ema``: the long run with a weight average), those whose
PESQ on ``valid`` and ``valid_heldout`` is not significantly below the incumbent's and significantly above it
on one of them, and whose mean STOI on each validation set is at most 0.010 below the incumbent's and at or
above the noisy input's (or the incumbent's, where that is below it); the largest mean PESQ gain wins.

Round 5 (``--arms add_long_ema add_real add_stoi``): round 4's choice, ``add_long_ema`` (packaged as `default`),
lost STOI on the hard set's real voice in babble where every synthetic validation set said it would not. Two
new validation sets, built before its arms trained: ``valid_piperbabble`` (:func:`build_piper_babble`: the
Piper neural voice as target and talkers), where `default` *gains* STOI over the noisy input (+0.028), so a
natural synthetic voice is no proxy; and ``valid_realbabble`` (:func:`build_real_babble`: real recorded voices
from KLettres, none of them trained on, none of ALSA's clips), where it loses it (-0.021 +- 0.011), as on the
hard set. Its arms train ``add_long_ema`` on for 3,600 steps with its setting and one lever each:

- ``add_real``: real voices in the data: 600 files of KLettres' five *training* speakers in real-voice babble or
  broad noise added to its corpus (:func:`build_real_voice_corpus`; 2,400 files, 4 + 2 epochs of 600 steps);
- ``add_stoi``: a STOI term in the loss (``--stoi_weight=0.2``: negative differentiable STOI, Fu et al. 2018,
  SpeechBrain's ``stoi_loss``), on its own data (6 + 2 epochs of 450 steps).

Round 5's rule (:func:`choose_round5`, fixed before its arms were trained) asks for the STOI back on real voices
at no PESQ cost: STOI gain over ``add_long_ema`` on ``valid_realbabble`` significant; PESQ on ``valid``,
``valid_heldout`` and ``valid_realbabble`` not significantly below its and at most 0.02 below in the mean; STOI
on the other five validation sets not significantly below its; the largest mean STOI gain wins.

Round 5, unpaired (``--arms unpaired_selfbabble unpaired_real``; no arm chosen): the packaged
`unpaired` trained on with its own setting on ``add_real``'s corpus (real voices in the noisy and the clean
pile), 600 steps; :func:`choose_round5_unpaired` takes it when its PESQ gain is significant on one of ``valid``,
``valid_heldout`` and ``valid_realbabble``, none of the three is below (significantly, or by more than 0.02 in
the mean), and STOI is not significantly below on any validation set.

Writes ``--json`` (per-file rows, summaries, choice, commands, machine) and ``--table`` (markdown). The
real-voice sets are then scored by ``benchmarks/stoi_loss.py --model``.

The corpora are synthetic (flite / espeak-ng / Piper voices): none of these are VoiceBank-DEMAND scores.
Reruns are idempotent: corpora, manifests, trainings (train.py resumes from its checkpoints), exports and
per-file scores already there are reused.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/speech_keep.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.quality import Budget, _paired_diff, _unpaired_ft, ci95, machine_info, prepare  # noqa: E402
from benchmarks.stoi_loss import _model_key, _write_json_atomic, scored_rows  # noqa: E402

DEFAULT_WORK = Path("/work/runs/stoi")
START = REPO / "benchmarks" / "starts" / "base_compressed"
#: The unpaired round's start: the packaged `unpaired` until the round replaced it.
UNPAIRED = REPO / "benchmarks" / "starts" / "base_unpaired_pauses_long"
#: The packaged `unpaired`'s own setting (its card), 2 + 1 epochs from it: overrides `TRAIN_OPTIONS`.
UNPAIRED_OPTIONS = {"unpaired": "shuffle", "loss_type": "gan", "lr": "0.0005", "n_epochs": "2", "n_epochs_decay": "1",
                    "spectral_compress": "1.0",  # the paired arms' compressed spectra: not part of its setting
                    **_unpaired_ft(UNPAIRED, remix_weight="40", ema_decay="0.998", remix_noise="pauses")}
RECIPE = REPO / "recipes" / "VoiceBankDEMAND"
ATTENUATION_DB = 20.0
METRICS = ("pesq", "stoi")
SAMPLE_RATE = 16000
#: How far below `default`'s PESQ on ``valid`` a chosen arm may be.
PESQ_TOLERANCE = 0.02

#: ``add_real``'s corpus folder and how many real-voice files it adds per KLettres training speaker.
REAL_CORPUS, REAL_UTTS = "selfbabble_add_real", 120
#: arm -> (corpus folder under the work folder, extra train.py options, label)
ARMS: Dict[str, tuple] = {
    "control": ("main", {}, "trained on, same loss and data (control)"),
    "sisdr": ("main", {"sisdr_weight": "0.01"}, "+ SI-SDR term, weight 0.01 (Le Roux et al. 2019)"),
    "babble": ("babble", {}, "half of the training noise babble (babble_many, 2-10 talkers)"),
    "selfbabble": ("selfbabble", {}, "half of the training files in babble of their own speaker's other utterances "
                   "(explored after the choice, on the diagnostic set)"),
    "selfbabble4": ("selfbabble4", {}, "a quarter of the training files in babble of their own speaker's other "
                    "utterances (round 2)"),
    "selfbabble_sisdr": ("selfbabble", {"sisdr_weight": "0.01"}, "selfbabble's data + the SI-SDR term, weight 0.01 "
                         "(round 2)"),
    "unpaired_control": ("main", UNPAIRED_OPTIONS, "the packaged `unpaired` trained on with its own setting, "
                         "900 steps (unpaired round)"),
    "unpaired_selfbabble": ("selfbabble", UNPAIRED_OPTIONS, "the same on selfbabble's corpus: same-voice babble in "
                            "half the noisy pile (unpaired round)"),
    # the long run: the chosen arm's setting trained on from the chosen arm for 16 + 8 more epochs (7,200 steps).
    # Round 2 chose selfbabble_sisdr; the long run of round 1's choice (the control) was stopped at 1,500 steps
    # when round 2 replaced its setting (its folder is kept as runs/long_control, never scored).
    "selfbabble_add": ("selfbabble_add", {"sisdr_weight": "0.01", "n_epochs": "3", "n_epochs_decay": "1"},
                       "selfbabble_sisdr's same-voice babble files *added* to the main corpus's broad-noise files "
                       "(1,800 files: every clean file keeps its broad mixture), SI-SDR 0.01; 3 + 1 epochs of 450 "
                       "steps, the same 1,800 steps (round 3)"),
    "selfbabble_add1": ("selfbabble_add1", {"sisdr_weight": "0.01", "n_epochs": "2", "n_epochs_decay": "1"},
                        "same-voice babble files added beside *every* broad-noise file (2,400 files: half in "
                        "same-voice babble, as selfbabble_sisdr, and every clean file keeps its broad mixture), "
                        "SI-SDR 0.01; 2 + 1 epochs of 600 steps, the same 1,800 steps (round 3, second arm)"),
    "long": ("selfbabble", {"init_from": "{models}/selfbabble_sisdr", "sisdr_weight": "0.01", "n_epochs": "16",
                            "n_epochs_decay": "8"},
             "the chosen setting (selfbabble_sisdr) trained on from that arm for 7,200 more steps"),
    # Round 4: the long run again with a weight average (the recipe's opt-in `ema_decay`; Polyak & Juditsky
    # 1992), which `long` (no average) isolates; and the same on selfbabble_add's data, from that arm.
    "long_ema": ("selfbabble", {"init_from": "{models}/selfbabble_sisdr", "sisdr_weight": "0.01", "n_epochs": "16",
                                "n_epochs_decay": "8", "ema_decay": "0.999"},
                 "`long` with an exponential moving average of the weights (decay 0.999: about 1,000 steps), "
                 "validated and exported (round 4)"),
    "add_long_ema": ("selfbabble_add", {"init_from": "{models}/selfbabble_add", "sisdr_weight": "0.01",
                                        "n_epochs": "11", "n_epochs_decay": "5", "ema_decay": "0.999"},
                     "selfbabble_add's setting trained on from that arm for 11 + 5 epochs of 450 steps (7,200 "
                     "steps, as `long`), with the same weight average (round 4)"),
    # Round 5: round 4's choice (packaged as `default`) trained on for 3,600 more steps with its setting and one
    # lever each, for the STOI it loses on real voices in babble: real voices in the data, or a STOI term.
    "add_real": (REAL_CORPUS, {"init_from": "{models}/add_long_ema", "sisdr_weight": "0.01", "n_epochs": "4",
                               "n_epochs_decay": "2", "ema_decay": "0.999"},
                 "add_long_ema trained on from it on its own data plus 600 files of real recorded voices (KLettres' "
                 "five training speakers, in real-voice babble or broad noise: build_real_voice_corpus), 4 + 2 "
                 "epochs of 600 steps (3,600 steps), SI-SDR 0.01, EMA 0.999 (round 5)"),
    # Round 5, unpaired: the packaged `unpaired` trained on with its own setting on add_real's corpus (the noisy pile
    # and the clean pile each get the real voices; no clean reference of a noisy file is seen), one decay epoch.
    "unpaired_real": (REAL_CORPUS, {**UNPAIRED_OPTIONS, "init_from": "{models}/unpaired_selfbabble", "n_epochs": "0",
                                    "n_epochs_decay": "1"},
                      "the packaged `unpaired` trained on with its own setting on add_real's corpus (real voices in "
                      "both piles), 600 steps at half its lr (one decay epoch) (round 5, unpaired)"),
    "add_stoi": ("selfbabble_add", {"init_from": "{models}/add_long_ema", "sisdr_weight": "0.01", "stoi_weight": "0.2",
                                    "n_epochs": "6", "n_epochs_decay": "2", "ema_decay": "0.999"},
                 "add_long_ema trained on from it on its own data with a STOI term, weight 0.2 (negative STOI, "
                 "Fu et al. 2018; its gradient about half the L1's on add_long_ema, median of 8 training "
                 "batches), 6 + 2 epochs of 450 steps (3,600 steps), SI-SDR 0.01, EMA 0.999 (round 5)"),
}
#: The arms that compare levers (``--arms`` default); ``long`` runs after the choice, alone.
LEVER_ARMS = ("control", "sisdr", "babble")
#: The same-voice babble corpora: folder -> every how many training files of a speaker get same-voice babble.
SELF_BABBLE_SHARES = {"selfbabble": 2, "selfbabble4": 4}
#: The same-voice babble corpora whose babble files are added beside the broad ones: folder -> every how many.
SELF_BABBLE_EXTRA = {"selfbabble_add": 2, "selfbabble_add1": 1}
#: The training corpora: folder -> build-corpus arguments (the work folder's ``<folder>/corpus``; ``main``
#: is the work folder itself, as ``benchmarks.quality.prepare`` expects).
CORPORA = {
    "main": ["--preset", "broad_benchmark"],
    "babble": ["--preset", "broad_benchmark", "--train-noises", "broad,babble_many"],
}
VALID_BABBLE = ["--preset", "small", "--seed", "1", "--train-speakers", "2", "--utts", "2", "--test-speakers", "4",
                "--test-utts", "24", "--train-noises", "white", "--test-noises", "babble_many,cafe",
                "--test-snrs", "0,2.5,5,7.5"]
#: Round 3's validation set of noise families no training corpus has (the synthetic test set's clicks, pink and
#: ALSA's recorded noise; other seed, so other sentences, warps and noise draws): where round 2's PESQ cost on
#: clicks showed only on reported sets. 72 files, 4 speakers, 0-15 dB.
HELDOUT = "valid_heldout"
VALID_HELDOUT = ["--preset", "small", "--seed", "2", "--train-speakers", "2", "--utts", "2", "--test-speakers", "4",
                 "--test-utts", "18", "--train-noises", "white", "--test-noises", "clicks,pink,alsa",
                 "--test-snrs", "0,5,10,15"]
TRAIN_OPTIONS = {"unpaired": "paired", "loss_type": "l1", "mask_type": "complex", "device": "cpu", "n_jobs": "1",
                 "n_epochs": "4", "n_epochs_decay": "2", "batch_size": "4", "crop_samples": "16000", "lr": "0.0002",
                 "ckpt_interval_minutes": "10", "generator_preset": "base", "init_from": str(START),
                 "spectral_compress": "0.3"}
#: The budget whose manifest subset the trainings validate on (8 files per held-out speaker, as `default`).
BUDGET = Budget("speech_keep", "broad_benchmark", "hparams/upcycle_small.yaml", [], valid_utts_per_speaker=8)


def _cli(*args: str) -> List[str]:
    return [sys.executable, "-m", "upcycle_se.cli", *args]


def corpus_root(work: Path, folder: str) -> Path:
    """The work folder a corpus lives under (``<root>/corpus``, ``<root>/prep_speech_keep``)."""
    return work if folder == "main" else work / folder


def _link_corpus(src: Path, out: Path) -> None:
    """Hard-links every file of the corpus ``src`` into ``out`` but its ``corpus_info.json`` (written last by the
    caller, marking the derived corpus complete); a file already there is replaced by the link."""
    for path in src.rglob("*"):
        if path.is_file() and path.name != "corpus_info.json":
            dst = out / path.relative_to(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if dst.exists():
                dst.unlink()
            os.link(path, dst)


def build_self_babble_corpus(work: Path, seed: int = 0, log=print, every: int = 2, extra: bool = False) -> Path:
    """The ``selfbabble`` arm's training corpus (``selfbabble4``'s with ``every=4``): the main corpus with every
    ``every``-th training file's noise (per speaker, from its first) replaced by babble of its own speaker's
    other training utterances (:func:`build_self_babble`'s recipe: 4-7 warped talkers,
    :func:`upcycle_se.corpus.realvoice.real_babble`) at that file's SNR.

    With ``extra`` (``selfbabble_add``'s corpus), the babble files are added under new ids (``p226_001`` ->
    ``p226_001x``, clean file hard-linked) and every broad-noise file stays: the same babble draws as the
    replacing corpus of the same ``every``.

    Every other file is hard-linked from ``work/corpus``; the changed files and the log are written anew, and
    ``corpus_info.json`` last, so an interrupted build is redone. Returns the corpus folder.
    """
    from upcycle_se.audio import load_mono, write_audio_atomic
    from upcycle_se.corpus.build import read_log
    from upcycle_se.corpus.self_babble import self_babble_mixtures

    folder = {v: k for k, v in (SELF_BABBLE_EXTRA if extra else SELF_BABBLE_SHARES).items()}[every]
    src, out = work / "corpus", corpus_root(work, folder) / "corpus"
    if (out / "corpus_info.json").is_file():
        return out
    _link_corpus(src, out)
    log_path = src / "logfiles" / "log_trainset.txt"
    entries = read_log(log_path)
    clean_dir = src / "clean_trainset_wav"
    by_speaker: Dict[str, List[str]] = {}
    for uid in sorted(entries):
        by_speaker.setdefault(uid.split("_")[0], []).append(uid)
    lines = {uid: f"{uid} {noise} {snr}" for uid, (noise, snr) in entries.items()}
    for k, (spk, uids) in enumerate(sorted(by_speaker.items())):
        clips = {u: load_mono(clean_dir / f"{u}.wav", SAMPLE_RATE).numpy() for u in uids}
        mixtures = self_babble_mixtures(clips, {u: entries[u][1] for u in uids}, SAMPLE_RATE, every=every, seed=seed,
                                        speaker_index=k)
        for uid, noisy in mixtures.items():
            new = f"{uid}x" if extra else uid
            dst = out / "noisy_trainset_wav" / f"{new}.wav"
            if extra:
                clean_dst = out / "clean_trainset_wav" / f"{new}.wav"
                if not clean_dst.exists():
                    os.link(clean_dir / f"{uid}.wav", clean_dst)
            if dst.exists():
                dst.unlink()  # a hard link: never write through it into the main corpus
            write_audio_atomic(dst, noisy, SAMPLE_RATE)
            lines[new] = f"{new} self_babble {entries[uid][1]}"
        log(f"{folder} corpus: speaker {k + 1}/{len(by_speaker)}")
    dst_log = out / "logfiles" / "log_trainset.txt"
    dst_log.unlink()
    dst_log.write_text("\n".join(lines[u] for u in sorted(lines)) + "\n")
    info = json.loads((src / "corpus_info.json").read_text())
    info["derived"] = (f"speech_keep {folder}: every {every}-th training file of each speaker in same-voice babble"
                       + (", added beside its broad-noise file" if extra else ""))
    tmp = out / "corpus_info.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, out / "corpus_info.json")
    return out


def build_real_voice_corpus(work: Path, seed: int = 0, log=print) -> Path:
    """The ``add_real`` arm's training corpus: ``selfbabble_add``'s 1,800 files (hard-linked) and 600 files of
    real recorded voices, KLettres' five training speakers (:mod:`upcycle_se.corpus.realspeech`), 120 each.

    Each clean file is a :func:`~upcycle_se.corpus.realspeech.real_utterance` with the corpus's silences,
    floor and training speech levels (-40..-16 dBFS); its noise is, by turns, babble of real voices (4-7
    warped talkers from its own speaker's other clips or from the other training voices, babble-only ones
    included, 40 clips drawn per file; :func:`upcycle_se.corpus.realvoice.real_babble`) or the ``broad``
    mixture whose babble talkers are those real voices; SNRs from the corpus's training SNRs (-5..20 dB).
    Speaker ids ``rv<lang>`` (``rvde_001``), never validation speakers. ``corpus_info.json`` is written last,
    so an interrupted build is redone. Returns the corpus folder.
    """
    from upcycle_se.audio import write_audio_atomic
    from upcycle_se.corpus import noise as N
    from upcycle_se.corpus.build import seeded_rng
    from upcycle_se.corpus.realspeech import BABBLE_SPEAKERS, TARGET_SPEAKERS, real_utterance, speaker_clips
    from upcycle_se.corpus.realvoice import real_babble

    src = build_self_babble_corpus(work, seed=seed, log=log, every=2, extra=True)
    out = corpus_root(work, REAL_CORPUS) / "corpus"
    if (out / "corpus_info.json").is_file():
        return out
    _link_corpus(src, out)
    info = json.loads((src / "corpus_info.json").read_text())
    snrs, levels = info["config"]["train_snrs"], info["config"]["train_levels_db"]
    voices = {v: speaker_clips(v, SAMPLE_RATE) for v in (*TARGET_SPEAKERS["train"], *BABBLE_SPEAKERS["train"])}
    everyone = [c for v in voices.values() for c in v.values()]
    log_path = out / "logfiles" / "log_trainset.txt"
    lines = log_path.read_text().splitlines()
    for s, spk in enumerate(TARGET_SPEAKERS["train"]):
        others = {f"{v}/{k}": c for v in voices if v != spk for k, c in voices[v].items()}
        for u in range(REAL_UTTS):
            rng = seeded_rng(seed, 9, s, u)
            sig, used = real_utterance(voices[spk], rng, SAMPLE_RATE)
            level = 10 ** (rng.uniform(*levels) / 20.0)
            lead, tail = (np.zeros(int(rng.uniform(0.1, 0.35) * SAMPLE_RATE)) for _ in range(2))
            n = len(lead) + len(sig) + len(tail)
            clean = np.concatenate([lead, level * sig, tail]) + 10 ** (-78 / 20.0) * rng.standard_normal(n)
            snr = float(rng.choice(snrs))
            if u % 2 == 0:
                own = u % 4 == 0
                pool = {k: v for k, v in voices[spk].items() if k not in used} if own else others
                names = sorted(pool)
                pick = [names[j] for j in rng.choice(len(names), size=min(40, len(names)), replace=False)]
                noise, _ = real_babble(n, SAMPLE_RATE, rng, {k: pool[k] for k in pick})
                family = "real_babble_own" if own else "real_babble_other"
            else:
                noise = N.make_noise("broad", n, SAMPLE_RATE, rng, N.NoiseContext(SAMPLE_RATE, babble=everyone))
                family = "broad_real_babble"
            c, noisy = N.mix_at_snr(clean, noise, snr, SAMPLE_RATE)
            uid = f"rv{spk.lower().replace('_', '')}_{u + 1:03d}"
            write_audio_atomic(out / "clean_trainset_wav" / f"{uid}.wav", c, SAMPLE_RATE)
            write_audio_atomic(out / "noisy_trainset_wav" / f"{uid}.wav", noisy, SAMPLE_RATE)
            lines.append(f"{uid} {family} {snr}")
        log(f"{REAL_CORPUS} corpus: real speaker {s + 1}/{len(TARGET_SPEAKERS['train'])}")
    log_path.unlink()  # a hard link: never write through it into selfbabble_add's corpus
    log_path.write_text("\n".join(sorted(lines)) + "\n")
    info["derived"] = (f"speech_keep {REAL_CORPUS}: selfbabble_add's corpus and {REAL_UTTS} files of each KLettres "
                       "training speaker (real recorded voices) in real-voice babble or broad noise")
    tmp = out / "corpus_info.json.tmp"
    tmp.write_text(json.dumps(info, indent=2))
    os.replace(tmp, out / "corpus_info.json")
    return out


def build_data(work: Path, log=print) -> None:
    """Builds (or reuses) the training corpora with their manifests, and the validation sets (babble, held-out
    noise families)."""
    valid = {"valid_babble": VALID_BABBLE, HELDOUT: VALID_HELDOUT}
    for folder, args in {**CORPORA, **valid}.items():
        out = work / folder if folder in valid else corpus_root(work, folder) / "corpus"
        if not (out / "corpus_info.json").is_file():
            log(f"building {out}")
            subprocess.run(_cli("build-corpus", str(out), *args, "--no-progress"), check=True, cwd=REPO)
        if folder not in valid:
            prepare(corpus_root(work, folder), BUDGET, log)
    for shares, extra in ((SELF_BABBLE_SHARES, False), (SELF_BABBLE_EXTRA, True)):  # derived from the main corpus
        for folder, every in shares.items():
            build_self_babble_corpus(work, log=log, every=every, extra=extra)
            prepare(corpus_root(work, folder), BUDGET, log)


def train_command(arm: str, work: Path, bf16: bool) -> List[str]:
    """The train.py command line of one arm (run in ``recipes/VoiceBankDEMAND``)."""
    folder, extra, _ = ARMS[arm]
    root = corpus_root(work, folder)
    extra = {k: v.format(models=work / "models") for k, v in extra.items()}
    options = {"data_folder": str(root / "corpus"), "output_folder": str(work / "runs" / arm),
               "prep_folder": str(root / f"prep_{BUDGET.name}"), **TRAIN_OPTIONS, **extra}
    if bf16:
        options["precision"] = "bf16"
    return [sys.executable, "train.py", "hparams/upcycle_small.yaml", *[f"--{k}={v}" for k, v in options.items()]]


def model_dir(work: Path, arm: str) -> Path:
    return work / "models" / arm


def train_and_export(arm: str, work: Path, bf16: bool, log=print, threads: int = 1) -> Path:
    """Trains one arm (resuming) and exports its best-validation checkpoint with `default`'s 20 dB limit in the
    folder; skipped when exported."""
    out = model_dir(work, arm)
    if (out / "generator.ckpt").is_file():
        return out
    cmd = train_command(arm, work, bf16)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    (work / "runs").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log(f"{arm}: training ({' '.join(cmd[1:])})")
    with open(work / "runs" / f"{arm}.log", "a") as f:
        subprocess.run(cmd, check=True, cwd=RECIPE, env=env, stdout=f, stderr=subprocess.STDOUT)
    subprocess.run(_cli("export", "--checkpoint", str(work / "runs" / arm), "--out", str(out), "--max-attenuation-db",
                        str(ATTENUATION_DB)), check=True, cwd=REPO)
    log(f"{arm}: trained and exported in {(time.perf_counter() - t0) / 60:.1f} min")
    return out


# ------------------------------------------------------------------------------------------ scoring
#: The diagnostic set's folder under the work folder (:func:`build_self_babble`).
SELF_BABBLE = "valid_selfbabble"


def _write_test_pair(out: Path, uid: str, clean: np.ndarray, noise: np.ndarray, snr: float) -> None:
    """Mixes ``clean`` and ``noise`` ``[time]`` at ``snr`` dB (the corpus's SNR definition) and writes the pair
    ``uid`` into the test half of the VoiceBank layout under ``out``, each file atomically."""
    from upcycle_se.audio import write_audio_atomic
    from upcycle_se.corpus import noise as N

    c, noisy = N.mix_at_snr(clean, noise, snr, SAMPLE_RATE)
    write_audio_atomic(out / "clean_testset_wav" / f"{uid}.wav", c, SAMPLE_RATE)
    write_audio_atomic(out / "noisy_testset_wav" / f"{uid}.wav", noisy, SAMPLE_RATE)


def build_self_babble(work: Path, seed: int = 0) -> Path:
    """Same-voice babble on ``valid_babble``'s clean files: a diagnostic set, never used for the choice.

    Each clean file gets babble made, as the hard real-voice set makes it from ALSA's clips
    (:func:`upcycle_se.corpus.realvoice.real_babble`: 4-7 talkers, each a warped pseudo-speaker), from the
    *other* files of the same synthetic speaker, at that file's SNR in ``valid_babble``: the interferers share
    the target's voice, which the synthetic babble of other voices lacks. Written to
    ``work/valid_selfbabble/{clean,noisy}_testset_wav`` with ``logfiles/log_testset.txt`` (written last);
    an existing complete set is reused. Deterministic in ``seed``.
    """
    from upcycle_se.audio import load_mono
    from upcycle_se.corpus.build import read_log
    from upcycle_se.corpus.realvoice import _write_text_atomic, babble_pool, real_babble

    src, out = work / "valid_babble", work / SELF_BABBLE
    log_path = out / "logfiles" / "log_testset.txt"
    if log_path.is_file():
        return out
    log = read_log(src / "logfiles" / "log_testset.txt")
    clean = {uid: load_mono(src / "clean_testset_wav" / f"{uid}.wav", SAMPLE_RATE).numpy() for uid in sorted(log)}
    lines = []
    for i, uid in enumerate(sorted(log)):
        speaker = uid.split("_")[0]
        pool = babble_pool({k: v for k, v in clean.items() if k.split("_")[0] == speaker}, uid, SAMPLE_RATE)
        babble, _ = real_babble(len(clean[uid]), SAMPLE_RATE, np.random.default_rng([seed, i]), pool)
        _write_test_pair(out, uid, clean[uid], babble, log[uid][1])
        lines.append(f"{uid} self_babble {log[uid][1]}")
    _write_text_atomic(log_path, "\n".join(lines) + "\n")
    return out


#: Round 5's validation babble (:func:`build_piper_babble`): natural-sounding voices, none of ALSA's clips.
PIPER_BABBLE = "valid_piperbabble"
#: Its speakers, files per speaker and SNRs (dB; ``valid_babble``'s).
PIPER_BABBLE_SPEAKERS, PIPER_BABBLE_UTTS, PIPER_BABBLE_SNRS = 4, 24, (0.0, 2.5, 5.0, 7.5)


def build_piper_babble(work: Path, seed: int = 5) -> Path:
    """Round 5's validation babble: Piper-voice targets in babble of Piper-voice talkers (96 files).

    The synthetic validation babble (flite / espeak-ng talkers) under-predicted what round 4's choice cost on
    the hard set's babble of a real voice (``docs/experiments/speech_keep.md``). The most natural voice here is
    the Piper neural voice, so this set takes its targets *and* its talkers from it: 4 pseudo-speakers with
    seeded warps (pitch and formants), rates and Piper noises drawn like the training corpus's
    (``upcycle_se.corpus.build._plan_piper_speakers``) at indices no corpus uses (3000+), 24 utterances each.
    Every second file is in babble of its own speaker's other utterances (``piper_selfbabble``, as the hard
    set's real babble is made from the target voice's other clips), the others in babble of the other three
    speakers' utterances (``piper_babble``); 4-7 talkers each, each one resampling-warped pseudo-speaker
    (:func:`upcycle_se.corpus.realvoice.real_babble`), at 0 / 2.5 / 5 / 7.5 dB (``valid_babble``'s SNRs).
    ALSA's clips (the reported real-voice sets) are never used. Written to ``work/valid_piperbabble`` in the
    test half of the VoiceBank layout, ``logfiles/log_testset.txt`` last; a complete set is reused.
    """
    from upcycle_se.corpus.build import _clean_utterance, _plan_piper_speakers, seeded_rng
    from upcycle_se.corpus.realvoice import _write_text_atomic, babble_pool, real_babble
    from upcycle_se.corpus.speech import require_piper

    out = work / PIPER_BABBLE
    log_path = out / "logfiles" / "log_testset.txt"
    if log_path.is_file():
        return out
    require_piper()
    ids = [f"pv{i}" for i in range(PIPER_BABBLE_SPEAKERS)]
    voices = _plan_piper_speakers(ids, 3000, seed)
    clean: Dict[str, np.ndarray] = {}
    for s, spk in enumerate(ids):
        for u in range(PIPER_BABBLE_UTTS):
            sig, _ = _clean_utterance(voices[spk], seeded_rng(seed, 3, s, u), SAMPLE_RATE, 1.5, 6.0)
            clean[f"{spk}_{u:03d}"] = sig
    lines = []
    for i, uid in enumerate(sorted(clean)):
        speaker = uid.split("_")[0]
        own = i % 2 == 0
        family = "piper_selfbabble" if own else "piper_babble"
        snr = PIPER_BABBLE_SNRS[(i // 2) % len(PIPER_BABBLE_SNRS)]
        clips = {k: v for k, v in clean.items() if (k.split("_")[0] == speaker) == own or k == uid}
        pool = babble_pool(clips, uid, SAMPLE_RATE)
        babble, _ = real_babble(len(clean[uid]), SAMPLE_RATE, np.random.default_rng([seed, 11, i]), pool)
        _write_test_pair(out, uid, clean[uid], babble, snr)
        lines.append(f"{uid} {family} {snr}")
    _write_text_atomic(log_path, "\n".join(lines) + "\n")
    return out


#: Round 5's validation set of real voices (:func:`build_real_babble`): KLettres' validation speakers.
REAL_BABBLE = "valid_realbabble"
#: Its files per speaker (5 speakers) and SNRs (dB; ``valid_babble``'s).
REAL_BABBLE_UTTS, REAL_BABBLE_SNRS = 16, (0.0, 2.5, 5.0, 7.5)


def build_real_babble(work: Path, seed: int = 7) -> Path:
    """Round 5's validation set: real recorded voices in babble of real voices (80 files).

    Targets are KLettres' five validation speakers (:data:`upcycle_se.corpus.realspeech.TARGET_SPEAKERS`),
    16 utterances each (:func:`~upcycle_se.corpus.realspeech.real_utterance`), with 0.1-0.35 s of silence at
    each end and a -78 dBFS floor, as the synthetic corpus's clean files. Every second file is in babble of its
    own speaker's other clips (``real_babble_own``, as the hard real-voice set's babble is made from its
    voice's other clips), the others in babble of the other validation voices, the five babble-only ones
    included (``real_babble_other``); 4-7 talkers, each one resampling-warped pseudo-speaker
    (:func:`upcycle_se.corpus.realvoice.real_babble`), at 0 / 2.5 / 5 / 7.5 dB. No training voice and none
    of ALSA's clips (the reported sets) are in it. Written to ``work/valid_realbabble`` in the test half of
    the VoiceBank layout, ``logfiles/log_testset.txt`` last; a complete set is reused.
    """
    from upcycle_se.corpus.build import DEFAULT_LEVELS_DB, seeded_rng
    from upcycle_se.corpus.realspeech import BABBLE_SPEAKERS, TARGET_SPEAKERS, real_utterance, speaker_clips
    from upcycle_se.corpus.realvoice import _write_text_atomic, real_babble

    out = work / REAL_BABBLE
    log_path = out / "logfiles" / "log_testset.txt"
    if log_path.is_file():
        return out
    speakers = TARGET_SPEAKERS["valid"]
    voices = {v: speaker_clips(v, SAMPLE_RATE) for v in (*speakers, *BABBLE_SPEAKERS["valid"])}
    lines, i = [], 0
    for s, spk in enumerate(speakers):
        for u in range(REAL_BABBLE_UTTS):
            rng = seeded_rng(seed, 4, s, u)
            sig, used = real_utterance(voices[spk], rng, SAMPLE_RATE)
            level = 10 ** (rng.uniform(*DEFAULT_LEVELS_DB) / 20.0)
            lead, tail = (np.zeros(int(rng.uniform(0.1, 0.35) * SAMPLE_RATE)) for _ in range(2))
            clean = np.concatenate([lead, level * sig, tail]) + 10 ** (-78 / 20.0) * rng.standard_normal(
                len(lead) + len(sig) + len(tail))
            own = i % 2 == 0
            if own:
                pool = {k: v for k, v in voices[spk].items() if k not in used}
            else:
                pool = {f"{v}/{k}": c for v in voices if v != spk for k, c in voices[v].items()}
            babble, _ = real_babble(len(clean), SAMPLE_RATE, np.random.default_rng([seed, 11, i]), pool)
            snr = REAL_BABBLE_SNRS[(i // 2) % len(REAL_BABBLE_SNRS)]
            uid = f"{spk.lower().replace('_', '')}_{u:03d}"
            _write_test_pair(out, uid, clean, babble, snr)
            lines.append(f"{uid} {'real_babble_own' if own else 'real_babble_other'} {snr}")
            i += 1
    _write_text_atomic(log_path, "\n".join(lines) + "\n")
    return out


def validation_sets(work: Path) -> Dict[str, Dict[str, Dict[str, str]]]:
    """``{set: {file id: {"noisy", "clean", "family", "snr"}}}`` of the two validation sets and, where it was
    built (:func:`build_self_babble`), the same-voice babble diagnostic set."""
    from upcycle_se.corpus.build import read_log

    sets = {}
    entries = json.loads((work / "prep" / "valid.json").read_text())
    log = read_log(work / "corpus" / "logfiles" / "log_trainset.txt")
    root = str(work / "corpus")
    sets["valid"] = {uid: {"noisy": e["noisy_wav"].replace("{data_root}", root),
                           "clean": e["clean_wav"].replace("{data_root}", root), "family": log[uid][0],
                           "snr": str(log[uid][1])} for uid, e in sorted(entries.items())}
    root = work / "valid_babble"
    log = read_log(root / "logfiles" / "log_testset.txt")
    sets["valid_babble"] = {uid: {"noisy": str(root / "noisy_testset_wav" / f"{uid}.wav"),
                                  "clean": str(root / "clean_testset_wav" / f"{uid}.wav"),
                                  "family": noise, "snr": str(snr)} for uid, (noise, snr) in sorted(log.items())}
    for name in (SELF_BABBLE, HELDOUT, PIPER_BABBLE, REAL_BABBLE):
        root = work / name
        if (root / "logfiles" / "log_testset.txt").is_file():
            log = read_log(root / "logfiles" / "log_testset.txt")
            sets[name] = {uid: {"noisy": str(root / "noisy_testset_wav" / f"{uid}.wav"),
                                "clean": str(root / "clean_testset_wav" / f"{uid}.wav"),
                                "family": noise, "snr": str(snr)} for uid, (noise, snr) in sorted(log.items())}
    return sets


def score(system: str, folder: Optional[Path], files: Dict[str, Dict[str, str]], cache: Path, log=print) -> Dict:
    """Per-file PESQ / STOI of the model folder (fp32, whole files, its 20 dB limit; None: the noisy input
    itself); cached per file, keyed by the model files' hash (``stoi_loss._model_key``), so a model exported
    again under the same name is scored again (``stoi_loss.scored_rows``)."""

    def make_enhance():
        if folder is None:
            return lambda x: x
        import torch

        from upcycle_se.inference import UpCycleEnhancement

        torch.set_num_threads(1)
        model = UpCycleEnhancement.from_hparams(source=str(folder), savedir=str(folder), run_opts={
            "device": "cpu", "precision": "fp32", "max_attenuation_db": ATTENUATION_DB})
        return lambda x: model.enhance_signal(x.astype(np.float32), SAMPLE_RATE).numpy().astype(np.float64)

    return scored_rows(cache, {k: (Path(f["noisy"]), Path(f["clean"])) for k, f in files.items()}, make_enhance,
                       match={"model_key": _model_key(folder)}, info={"system": system, "model": str(folder)},
                       log=log, label=f"{cache.parent.name} {system}")


def choose(summary: Dict) -> Optional[str]:
    """The chosen arm by the rule in the module docstring (None when none qualifies)."""
    best, best_gain = None, 0.0
    base_pesq = summary["valid"]["default"]["pesq"]["mean"]
    for arm in summary["arms"]:
        if ARMS[arm][1].get("unpaired"):  # the unpaired round has its own rule
            continue
        gain = summary["valid_babble"]["vs_default"][arm]["stoi"]
        if summary["valid"][arm]["pesq"]["mean"] < base_pesq - PESQ_TOLERANCE or gain["mean"] - gain["ci"] <= 0:
            continue
        if gain["mean"] > best_gain:
            best, best_gain = arm, gain["mean"]
    return best


#: The controls an arm is compared with, paired, when they were scored: the lever rounds' and the unpaired round's.
CONTROLS = ("control", "unpaired_control", "selfbabble_sisdr")
#: Rounds 3 and 4's incumbent (the packaged `default` from round 2 until round 4 chose `add_long_ema`) and the
#: sets their rules read.
INCUMBENT = "selfbabble_sisdr"
ROUND3_PESQ_SETS = ("valid", HELDOUT)
ROUND3_STOI_SETS = ("valid", "valid_babble", SELF_BABBLE, HELDOUT)
#: Round 4's arms (the only ones its rule considers: the earlier arms were judged by their own rounds, and
#: taking one up again after its reported scores were seen would be choosing on them) and its STOI bound.
ROUND4_ARMS = ("long_ema", "add_long_ema")
ROUND4_STOI_LOSS = 0.010
#: Round 5's arms, its incumbent (round 4's choice, packaged as `default`) and the sets its rule reads.
ROUND5_ARMS = ("add_real", "add_stoi")
INCUMBENT5 = "add_long_ema"
ROUND5_PESQ_SETS = ("valid", HELDOUT, "valid_realbabble")
ROUND5_STOI_SETS = (*ROUND3_STOI_SETS, "valid_piperbabble")


def choose_same_voice(summary: Dict, control: str = "control", floor: Optional[str] = None) -> Optional[str]:
    """Round 2's choice against ``control`` by the rule in the module docstring (None: the control stays, and
    when the control or the same-voice set was not scored). Only arms of the control's kind (paired or
    unpaired) compete; with ``floor``, an arm's PESQ on ``valid`` must also be within the tolerance of that
    system's."""
    if control not in summary["arms"] or SELF_BABBLE not in summary:
        return None
    best, best_gain = None, None
    base_pesq = summary["valid"][control]["pesq"]["mean"]
    if floor is not None:
        base_pesq = max(base_pesq, summary["valid"][floor]["pesq"]["mean"])
    key = f"vs_{control}"
    for arm in summary["arms"]:
        if arm == control or arm not in summary["valid"][key]:
            continue
        d = {name: summary[name][key][arm]["stoi"] for name in ("valid", "valid_babble", SELF_BABBLE)}
        if (summary["valid"][arm]["pesq"]["mean"] < base_pesq - PESQ_TOLERANCE
                or d[SELF_BABBLE]["mean"] - d[SELF_BABBLE]["ci"] <= 0
                or any(d[n]["mean"] + d[n]["ci"] < 0 for n in ("valid", "valid_babble"))):
            continue
        gain = (d["valid_babble"]["mean"] + d[SELF_BABBLE]["mean"]) / 2
        if best_gain is None or gain > best_gain:
            best, best_gain = arm, gain
    return best


def choose_unpaired(summary: Dict) -> Optional[str]:
    """The unpaired round's choice: round 2's rule against ``unpaired_control``, and ``valid`` PESQ within the
    tolerance of the packaged `unpaired`'s (scored as ``unpaired`` beside the unpaired arms)."""
    if "unpaired" not in summary.get("valid", {}):
        return None
    return choose_same_voice(summary, control="unpaired_control", floor="unpaired")


def choose_round3(summary: Dict) -> Optional[str]:
    """Round 3's choice against the incumbent `default` (``selfbabble_sisdr``), fixed before its arms were
    scored: among the other paired arms whose PESQ on ``valid`` and ``valid_heldout`` and whose STOI on every
    validation set is not significantly below the incumbent's (95 % CI of the paired difference reaching 0),
    and whose PESQ gain is significant (CI above 0) on at least one of ``valid`` and ``valid_heldout``, the one
    with the largest mean of its two mean PESQ gains, when that mean is above 0. None: the incumbent stays (and
    when the incumbent or ``valid_heldout`` was not scored)."""
    if INCUMBENT not in summary["arms"] or HELDOUT not in summary:
        return None
    key = f"vs_{INCUMBENT}"
    best, best_gain = None, 0.0
    for arm in summary["arms"]:
        if arm == INCUMBENT or arm not in summary["valid"].get(key, {}):
            continue
        pesq = {n: summary[n][key][arm]["pesq"] for n in ROUND3_PESQ_SETS}
        stoi = {n: summary[n][key][arm]["stoi"] for n in ROUND3_STOI_SETS}
        if any(d["mean"] + d["ci"] < 0 for d in [*pesq.values(), *stoi.values()]):
            continue
        if not any(d["mean"] - d["ci"] > 0 for d in pesq.values()):
            continue
        gain = float(np.mean([d["mean"] for d in pesq.values()]))
        if gain > best_gain:
            best, best_gain = arm, gain
    return best


def choose_round4(summary: Dict) -> Optional[str]:
    """Round 4's choice against the incumbent `default` (``selfbabble_sisdr``), fixed before its arms were
    trained. Round 3's rule refused any significant STOI loss; this one trades a bounded one for PESQ. Among
    :data:`ROUND4_ARMS`, an arm qualifies when

    * its PESQ on ``valid`` and ``valid_heldout`` is not significantly below the incumbent's (95 % CI of the
      per-file paired difference reaching 0), and its gain is significant (CI above 0) on at least one of them;
    * on each of the four validation sets, its mean STOI is at most :data:`ROUND4_STOI_LOSS` below the
      incumbent's (paired mean), and its mean STOI gain over the noisy input is at least 0, or at least the
      incumbent's where the incumbent's is below 0.

    The qualifying arm with the largest mean of its two mean PESQ gains wins; None: the incumbent stays (and
    when the incumbent, ``valid_heldout`` or the noisy input was not scored)."""
    if INCUMBENT not in summary["arms"] or HELDOUT not in summary:
        return None
    key = f"vs_{INCUMBENT}"
    best, best_gain = None, 0.0
    for arm in summary["arms"]:
        if arm not in ROUND4_ARMS or arm not in summary["valid"].get(key, {}):
            continue
        pesq = [summary[n][key][arm]["pesq"] for n in ROUND3_PESQ_SETS]
        if any(d["mean"] + d["ci"] < 0 for d in pesq) or not any(d["mean"] - d["ci"] > 0 for d in pesq):
            continue
        ok = True
        for n in ROUND3_STOI_SETS:
            noisy = summary[n].get("vs_noisy", {})
            if arm not in noisy or INCUMBENT not in noisy:
                return None
            floor = min(0.0, noisy[INCUMBENT]["stoi"]["mean"])
            ok &= summary[n][key][arm]["stoi"]["mean"] >= -ROUND4_STOI_LOSS and noisy[arm]["stoi"]["mean"] >= floor
        gain = float(np.mean([d["mean"] for d in pesq]))
        if ok and gain > best_gain:
            best, best_gain = arm, gain
    return best


def choose_round5(summary: Dict) -> Optional[str]:
    """Round 5's choice against the incumbent `default` (``add_long_ema``), fixed before its arms were trained.
    Rounds 2-4 chose on synthetic voices, which under-predicted the STOI lost on real voices in babble; this
    one asks for that STOI back, measured on real voices no training saw, at no PESQ cost. Among
    :data:`ROUND5_ARMS`, an arm qualifies when

    * its STOI gain over the incumbent on ``valid_realbabble`` is significant (95 % CI of the per-file paired
      difference above 0);
    * its PESQ on ``valid``, ``valid_heldout`` and ``valid_realbabble`` is not significantly below the
      incumbent's (CI reaching 0) and its mean PESQ there at most :data:`PESQ_TOLERANCE` below;
    * its STOI on ``valid``, ``valid_babble``, ``valid_selfbabble``, ``valid_heldout`` and
      ``valid_piperbabble`` is not significantly below the incumbent's.

    The qualifying arm with the largest mean STOI gain on ``valid_realbabble`` wins; None: the incumbent stays
    (and when the incumbent or a set was not scored)."""
    if INCUMBENT5 not in summary["arms"] or any(n not in summary for n in (*ROUND5_PESQ_SETS, *ROUND5_STOI_SETS)):
        return None
    key = f"vs_{INCUMBENT5}"
    best, best_gain = None, 0.0
    for arm in summary["arms"]:
        if arm not in ROUND5_ARMS or arm not in summary[REAL_BABBLE].get(key, {}):
            continue
        gain = summary[REAL_BABBLE][key][arm]["stoi"]
        pesq = [summary[n][key][arm]["pesq"] for n in ROUND5_PESQ_SETS]
        stoi = [summary[n][key][arm]["stoi"] for n in ROUND5_STOI_SETS]
        if (gain["mean"] - gain["ci"] <= 0 or any(d["mean"] + d["ci"] < 0 for d in [*pesq, *stoi])
                or any(d["mean"] < -PESQ_TOLERANCE for d in pesq)):
            continue
        if gain["mean"] > best_gain:
            best, best_gain = arm, gain["mean"]
    return best


#: Round 5's unpaired arm and its incumbent (the packaged `unpaired`).
ROUND5_UNPAIRED_ARMS = ("unpaired_real",)
UNPAIRED_INCUMBENT = "unpaired_selfbabble"


def choose_round5_unpaired(summary: Dict) -> Optional[str]:
    """Round 5's unpaired choice against the packaged `unpaired` (``unpaired_selfbabble``), fixed before its arm
    was trained: `unpaired` ties MMSE-LSA on real voice, so the arm must raise PESQ. It qualifies when its PESQ
    gain is significant (95 % CI above 0) on at least one of ``valid``, ``valid_heldout`` and
    ``valid_realbabble`` and not significantly below (and at most :data:`PESQ_TOLERANCE` below in the mean) on
    any, and its STOI is not significantly below on any of the six validation sets. The largest mean of the
    three PESQ gains wins; None: `unpaired` stays (and when it or a set was not scored)."""
    key = f"vs_{UNPAIRED_INCUMBENT}"
    if UNPAIRED_INCUMBENT not in summary["arms"] or any(n not in summary for n in (*ROUND5_PESQ_SETS, *ROUND5_STOI_SETS)):
        return None
    best, best_gain = None, 0.0
    for arm in summary["arms"]:
        if arm not in ROUND5_UNPAIRED_ARMS or arm not in summary[REAL_BABBLE].get(key, {}):
            continue
        pesq = [summary[n][key][arm]["pesq"] for n in ROUND5_PESQ_SETS]
        stoi = [summary[n][key][arm]["stoi"] for n in (*ROUND5_STOI_SETS, REAL_BABBLE)]
        if (not any(d["mean"] - d["ci"] > 0 for d in pesq) or any(d["mean"] + d["ci"] < 0 for d in [*pesq, *stoi])
                or any(d["mean"] < -PESQ_TOLERANCE for d in pesq)):
            continue
        gain = float(np.mean([d["mean"] for d in pesq]))
        if gain > best_gain:
            best, best_gain = arm, gain
    return best


def summarize(rows: Dict[str, Dict[str, Dict]], sets: Dict, arms: Sequence[str]) -> Dict:
    """Means with 95 % CIs per set and system, and paired differences against `default` and the control,
    overall and (valid_babble) per SNR."""
    out: Dict = {"arms": list(arms)}
    for name, files in sets.items():
        r = rows[name]
        s: Dict = {sys_: {m: ci95([r[sys_][f][m] for f in files]) for m in METRICS} for sys_ in r}
        s["vs_default"] = {a: {m: _paired_diff(r[a], r["default"], m) for m in METRICS} for a in arms}
        if "noisy" in r:
            s["vs_noisy"] = {a: {m: _paired_diff(r[a], r["noisy"], m) for m in METRICS} for a in
                           [x for x in ("default", "unpaired") if x in r] + list(arms)}
        for ref in CONTROLS:
            if ref in arms:
                kind = ARMS[ref][1].get("unpaired", "paired")
                s[f"vs_{ref}"] = {a: {m: _paired_diff(r[a], r[ref], m) for m in METRICS} for a in arms
                                  if a != ref and ARMS[a][1].get("unpaired", "paired") == kind}
        snrs = sorted({f["snr"] for f in files.values()}, key=float)
        s["by_snr"] = {snr: {a: {m: _paired_diff({k: v for k, v in r[a].items() if files[k]["snr"] == snr},
                                                 r["default"], m) for m in METRICS} for a in arms}
                       for snr in snrs} if name in ("valid_babble", SELF_BABBLE) else {}
        if UNPAIRED_INCUMBENT in arms and any(a in ROUND5_UNPAIRED_ARMS for a in arms):  # round 5, unpaired
            s[f"vs_{UNPAIRED_INCUMBENT}"] = {a: {m: _paired_diff(r[a], r[UNPAIRED_INCUMBENT], m) for m in METRICS}
                                             for a in arms if a in ROUND5_UNPAIRED_ARMS}
        if INCUMBENT5 in arms and any(a in ROUND5_ARMS for a in arms):  # round 5's incumbent
            s[f"vs_{INCUMBENT5}"] = {a: {m: _paired_diff(r[a], r[INCUMBENT5], m) for m in METRICS} for a in arms
                                     if a != INCUMBENT5 and not ARMS[a][1].get("unpaired")}
            if name in (PIPER_BABBLE, REAL_BABBLE):  # own-voice and other-voice babble apart, vs the incumbent
                families = sorted({f["family"] for f in files.values()})
                s["by_family"] = {fam: {a: {m: _paired_diff({k: v for k, v in r[a].items()
                                                             if files[k]["family"] == fam}, r[INCUMBENT5], m)
                                            for m in METRICS} for a in [*arms, "noisy"] if a != INCUMBENT5}
                                  for fam in families}
        if name == HELDOUT and INCUMBENT in arms:  # where round 2's PESQ cost was: per family, against the incumbent
            families = sorted({f["family"] for f in files.values()})
            s["by_family"] = {fam: {a: {m: _paired_diff({k: v for k, v in r[a].items() if files[k]["family"] == fam},
                                                        r[INCUMBENT], m) for m in METRICS}
                                    for a in arms if a != INCUMBENT} for fam in families}
        out[name] = s
    out["chosen"] = choose(out)
    out["chosen_same_voice"] = choose_same_voice(out)
    out["chosen_unpaired"] = choose_unpaired(out)
    out["chosen_round3"] = choose_round3(out)
    out["chosen_round4"] = choose_round4(out)
    out["chosen_round5"] = choose_round5(out)
    out["chosen_round5_unpaired"] = choose_round5_unpaired(out)
    return out


def _cell(c: Dict, digits: int, signed: bool = False) -> str:
    return f"{c['mean']:{'+' if signed else ''}.{digits}f} ± {c['ci']:.{digits}f}"


def _verdict(result: Dict, chosen: Optional[str], stays: str) -> str:
    """A rule's outcome line: the chosen arm and its label, or none (``stays``: what is kept then)."""
    return f"**Chosen: `{chosen}`** ({result['labels'][chosen]})." if chosen else f"**No arm qualifies{stays}.**"


def render(result: Dict) -> str:
    s, m = result["summary"], result["meta"]
    arms = s["arms"]
    lines = ["# Speech-keeping levers, chosen on validation (issue 27)", "",
             f"Machine: {m['machine']['cpu']}, {m['machine']['cores']} cores, GPU {m['machine']['gpu']}, torch "
             f"{m['machine']['torch']}. Written by `python benchmarks/speech_keep.py` on {m['finished']}.",
             "Corpora synthetic (not VoiceBank-DEMAND). The paired arms: `default` trained on for 1,800 steps "
             "(batch 4 x 1 s, lr 2e-4, 4 + 2 epochs), one lever each; the unpaired arms: the packaged `unpaired` "
             "trained on for 900 steps with its own setting (commands below). Every model scored with a 20 dB "
             "attenuation limit, as `default` ships (the packaged `unpaired` ships without one, and is scored with "
             "it here, as its arms are), fp32. Per-file means ± 95 % CI; differences are per-file paired.",
             "`default` in these tables is the model every paired arm started from, the default before this "
             "benchmark (`benchmarks/starts/base_compressed`).", ""]
    for name, title in (("valid", "`valid`: 80 files, 2 held-out speakers, broad training noise"),
                        ("valid_babble", "`valid_babble`: 96 files, 4 other speakers, babble_many and cafe "
                                         "at 0-7.5 dB"),
                        (SELF_BABBLE, f"`{SELF_BABBLE}` (not used by round 1's choice; round 2's rule uses "
                                      "it): valid_babble's clean files in babble of their own speaker's other "
                                      "files, warped, at the same SNRs"),
                        (HELDOUT, f"`{HELDOUT}` (round 3): 72 files, 4 other speakers, noise families no training "
                                  "corpus has (clicks, pink, ALSA's recorded noise) at 0-15 dB"),
                        (PIPER_BABBLE, f"`{PIPER_BABBLE}` (round 5): 96 files, 4 Piper-voice pseudo-speakers in "
                                       "babble of Piper-voice talkers (own voice / other voices, half each) at "
                                       "0-7.5 dB"),
                        (REAL_BABBLE, f"`{REAL_BABBLE}` (round 5's rule): 80 files, KLettres' 5 validation "
                                      "speakers (real recordings) in babble of real voices (own / others, half "
                                      "each) at 0-7.5 dB")):
        if name not in s:
            continue
        t = s[name]
        lines += [f"## {title}", "", "| system | PESQ | STOI | STOI vs noisy | PESQ vs default | STOI vs default |",
                  "|---|---|---|---|---|---|"]
        for sys_ in [s_ for s_ in ("noisy", "default", "unpaired") if s_ in t] + list(arms):
            d = t["vs_default"].get(sys_) if sys_ != "noisy" else None
            n = t.get("vs_noisy", {}).get(sys_)
            lines.append(f"| {sys_} | {_cell(t[sys_]['pesq'], 2)} | {_cell(t[sys_]['stoi'], 3)} | "
                         + (f"{_cell(n['stoi'], 3, True)} | " if n else "| ")
                         + (f"{_cell(d['pesq'], 2, True)} | {_cell(d['stoi'], 3, True)} |" if d else "| |"))
        for ref in (*CONTROLS, INCUMBENT5):
            if t.get(f"vs_{ref}"):
                what = {INCUMBENT: "the packaged `default` from round 2 to round 4",
                        INCUMBENT5: "the packaged `default` since round 4"}.get(ref, "same steps, no lever")
                lines += ["", f"Against `{ref}` ({what}):", "", "| arm | PESQ | STOI |", "|---|---|---|"]
                lines += [f"| {a} | {_cell(d['pesq'], 2, True)} | {_cell(d['stoi'], 3, True)} |"
                          for a, d in t[f"vs_{ref}"].items()]
        if t.get("by_snr"):
            lines += ["", "STOI against `default` by SNR:", "", "| arm | " + " | ".join(f"{k} dB" for k in t["by_snr"])
                      + " |", "|---|" + "---|" * len(t["by_snr"])]
            lines += [f"| {a} | " + " | ".join(_cell(t["by_snr"][k][a]["stoi"], 3, True) for k in t["by_snr"]) + " |"
                      for a in arms]
        if t.get("by_family"):
            fams = list(t["by_family"])
            lines += ["", f"PESQ / STOI against `{INCUMBENT5 if name != HELDOUT else INCUMBENT}` by noise "
                          "family:", "",
                      "| arm | " + " | ".join(fams) + " |", "|---|" + "---|" * len(fams)]
            lines += [f"| {a} | " + " | ".join(f"{_cell(t['by_family'][f][a]['pesq'], 2, True)} / "
                                               f"{_cell(t['by_family'][f][a]['stoi'], 3, True)}" for f in fams) + " |"
                      for a in next(iter(t["by_family"].values()))]
        lines.append("")
    chosen = s["chosen"]
    round5 = any(a in ROUND5_ARMS for a in arms)
    round4 = not round5 and any(a in ROUND4_ARMS for a in arms)
    lines += ["## Choice", ""]
    if not round4 and not round5:  # rounds 4 and 5 state their own rule only (round 1's would judge other arms)
        lines += [f"Rule: the largest STOI gain over `default` on `valid_babble` (95 % CI above 0) among arms whose "
                  f"PESQ on `valid` is at least `default`'s minus {PESQ_TOLERANCE}. "
                  + _verdict(result, chosen, ""), ""]
    if "control" in arms and SELF_BABBLE in s and "chosen_same_voice" in s:  # (records before round 2 lack it)
        second = s.get("chosen_same_voice")
        lines += [f"Round 2's rule, against the control (packaged as `default`): the largest mean STOI gain over the "
                  f"control on `valid_babble` and `{SELF_BABBLE}` among arms whose PESQ on `valid` is at least the "
                  f"control's minus {PESQ_TOLERANCE}, whose STOI gain on `{SELF_BABBLE}` has its 95 % CI above 0 and "
                  "whose STOI on `valid` and `valid_babble` is not significantly below the control's. "
                  + _verdict(result, second, ": the control stays"), ""]
    if "unpaired_control" in arms and SELF_BABBLE in s and "chosen_unpaired" in s:
        third = s.get("chosen_unpaired")
        lines += ["The unpaired round: round 2's rule against `unpaired_control`, and PESQ on `valid` within "
                  f"{PESQ_TOLERANCE} of the packaged `unpaired`'s. "
                  + _verdict(result, third, ": the packaged `unpaired` stays"), ""]
    if INCUMBENT in arms and HELDOUT in s and "chosen_round3" in s and not round4 and not round5:
        fourth = s.get("chosen_round3")
        lines += [f"Round 3's rule, against `{INCUMBENT}` (packaged as `default` since round 2): among arms whose PESQ "
                  f"on `valid` and `{HELDOUT}` and whose STOI on every validation set are not significantly below "
                  f"its, and whose PESQ gain is significant on at least one of `valid` and `{HELDOUT}`, the largest "
                  "mean of the two PESQ gains (above 0). "
                  + _verdict(result, fourth, f": `{INCUMBENT}` stays"), ""]
    if round4 and "chosen_round4" in s:
        lines += [f"Round 4's rule, against `{INCUMBENT}`, among {', '.join(f'`{a}`' for a in ROUND4_ARMS)} only: "
                  f"PESQ on `valid` and `{HELDOUT}` not significantly below its and significantly above on one; "
                  f"on every validation set, mean STOI at most {ROUND4_STOI_LOSS:.3f} below its and at or above the "
                  "noisy input's (or its own, where that is below the noisy input's); the largest mean of the two "
                  "PESQ gains. " + _verdict(result, s.get("chosen_round4"), f": `{INCUMBENT}` stays"), ""]
    if round5 and "chosen_round5" in s:
        lines += [f"Round 5's rule, against `{INCUMBENT5}`, among {', '.join(f'`{a}`' for a in ROUND5_ARMS)} only: "
                  f"STOI gain on `{REAL_BABBLE}` significant; PESQ on `valid`, `{HELDOUT}` and `{REAL_BABBLE}` "
                  f"not significantly below its and at most {PESQ_TOLERANCE} below in the mean; STOI on the other "
                  f"five validation sets not significantly below its; the largest mean STOI gain on `{REAL_BABBLE}`. "
                  + _verdict(result, s.get("chosen_round5"), f": `{INCUMBENT5}` stays"), ""]
    lines += ["## Arms", ""]
    lines += [f"- `{a}`: {result['labels'][a]}; `cd recipes/VoiceBankDEMAND && {result['commands'][a]}`" for a in arms]
    return "\n".join(lines) + "\n"


def _stamp(msg: str) -> None:
    """A log line with the time (a module function: the scoring processes get it pickled)."""
    print(f"[{_dt.datetime.now():%H:%M:%S}] {msg}", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK, help=f"work folder (default {DEFAULT_WORK})")
    parser.add_argument("--arms", nargs="+", default=list(LEVER_ARMS), choices=list(ARMS),
                        help=f"default: {' '.join(LEVER_ARMS)}; `selfbabble` and `long` after them, with --parallel 1")
    parser.add_argument("--parallel", type=int, default=2, help="trainings side by side (one thread each)")
    parser.add_argument("--score-jobs", type=int, default=2, help="scoring processes side by side (one thread each)")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "speech_keep.json")
    parser.add_argument("--table", type=Path, default=REPO / "benchmarks" / "speech_keep.txt")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--train-only", action="store_true", help="train and export, score nothing")
    group.add_argument("--score-only", action="store_true", help="score the arms already exported")
    group.add_argument("--render-only", action="store_true", help="rewrite --table from --json")
    args = parser.parse_args(argv)
    if args.render_only:
        args.table.write_text(render(json.loads(args.json.read_text())))
        return 0
    from upcycle_se.models.runtime import cpu_has_bf16

    work, bf16 = args.work, cpu_has_bf16()
    stamp = _stamp
    t0 = time.perf_counter()
    build_data(work, stamp)
    build_self_babble(work)
    if any(a in (*ROUND5_ARMS, *ROUND5_UNPAIRED_ARMS) for a in args.arms):  # round 5's sets and data (Piper, KLettres)
        build_piper_babble(work)
        build_real_babble(work)
        if any(a in ("add_real", *ROUND5_UNPAIRED_ARMS) for a in args.arms):
            build_real_voice_corpus(work, log=stamp)
            prepare(corpus_root(work, REAL_CORPUS), BUDGET, stamp)
    if not args.score_only:
        with ThreadPoolExecutor(max(1, args.parallel)) as pool:
            threads = max(1, (os.cpu_count() or 2) // max(1, args.parallel))
            list(pool.map(lambda a: train_and_export(a, work, bf16, stamp, threads), args.arms))
    if args.train_only:
        return 0
    sets = validation_sets(work)
    systems = {"noisy": None, "default": START, **{a: model_dir(work, a) for a in args.arms}}
    if any(ARMS[a][1].get("unpaired") for a in args.arms):  # the unpaired round's start, as shipped
        systems = {"noisy": None, "default": START, "unpaired": UNPAIRED, **systems}
    rows: Dict[str, Dict] = {name: {} for name in sets}
    jobs = [(name, system, folder) for name in sets for system, folder in systems.items()]
    with ProcessPoolExecutor(max(1, args.score_jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {(n, sy): pool.submit(score, sy, f, sets[n], work / "scores" / n / f"{sy}.json", stamp)
                   for n, sy, f in jobs}
        for (name, system), future in futures.items():
            rows[name][system] = future.result()
    summary = summarize(rows, sets, args.arms)
    result = {"meta": {"machine": machine_info(), "finished": f"{_dt.datetime.now():%Y-%m-%d %H:%M}",
                       "wall_minutes": (time.perf_counter() - t0) / 60, "attenuation_db": ATTENUATION_DB,
                       "work": str(work)},
              "commands": {a: " ".join(["python", *train_command(a, work, bf16)[1:]]) for a in args.arms},
              "labels": {a: ARMS[a][2] for a in args.arms},
              "summary": summary, "rows": rows}
    _write_json_atomic(args.json, result)
    args.table.write_text(render(result))
    choices = {k: v for k, v in summary.items() if k.startswith("chosen") and v}  # each round's rule
    stamp(f"chosen: {choices or 'none'}; wrote {args.json} and {args.table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
