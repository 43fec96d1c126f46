#!/usr/bin/env python3
"""What ``upcycle-se adapt`` gives: a packaged model fine-tuned on a user's noisy recordings, without clean
references, scored on held-out files of the same noise condition, against the model it started from, the
best packaged model and the denoisers a user would run instead.

Usage (the real run: 3 x 30 min of ``adapt`` plus about 10 min of building and scoring, about 1 h 45 min in all
on a 2-core CPU)::

    python benchmarks/adapt.py --work /work/runs/adapt --minutes 30 --conditions factory,callcentre,vehicle

``--small`` (a few files per set), ``--fake-adapt`` (test only: copies the packaged ``unpaired`` model as the
"adapted" one), ``--skip-adapt`` (score what exists), ``--no-clean-pile`` (``adapt`` synthesizes its own clean
speech), ``--n-jobs`` (scoring processes, torch threads). Every step is reused when its output exists in
``--work``, so an interrupted run resumes.

Per condition (a noise scene of :mod:`benchmarks.adapt_conditions` -- ``factory``, ``callcentre``,
``vehicle`` -- none of which the packaged models trained or were validated on):

1. ``<work>/<condition>/``: ``adapt_noisy/`` (the adaptation half: ~100 noisy utterances of 1.5-6 s, ~6 min,
   by 8 synthetic speakers -- flite / espeak-ng voices of the corpus builder's *test* pool, warped per
   speaker, 2 of them Piper pseudo-speakers where Piper imports -- at SNRs 2.5/7.5/12.5/17.5 dB; noisy files
   only, what a user would hand to ``adapt``); ``heldout/{noisy,clean}/`` (48 pairs: the same speakers and
   noise scene, other sentences and other noise stretches); ``realvoice/{noisy,clean}/`` (ALSA's 8 real
   voice clips x the 4 SNRs, fresh stretches of the scene). 16 kHz mono, written atomically.
2. ``upcycle-se adapt <condition>/adapt_noisy --out <condition>/adapted --from unpaired --minutes M
   --clean_folder <work>/clean_pile/clean_trainset_wav`` (log: ``<condition>/adapt.log``); the clean pile is
   ~10 min of speech by the builder's *training* voices (disjoint from the conditions' speakers), built once.
3. Every held-out and real-voice file enhanced (whole files, fp32) and scored (PESQ wide band, STOI, CSIG,
   CBAK, COVL, SSNR) for: noisy, unpaired (the start), adapted, default, MMSE-LSA, RNNoise, WebRTC NS,
   noisereduce; per-file scores cached in ``<condition>/scores/<set>/<system>.csv``.
4. Per condition and set: mean ± 95 % CI (Student t over files) per system, paired per-file differences of
   adapted against every other system, and the verdicts against issue 28's targets -- adapted gains
   >= +0.10 PESQ over the model it started from with STOI not lower; moonshot: adapted beats every peer on
   PESQ and STOI. Writes ``benchmarks/adapt.json`` (all numbers, per-file scores included) and
   ``benchmarks/adapt.txt`` (the markdown tables; also printed). ``--fake-adapt`` / ``--small`` runs write
   ``<work>/adapt.{json,txt}`` instead unless ``--results`` says otherwise.

The voices are synthetic (plus one real speaker) and the noises generated: never VoiceBank-DEMAND scores.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

if TYPE_CHECKING:
    from upcycle_se.corpus.speech import Voice

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python benchmarks/adapt.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.adapt_conditions import CONDITION_NAMES, CONDITIONS, make_condition_noise  # noqa: E402
from benchmarks.quality import ci95, machine_info  # noqa: E402

SR = 16000
METRICS = ("pesq", "stoi", "csig", "cbak", "covl", "ssnr")
#: Metrics of the paired-difference tables and the verdicts.
DIFF_METRICS = ("pesq", "stoi", "covl")
SETS = ("heldout", "realvoice")
MODEL_SYSTEMS = ("unpaired", "adapted", "default")
PEER_SYSTEMS = ("rnnoise", "webrtc", "noisereduce")
SYSTEMS = ("noisy", "unpaired", "adapted", "default", "mmse_lsa", *PEER_SYSTEMS)
LABELS = {
    "noisy": "Noisy input",
    "unpaired": "packaged `unpaired` (the model adapt starts from)",
    "adapted": "**adapted** (`upcycle-se adapt`, from `unpaired`)",
    "default": "packaged `default` (supervised)",
    "mmse_lsa": "MMSE-LSA (Ephraim-Malah, MCRA noise)",
    "rnnoise": "RNNoise (pyrnnoise 0.4.5)",
    "webrtc": "WebRTC NS (level 4)",
    "noisereduce": "noisereduce 3.0.3 (non-stationary)",
}
SET_LABELS = {"heldout": "held-out synthetic speakers", "realvoice": "real voice (ALSA clips)"}
#: The issue's target: PESQ gain over the start model, with STOI not lower.
TARGET_PESQ_GAIN = 0.10
FAKE_MARKER = "FAKE_ADAPT.json"
CONFIG_FILE = "adapt_benchmark_config.json"
RUN_RECORD = "adapt_run.json"
MANIFEST = "condition.json"
FORMAT_VERSION = 1
#: Seed codes (``seeded_rng(seed, code, part, ...)``): apart from the corpus builder's 1-3, so no speaker,
#: sentence or noise draw here repeats one of the packaged models' training or validation corpus.
COND_CODE = {"factory": 40, "callcentre": 41, "vehicle": 42}
PART = {"adapt": 1, "heldout": 2, "realvoice": 3, "speakers": 7, "talkers": 8}
#: The packaged models' test speakers are the first two voices of the builder's test pool; the conditions'
#: speakers start after them (a slice per condition), the call-centre talkers come from its far end, before
#: the eight voices of its test babble.
_FIRST_TARGET_VOICE, _TALKER_VOICES = 2, 3
_TALKER_UTTS = 4


@dataclass(frozen=True)
class Sizes:
    """Files per condition: ``speakers`` (of them ``piper`` Piper pseudo-speakers where Piper imports),
    utterances per speaker in the adaptation and held-out halves, real-voice clips (x 4 SNRs), and the
    minutes of the shared clean pile."""

    speakers: int = 8
    piper: int = 2
    adapt_utts: int = 13
    heldout_utts: int = 6
    clips: int = 8
    clean_pile_minutes: float = 10.0


FULL = Sizes()
SMALL = Sizes(adapt_utts=3, heldout_utts=1, clips=2, clean_pile_minutes=2.0)


# ------------------------------------------------------------------------------------------------ logging
class Log:
    """Timestamped lines to stdout and ``<work>/adapt_benchmark.log``."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")

    def __call__(self, msg: str) -> None:
        line = f"[{_dt.datetime.now():%H:%M:%S}] {msg}"
        print(line, flush=True)
        self._fh.write(line + "\n")
        self._fh.flush()

    def close(self) -> None:
        """Closes the log file."""
        self._fh.close()


def _write_json_atomic(path: Path, obj) -> None:
    """Writes ``obj`` as indented JSON, each list of plain values on one line (per-file score rows stay short)."""
    text = json.dumps(obj, indent=1, default=str)
    text = re.sub(r"\[\s*([^\[\]{}]*?)\s*\]", lambda mo: "[" + " ".join(mo.group(1).split()) + "]", text)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _piper_available() -> bool:
    from upcycle_se.corpus.speech import require_piper
    from upcycle_se.errors import UserError

    try:
        require_piper()
        return True
    except UserError:
        return False


# ------------------------------------------------------------------------------------------------ corpus
def condition_speakers(condition: str, seed: int, sizes: Sizes, piper: bool) -> Dict[str, "Voice"]:
    """``{speaker id: Voice}`` of a condition: flite / espeak-ng voices of the builder's test pool (a slice of
    its own per condition, never the packaged models' test speakers), seeded warps, plus Piper pseudo-speakers."""
    from upcycle_se.corpus.build import seeded_rng
    from upcycle_se.corpus.speech import PIPER_VOICE, Voice, base_voices

    _, test_pool = base_voices()
    n_piper = sizes.piper if piper else 0
    n_classic = sizes.speakers - n_piper
    first = _FIRST_TARGET_VOICE + CONDITION_NAMES.index(condition) * sizes.speakers
    if first + n_classic > len(test_pool) - 8 - _TALKER_VOICES:
        raise ValueError(f"not enough test-pool voices for {sizes.speakers} speakers per condition")
    code = COND_CODE[condition]
    out = {}
    for i in range(sizes.speakers):
        r = seeded_rng(seed, code, PART["speakers"], i)
        if i < n_classic:
            base = test_pool[first + i]
            out[f"{condition}_s{i + 1:02d}"] = Voice(
                base.engine, base.name, warp=round(float(r.uniform(0.9, 1.12)), 3),
                rate=round(float(r.uniform(0.9, 1.1)), 3),
                pitch=int(r.integers(35, 66)) if base.engine == "espeak-ng" else 50)
        else:
            out[f"{condition}_s{i + 1:02d}"] = Voice(
                "piper", PIPER_VOICE, warp=round(float(r.uniform(0.84, 1.2)), 3),
                rate=round(float(r.uniform(0.85, 1.15)), 3), noise_scale=round(float(r.uniform(0.3, 1.0)), 3),
                noise_w=round(float(r.uniform(0.3, 1.2)), 3))
    return out


def talker_voices(condition: str, seed: int, piper: bool) -> List["Voice"]:
    """The call-centre colleagues' voices: 2 Piper pseudo-speakers (where Piper imports) and 3 espeak-ng voices
    from the far end of the test pool (not the targets', not the packaged models' validation babble)."""
    from upcycle_se.corpus.build import seeded_rng
    from upcycle_se.corpus.speech import PIPER_VOICE, Voice, base_voices

    _, test_pool = base_voices()
    code = COND_CODE[condition]
    voices = []
    if piper:
        for j in range(2):
            r = seeded_rng(seed, code, PART["talkers"], 100 + j)
            voices.append(Voice("piper", PIPER_VOICE, warp=round(float(r.uniform(0.84, 1.2)), 3),
                                rate=round(float(r.uniform(0.9, 1.15)), 3),
                                noise_scale=round(float(r.uniform(0.3, 1.0)), 3),
                                noise_w=round(float(r.uniform(0.3, 1.2)), 3)))
    for j in range(_TALKER_VOICES):
        base = test_pool[-9 - j]
        r = seeded_rng(seed, code, PART["talkers"], j)
        voices.append(Voice(base.engine, base.name, warp=round(float(r.uniform(0.88, 1.15)), 3),
                            rate=round(float(r.uniform(0.9, 1.15)), 3),
                            pitch=int(r.integers(30, 70)) if base.engine == "espeak-ng" else 50))
    return voices


def _plan(condition: str, seed: int, sizes: Sizes, piper: bool) -> Dict[str, List[Dict]]:
    """Every file of a condition: ``{set: [{"name", "snr", ...}]}``; the SNRs cycle over the test SNRs so
    each set is balanced, and a file's draws depend only on what it is (a ``--small`` set is a prefix)."""
    from upcycle_se.corpus.build import TEST_SNRS
    from upcycle_se.corpus.realvoice import VOICE_CLIPS, realvoice_name

    speakers = list(condition_speakers(condition, seed, sizes, piper))
    plan: Dict[str, List[Dict]] = {"adapt": [], "heldout": [], "realvoice": []}
    for k, spk in enumerate(speakers):
        for utt in range(1, sizes.adapt_utts + 1):
            plan["adapt"].append({"name": f"{spk}_{utt:03d}", "spk": k, "utt": utt,
                                  "snr": TEST_SNRS[(k + utt) % len(TEST_SNRS)]})
        for utt in range(1, sizes.heldout_utts + 1):
            plan["heldout"].append({"name": f"{spk}_h{utt:03d}", "spk": k, "utt": utt,
                                    "snr": TEST_SNRS[(k + utt) % len(TEST_SNRS)]})
    for c_idx, clip in enumerate(VOICE_CLIPS[: sizes.clips]):
        for s_idx, snr in enumerate(TEST_SNRS):
            plan["realvoice"].append({"name": realvoice_name(clip, condition, snr), "clip": clip, "c_idx": c_idx,
                                      "s_idx": s_idx, "snr": snr})
    return plan


def _set_dirs(cdir: Path, part: str) -> Tuple[Optional[Path], Path]:
    """(clean folder or None, noisy folder) of a part of a condition."""
    if part == "adapt":
        return None, cdir / "adapt_noisy"
    return cdir / part / "clean", cdir / part / "noisy"


def _done(cdir: Path, part: str, name: str) -> bool:
    clean, noisy = _set_dirs(cdir, part)
    return (noisy / f"{name}.wav").is_file() and (clean is None or (clean / f"{name}.wav").is_file())


def build_condition(work: Path, condition: str, seed: int, sizes: Sizes, piper: bool, n_jobs: int,
                    log: Callable[[str], None]) -> Dict:
    """Writes the files of ``condition`` that are missing under ``work/<condition>/``; returns its manifest
    (speakers, scene, per set the files with their SNR and seconds), also written to ``condition.json``."""
    from tqdm import tqdm

    from upcycle_se.audio import write_audio_atomic
    from upcycle_se.corpus import noise as N
    from upcycle_se.corpus.build import _clean_utterance, babble_utterance, seeded_rng
    from upcycle_se.corpus.realvoice import ALSA_SOUNDS, load_clip
    from upcycle_se.corpus.speech import require_tools

    cdir = work / condition
    cond = CONDITIONS[condition]
    code = COND_CODE[condition]
    scene = cond.scene(seed)
    speakers = condition_speakers(condition, seed, sizes, piper)
    voices = list(speakers.values())
    plan = _plan(condition, seed, sizes, piper)
    missing = [(part, f) for part, files in plan.items() for f in files if not _done(cdir, part, f["name"])]
    t0 = time.perf_counter()
    talkers = talker_voices(condition, seed, piper) if cond.needs_pool else []
    if missing:
        require_tools()
        pool = None
        if cond.needs_pool:
            pool = [[babble_utterance(v, seeded_rng(seed, code, PART["talkers"], j, k, 6), SR)
                     for k in range(_TALKER_UTTS)] for j, v in enumerate(talkers)]  # one list per colleague

        def make(part: str, f: Dict) -> None:
            part_code = PART[part]
            if part == "realvoice":
                clean = load_clip(ALSA_SOUNDS / f"{f['clip']}.wav", SR, seeded_rng(seed, code, part_code,
                                                                                  f["c_idx"], 2))
                rng = seeded_rng(seed, code, part_code, f["c_idx"], f["s_idx"], 4)
            else:
                clean, _ = _clean_utterance(voices[f["spk"]], seeded_rng(seed, code, part_code, f["spk"], f["utt"], 2),
                                            SR, 1.52, 5.98)
                rng = seeded_rng(seed, code, part_code, f["spk"], f["utt"], 4)
            noise = make_condition_noise(condition, len(clean), SR, rng, scene=scene, pool=pool)
            clean, noisy = N.mix_at_snr(clean, noise, f["snr"], SR)
            clean_dir, noisy_dir = _set_dirs(cdir, part)
            if clean_dir is not None:  # clean first: a pair counts as done when its noisy file exists too
                write_audio_atomic(clean_dir / f"{f['name']}.wav", clean, SR)
            write_audio_atomic(noisy_dir / f"{f['name']}.wav", noisy, SR)

        with ThreadPoolExecutor(max_workers=max(1, n_jobs)) as pool_ex:
            futures = [pool_ex.submit(make, part, f) for part, f in missing]
            for fut in tqdm(futures, desc=f"build {condition}", unit="file", leave=False):
                fut.result()
        log(f"{condition}: built {len(missing)} files in {time.perf_counter() - t0:.0f} s")
    else:
        log(f"{condition}: all {sum(len(v) for v in plan.values())} files there (reused)")
    import soundfile as sf

    seconds = {}
    for part, files in plan.items():
        _, noisy_dir = _set_dirs(cdir, part)
        seconds[part] = round(sum(sf.info(str(noisy_dir / f"{f['name']}.wav")).duration for f in files), 2)
    manifest = {"condition": condition, "description": cond.description, "seed": seed, "scene": scene,
                "speakers": {k: v.to_dict() for k, v in speakers.items()},
                "talkers": [v.to_dict() for v in talkers],
                "files": {part: [{k: f[k] for k in ("name", "snr")} for f in files] for part, files in plan.items()},
                "counts": {part: len(files) for part, files in plan.items()}, "seconds": seconds}
    _write_json_atomic(cdir / MANIFEST, manifest)
    return manifest


def build_clean_pile(work: Path, seed: int, minutes: float, piper: bool, log: Callable[[str], None]) -> Path:
    """About ``minutes`` of clean speech by 12 of the builder's *training* voices (6 Piper pseudo-speakers where
    Piper imports), under ``work/clean_pile`` (reused when built with the same arguments); returns its folder
    of clean utterances, the ``--clean_folder`` of every condition's ``adapt``."""
    from upcycle_se.corpus.build import build_corpus, corpus_folders

    n_speakers = 12
    utts = max(1, math.ceil(minutes * 60.0 / 3.8 / n_speakers))  # the builder's utterances average ~3.8 s
    t0 = time.perf_counter()
    info = build_corpus(work / "clean_pile", n_train_speakers=n_speakers, n_test_speakers=1, utts_per_speaker=utts,
                        test_utts_per_speaker=1, seed=1000 + seed, train_noises=("white",), test_noises=("pink",),
                        piper_speakers=n_speakers // 2 if piper else 0, progress=False)
    log(f"clean pile: {info['train']['utterances']} utterances, {info['train']['seconds'] / 60:.1f} min "
        f"({'reused' if info.get('reused') else 'built'} in {time.perf_counter() - t0:.0f} s)")
    return work / "clean_pile" / corpus_folders()["clean_train"]


# ------------------------------------------------------------------------------------------------ adapt
def adapt_command(condition_dir: Path, minutes: float, clean_folder: Optional[Path]) -> List[str]:
    """The ``upcycle-se adapt`` command line of one condition (run with this interpreter, from the repo)."""
    cdir = Path(condition_dir)
    cmd = [sys.executable, "-m", "upcycle_se.cli", "adapt", str(cdir / "adapt_noisy"), "--out", str(cdir / "adapted"),
           "--work", str(cdir / "adapt_work"), "--minutes", f"{minutes:g}", "--from", "unpaired", "--no-progress"]
    if clean_folder is not None:
        cmd += ["--clean_folder", str(clean_folder)]
    return cmd


def run_adapt(condition_dir: Path, minutes: float, clean_folder: Optional[Path], log: Callable[[str], None]) -> Dict:
    """Runs ``upcycle-se adapt`` on ``condition_dir/adapt_noisy`` into ``condition_dir/adapted`` (output
    appended to ``condition_dir/adapt.log``); skipped when ``adapted/generator.ckpt`` exists, except that the
    copy ``--fake-adapt`` left is replaced by a real adaptation. Returns the budget record
    (:func:`adapt_budget`).

    Raises
    ------
    RuntimeError: adapt exited with an error or made no model (the log's tail in the message).
    """
    cdir = Path(condition_dir)
    adapted = cdir / "adapted"
    if (adapted / FAKE_MARKER).is_file():
        log(f"{cdir.name}: replacing the --fake-adapt copy in {adapted} by a real adaptation")
        shutil.rmtree(adapted)
    if (adapted / "generator.ckpt").is_file():
        log(f"{cdir.name}: reusing the adapted model in {adapted}")
        return adapt_budget(adapted, minutes)
    if adapted.exists():  # an export cut short: adapt refuses an existing --out, and its work folder resumes
        log(f"{cdir.name}: removing the incomplete {adapted}")
        shutil.rmtree(adapted)
    cmd = adapt_command(cdir, minutes, clean_folder)
    log(f"{cdir.name}: adapting for {minutes:g} min: {shlex.join(cmd[1:])} (log: {cdir / 'adapt.log'})")
    t0 = time.perf_counter()
    with open(cdir / "adapt.log", "a", encoding="utf-8") as fh:
        fh.write(f"\n===== {_dt.datetime.now():%Y-%m-%d %H:%M:%S} {shlex.join(cmd)}\n")
        fh.flush()
        rc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    if rc != 0 or not (adapted / "generator.ckpt").is_file():
        tail = (cdir / "adapt.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{cdir.name}: upcycle-se adapt exited with {rc} after {wall / 60:.1f} min; "
                           f"last output:\n{tail}")
    log(f"{cdir.name}: adapted in {wall / 60:.1f} min")
    _write_json_atomic(cdir / RUN_RECORD, {"minutes": float(minutes), "wall_minutes": round(wall / 60.0, 2),
                                          "command": cmd[1:]})
    return adapt_budget(adapted, minutes)


def fake_adapt(condition_dir: Path, log: Callable[[str], None]) -> Dict:
    """Test only: copies the packaged ``unpaired`` model to ``condition_dir/adapted`` with a marker (no
    adaptation at all), unless a model is there already; returns its budget record."""
    from upcycle_se.inference import packaged_model_dir

    adapted = Path(condition_dir) / "adapted"
    if (adapted / "generator.ckpt").is_file():
        if not (adapted / FAKE_MARKER).is_file():
            log(f"{adapted.parent.name}: --fake-adapt leaves the real adapted model in {adapted} as it is")
        return adapt_budget(adapted, None)
    tmp = adapted.with_name(".adapted.part")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(packaged_model_dir("unpaired"), tmp)
    (tmp / FAKE_MARKER).write_text(json.dumps({"fake": True, "copied_from": str(packaged_model_dir("unpaired"))}))
    os.replace(tmp, adapted)
    log(f"{adapted.parent.name}: FAKE adapt: copied the packaged unpaired model to {adapted}")
    return adapt_budget(adapted, None)


def adapt_budget(adapted: Path, flag_minutes: Optional[float]) -> Dict:
    """What the adapted model cost: from ``adapted/adapt.json`` (adapt's own record: budget, minutes spent,
    epochs, chosen epoch, blind SNR gains) where present, else the ``--minutes`` flag; ``source`` says which
    (``fake`` for a ``--fake-adapt`` copy)."""
    adapted = Path(adapted)
    if (adapted / FAKE_MARKER).is_file():
        return {"source": "fake", "minutes": 0.0, "note": "the packaged unpaired model copied: NOT an adaptation"}
    ours = adapted.parent / RUN_RECORD  # what this script asked for and how long adapt took
    extra = json.loads(ours.read_text()) if ours.is_file() else {}
    extra.pop("command", None)
    flag_minutes = extra.pop("minutes", flag_minutes)
    record = adapted / "adapt.json"
    if record.is_file():
        try:
            rec = json.loads(record.read_text())
        except ValueError:
            rec = None
        if isinstance(rec, dict):
            opts = rec.get("options") or {}
            out = {"source": "adapt.json", "minutes": opts.get("minutes", rec.get("minutes", flag_minutes)), **extra}
            for key in ("minutes_spent", "epochs", "epoch", "snr_gain", "start_snr_gain", "noisy_seconds",
                        "n_train_segments", "n_valid_segments"):
                if key in rec:
                    out[key] = rec[key]
            for key in ("clean_folder", "clean_minutes", "from_model", "seed"):
                if key in opts:
                    out[key] = opts[key]
            return out
    return {"source": "flag", "minutes": flag_minutes, **extra}


# ------------------------------------------------------------------------------------------------ scoring
def _sha(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def system_identity(system: str, model_dir: Optional[Path]) -> str:
    """What a system's cached scores belong to: a model's generator and hparams, or the enhancer's name and pin."""
    if system in MODEL_SYSTEMS:
        return f"{system}:{_sha(model_dir / 'generator.ckpt')}:{_sha(model_dir / 'hyperparams.yaml')}"
    if system in PEER_SYSTEMS:
        from benchmarks.peers import PEER_PACKAGES

        return f"{system}:{PEER_PACKAGES[system]}"
    return system


def _score_one(clean_path: str, noisy_path: str, system: str, enhanced: Optional[np.ndarray]) -> Dict[str, float]:
    """Worker: one file's scores ``{metric: value}``; a classical enhancer or peer runs here on the noisy file."""
    import soundfile as sf

    from upcycle_se.metrics.signals import MAX_LEN_DIFF_S
    from upcycle_se.metrics.stats import score_pair_with_warnings

    clean = sf.read(clean_path, dtype="float64")[0]
    if enhanced is None:
        noisy = sf.read(noisy_path, dtype="float64")[0]
        if system == "noisy":
            enhanced = noisy
        else:
            from benchmarks.baselines import ENHANCERS

            enhanced = np.clip(ENHANCERS[system](noisy, SR), -1.0, 1.0)
    row, _ = score_pair_with_warnings(clean, np.asarray(enhanced, dtype=np.float64), METRICS, MAX_LEN_DIFF_S)
    return {m: float(row[m]) for m in METRICS}


def _read_cache(csv_path: Path, identity: str) -> Dict[str, Dict[str, float]]:
    meta = csv_path.with_suffix(".json")
    if not csv_path.is_file() or not meta.is_file():
        return {}
    try:
        if json.loads(meta.read_text()).get("identity") != identity:
            return {}
        with open(csv_path, newline="", encoding="utf-8") as f:
            return {r["file"]: {m: float(r[m]) for m in METRICS} for r in csv.DictReader(f)}
    except (ValueError, KeyError, OSError):
        return {}


def _write_cache(csv_path: Path, identity: str, rows: Dict[str, Dict[str, float]]) -> None:
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = csv_path.with_name(f".{csv_path.name}.{os.getpid()}.part")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", *METRICS])
        for stem in sorted(rows):
            w.writerow([stem, *(repr(rows[stem][m]) for m in METRICS)])
    _write_json_atomic(csv_path.with_suffix(".json"), {"identity": identity, "metrics": list(METRICS)})
    os.replace(tmp, csv_path)


def load_model(model_dir: Path):
    """An :class:`~upcycle_se.inference.UpCycleEnhancement` of ``model_dir``, fp32, read in place."""
    import torch

    from upcycle_se.inference import UpCycleEnhancement

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return UpCycleEnhancement.from_hparams(source=model_dir, savedir=None,
                                           run_opts={"device": device, "precision": "fp32"})


def score_system(cdir: Path, set_name: str, system: str, stems: Sequence[str], n_jobs: int,
                 log: Callable[[str], None], model_dir: Optional[Path] = None) -> Dict[str, Dict[str, float]]:
    """``{file stem: {metric: value}}`` of ``system`` on every file of ``stems`` in ``cdir/<set_name>``:
    cached rows reused (while the system is the same), the missing files enhanced (a model: whole files in
    this process; an enhancer: in the scoring workers) and scored with ``n_jobs`` processes."""
    from joblib import Parallel, delayed
    from tqdm import tqdm

    clean_dir, noisy_dir = _set_dirs(cdir, set_name)
    csv_path = cdir / "scores" / set_name / f"{system}.csv"
    identity = system_identity(system, model_dir)
    rows = _read_cache(csv_path, identity)
    missing = [s for s in stems if s not in rows]
    if not missing:
        return {s: rows[s] for s in stems}
    t0 = time.perf_counter()
    enhanced: Dict[str, np.ndarray] = {}
    if system in MODEL_SYSTEMS:
        import soundfile as sf

        model = load_model(model_dir)
        for s in tqdm(missing, desc=f"enhance {system}", unit="file", leave=False):
            noisy = sf.read(str(noisy_dir / f"{s}.wav"), dtype="float32")[0]
            enhanced[s] = model.enhance_signal(noisy, SR, chunk_seconds=0).numpy().astype(np.float64)
        del model
    t_enh = time.perf_counter() - t0
    jobs = [(str(clean_dir / f"{s}.wav"), str(noisy_dir / f"{s}.wav"), system, enhanced.get(s)) for s in missing]
    if n_jobs <= 1:
        results = [_score_one(*j) for j in tqdm(jobs, desc=f"score {system}", unit="file", leave=False)]
    else:
        results = list(tqdm(Parallel(n_jobs=n_jobs, return_as="generator")(delayed(_score_one)(*j) for j in jobs),
                            total=len(jobs), desc=f"score {system}", unit="file", leave=False))
    rows.update(dict(zip(missing, results)))
    _write_cache(csv_path, identity, rows)
    mean = ci95([rows[s]["pesq"] for s in stems])["mean"]
    log(f"{cdir.name} {set_name} {system}: PESQ {mean:.3f} over {len(stems)} files ({len(missing)} scored in "
        f"{time.perf_counter() - t0:.0f} s, enhancing {t_enh:.0f} s)")
    return {s: rows[s] for s in stems}


# ------------------------------------------------------------------------------------------------ statistics
def paired(a: Dict[str, Dict[str, float]], b: Dict[str, Dict[str, float]], metric: str) -> Dict[str, float]:
    """Mean ± 95 % CI (Student t) of the per-file difference ``a - b`` of ``metric`` over their common files."""
    common = sorted(set(a) & set(b))
    return ci95([a[f][metric] - b[f][metric] for f in common])


def target_verdict(diff: Dict[str, Dict[str, float]]) -> Dict:
    """The issue's target from the paired differences adapted - start (``{"pesq": ci, "stoi": ci}``):
    PESQ gain >= +0.10 (mean) and STOI not lower (mean difference >= 0)."""
    dp, ds = diff["pesq"], diff["stoi"]
    pesq_ok = math.isfinite(dp["mean"]) and dp["mean"] >= TARGET_PESQ_GAIN
    stoi_ok = math.isfinite(ds["mean"]) and ds["mean"] >= 0.0
    text = (f"PESQ {_signed(dp, 2)} ({'>=' if pesq_ok else 'below'} +{TARGET_PESQ_GAIN:.2f}), "
            f"STOI {_signed(ds, 3)} ({'not lower' if stoi_ok else 'lower'})")
    return {"met": bool(pesq_ok and stoi_ok), "pesq_ok": bool(pesq_ok), "stoi_ok": bool(stoi_ok), "text": text}


def moonshot_verdict(diffs: Dict[str, Dict[str, Dict[str, float]]]) -> Dict:
    """Whether adapted beats every peer present on both PESQ and STOI (mean paired differences > 0);
    ``diffs`` is ``{peer: {metric: ci}}``."""
    lost = [f"{peer} on {m.upper()} ({_signed(d[m], 2 if m == 'pesq' else 3)})"
            for peer, d in diffs.items() for m in ("pesq", "stoi") if not d[m]["mean"] > 0]
    met = bool(diffs) and not lost
    text = ("beats every peer on PESQ and STOI" if met else
            "no peer scored" if not diffs else "does not beat " + ", ".join(lost))
    return {"met": met, "text": text, "peers": sorted(diffs)}


def _signed(s: Dict[str, float], digits: int) -> str:
    if not math.isfinite(s["mean"]):
        return "n/a"
    ci = f" ± {s['ci']:.{digits}f}" if math.isfinite(s["ci"]) else ""
    return f"{s['mean']:+.{digits}f}{ci}"


def _cell(s: Dict[str, float], digits: int) -> str:
    if not math.isfinite(s["mean"]):
        return "n/a"
    return f"{s['mean']:.{digits}f} ± {s['ci']:.{digits}f}" if math.isfinite(s["ci"]) else f"{s['mean']:.{digits}f}"


def summarize_set(rows: Dict[str, Dict[str, Dict[str, float]]]) -> Dict:
    """Per system mean ± CI of every metric, and the paired differences of adapted against every other system."""
    out = {"n": len(next(iter(rows.values()))) if rows else 0,
           "systems": {sys_: {m: ci95([r[m] for r in per.values()]) for m in METRICS} for sys_, per in rows.items()},
           "diffs": {}}
    if "adapted" in rows:
        out["diffs"] = {ref: {m: paired(rows["adapted"], rows[ref], m) for m in DIFF_METRICS}
                        for ref in rows if ref != "adapted"}
    return out


def condition_verdict(sets: Dict[str, Dict]) -> Dict:
    """Target and moonshot per set (held-out first: the adaptation's own speakers and noise), and where
    adapting did not help against the start model (a mean paired difference <= 0)."""
    out: Dict = {"sets": {}, "did_not_help": []}
    for set_name, summary in sets.items():
        diffs = summary["diffs"]
        if "unpaired" not in diffs:
            out["sets"][set_name] = {"target": None, "moonshot": None}
            continue
        out["sets"][set_name] = {
            "target": target_verdict(diffs["unpaired"]),
            "moonshot": moonshot_verdict({p: diffs[p] for p in PEER_SYSTEMS if p in diffs}),
        }
        for m in DIFF_METRICS:
            d = diffs["unpaired"][m]
            if not d["mean"] > 0:
                out["did_not_help"].append(f"{SET_LABELS[set_name]}: {m.upper()} {_signed(d, 3)} vs the start model")
        for ref in ("default", "mmse_lsa"):
            if ref in diffs and not diffs[ref]["pesq"]["mean"] > 0:
                out["did_not_help"].append(f"{SET_LABELS[set_name]}: PESQ {_signed(diffs[ref]['pesq'], 2)} "
                                           f"vs {ref} (still below it)")
    return out


# ------------------------------------------------------------------------------------------------ report
def lscpu() -> Dict[str, str]:
    """``Model name`` and ``CPU(s)`` (threads) as ``lscpu`` reports them (empty where it is missing)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            out["model_name"] = value.strip()
        elif key.strip() == "CPU(s)":
            out["threads"] = value.strip()
    return out


def _budget_text(b: Dict) -> str:
    if b.get("source") == "fake":
        return "**FAKE adapt** (`--fake-adapt`: the packaged `unpaired` model copied; no adaptation happened)"
    if b.get("source") == "none":
        return "no adapted model (`--skip-adapt` before any adaptation)"
    parts = [f"{b.get('minutes', 'n/a'):g} min budget" if isinstance(b.get("minutes"), (int, float))
             else "budget n/a"]
    if "minutes_spent" in b:
        parts.append(f"{b['minutes_spent']:.1f} min spent")
    if "wall_minutes" in b:
        parts.append(f"{b['wall_minutes']:.1f} min of wall time in all (cutting, clean pile, export)")
    if "epochs" in b:
        gain, start = b.get("snr_gain", math.nan), b.get("start_snr_gain", math.nan)
        parts.append(f"{b['epochs']} epoch{'' if b['epochs'] == 1 else 's'}, epoch {b.get('epoch')} chosen by blind "
                     "SNR gain "
                     f"({gain:+.2f} dB; start model {start:+.2f} dB)")
    if "n_train_segments" in b:
        parts.append(f"{b['n_train_segments']} training / {b.get('n_valid_segments')} held-out segments")
    if b.get("clean_folder"):
        parts.append(f"clean speech from `{b['clean_folder']}`")
    elif b.get("clean_minutes"):
        parts.append(f"clean speech: {b['clean_minutes']:g} min synthesized by adapt")
    return f"`upcycle-se adapt` {', '.join(parts)} (from {b['source']})"


def render(state: Dict) -> str:
    """The markdown report of a run's state (what :func:`run` writes to ``adapt.json``)."""
    m, cpu = state["machine"], state["lscpu"]
    sizes = state["sizes"]
    lines = ["# Adapting to an unseen noise with `upcycle-se adapt`", ""]
    if state["fake_adapt"]:
        lines += ["> **FAKE RUN** (`--fake-adapt`): the \"adapted\" model is the packaged `unpaired` model copied. "
                  "These numbers check the benchmark script, not `adapt`.", ""]
    piper = state["piper"]
    lines += [
        "**Corpus** (synthetic speakers + a real voice, synthetic noises; not VoiceBank-DEMAND): per condition, "
        f"{sizes['speakers']} speakers -- flite / espeak-ng voices of the corpus builder's test pool, unseen by the "
        "packaged models' training, warped per speaker"
        + (f", {sizes['piper']} of them Piper pseudo-speakers (the one Piper voice, other warps than in training)"
           if piper else "")
        + " -- and ALSA's recorded voice (one real speaker, "
        f"{sizes['clips']} clips), mixed at 2.5/7.5/12.5/17.5 dB with a noise scene of "
        "`benchmarks/adapt_conditions.py` that the packaged models neither trained nor were validated on. "
        "`adapt` gets the adaptation half (noisy files only); the held-out half has the same speakers and scene, "
        "other sentences and other noise stretches.", "",
        f"**Machine**: {cpu.get('model_name', m['cpu'])}, {cpu.get('threads', m['cores'])} threads, GPU: "
        f"{m['gpu']}, torch {m['torch']}, Python {m['python']}, load average {m['load']} at the start. "
        f"Finished {state['date']}, {state['total_minutes']:.0f} min in all.", "",
        "**Budget** (`upcycle-se adapt` per condition): "
        + "; ".join(f"{c}: {_budget_text(cs['budget'])}" for c, cs in state["conditions"].items()) + ".", "",
        f"**Command**: `{state['command']}`", "",
        "Means ± 95 % CI (Student t) over files; differences are per-file paired (adapted minus the other system, "
        "same files). PESQ: wide band (P.862.2). Enhancement on whole files, fp32.", "",
        "## Summary: adapted minus the model it started from (`unpaired`)", "",
        "| condition | set | files | PESQ | STOI | COVL | target (>= +0.10 PESQ, STOI not lower) "
        "| moonshot (beats every peer on PESQ and STOI) |",
        "|---|---|---|---|---|---|---|---|"]
    for cond, cs in state["conditions"].items():
        for set_name, ss in cs["sets"].items():
            d = ss["diffs"].get("unpaired")
            v = cs["verdict"]["sets"][set_name]
            if d is None:
                lines.append(f"| {cond} | {set_name} | {ss['n']} | n/a | n/a | n/a | no adapted model | |")
                continue
            lines.append(f"| {cond} | {set_name} | {ss['n']} | {_signed(d['pesq'], 2)} | {_signed(d['stoi'], 3)} "
                         f"| {_signed(d['covl'], 2)} | {'**met**' if v['target']['met'] else 'not met'} "
                         f"| {'**met**' if v['moonshot']['met'] else 'not met'} |")
    for cond, cs in state["conditions"].items():
        files = cs["manifest"]["counts"]
        secs = cs["manifest"]["seconds"]
        lines += ["", f"## {cond}: {cs['manifest']['description']}", "",
                  f"Adaptation half: {files['adapt']} noisy files ({secs['adapt'] / 60:.1f} min). "
                  f"Held-out: {files['heldout']} pairs ({secs['heldout'] / 60:.1f} min). Real voice: "
                  f"{files['realvoice']} pairs. Budget: {_budget_text(cs['budget'])}."]
        for set_name, ss in cs["sets"].items():
            lines += ["", f"### {cond}, {SET_LABELS[set_name]} ({ss['n']} files)", "",
                      "| System | PESQ | STOI | CSIG | CBAK | COVL |", "|---|---|---|---|---|---|"]
            for sys_, summ in ss["systems"].items():
                lines.append(f"| {LABELS[sys_]} | " + " | ".join(_cell(summ[k], 3 if k == "stoi" else 2)
                                                                  for k in ("pesq", "stoi", "csig", "cbak", "covl"))
                             + " |")
            if ss["diffs"]:
                lines += ["", "| adapted minus | PESQ | STOI | COVL |", "|---|---|---|---|"]
                for ref, d in ss["diffs"].items():
                    lines.append(f"| {LABELS[ref]} | {_signed(d['pesq'], 2)} | {_signed(d['stoi'], 3)} "
                                 f"| {_signed(d['covl'], 2)} |")
        v = cs["verdict"]
        lines += ["", f"**Verdict, {cond}**:"]
        for set_name, sv in v["sets"].items():
            if sv["target"] is None:
                lines.append(f"- {SET_LABELS[set_name]}: no adapted model scored.")
                continue
            lines.append(f"- {SET_LABELS[set_name]}: target {'**met**' if sv['target']['met'] else 'not met'} "
                         f"({sv['target']['text']}); moonshot {'**met**' if sv['moonshot']['met'] else 'not met'} "
                         f"({sv['moonshot']['text']}).")
        lines.append("- Adapting did not help: " + ("; ".join(v["did_not_help"]) + "." if v["did_not_help"] else
                                                   "nowhere (every paired difference against the start model is "
                                                   "above zero, and adapted is above `default` and MMSE-LSA)."))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ main
def _check_config(work: Path, config: Dict) -> None:
    """Refuses a work folder built with other sizes, seed or speakers (files would not match the plan)."""
    from upcycle_se.errors import UserError

    path = work / CONFIG_FILE
    if path.is_file():
        old = json.loads(path.read_text())
        if old != config:
            changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
            raise UserError(f"{work} holds a run with other settings ({', '.join(changed)}); use another --work")
    else:
        work.mkdir(parents=True, exist_ok=True)
        _write_json_atomic(path, config)


def run(work: Path, conditions: Sequence[str], minutes: float, *, small: bool = False, fake: bool = False,
        skip_adapt: bool = False, clean_pile: bool = True, n_jobs: int = 2, seed: int = 0,
        results: Optional[Path] = None, command: str = "") -> Dict:
    """The whole benchmark (see the module docstring); returns the state written to ``<results>.json``."""
    import torch

    from benchmarks.peers import missing_peers
    from upcycle_se.inference import packaged_model_dir

    t_start = time.perf_counter()
    work = Path(work).absolute()
    sizes = SMALL if small else FULL
    piper = _piper_available()
    if not piper:
        sizes = replace(sizes, piper=0)
    _check_config(work, {"seed": seed, "sizes": asdict(sizes), "piper": piper, "format": FORMAT_VERSION})
    log = Log(work / "adapt_benchmark.log")
    torch.set_num_threads(max(1, n_jobs))
    machine, cpu = machine_info(), lscpu()
    log(f"adapt benchmark: conditions {', '.join(conditions)}; {'small' if small else 'full'} sets; "
        f"{'FAKE adapt' if fake else 'no adapt' if skip_adapt else f'{minutes:g} min of adapt each'}; "
        f"Piper {'on' if piper else 'off'}; work {work}")
    missing = missing_peers()
    for name, why in missing.items():
        log(f"{name}: left out, {why}")
    systems = [s for s in SYSTEMS if s not in missing]

    manifests = {c: build_condition(work, c, seed, sizes, piper, n_jobs, log) for c in conditions}
    budgets, clean = {}, None
    if not fake and not skip_adapt:
        clean = build_clean_pile(work, seed, sizes.clean_pile_minutes, piper, log) if clean_pile else None
    for c in conditions:
        cdir = work / c
        if fake:
            budgets[c] = fake_adapt(cdir, log)
        elif skip_adapt:
            adapted = cdir / "adapted"
            budgets[c] = (adapt_budget(adapted, minutes) if (adapted / "generator.ckpt").is_file()
                          else {"source": "none"})
        else:
            budgets[c] = run_adapt(cdir, minutes, clean, log)

    state_conditions = {}
    for c in conditions:
        cdir = work / c
        models = {"unpaired": packaged_model_dir("unpaired"), "default": packaged_model_dir("default"),
                  "adapted": cdir / "adapted"}
        sets, per_file = {}, {}
        for set_name in SETS:
            stems = [f["name"] for f in manifests[c]["files"][set_name]]
            rows = {}
            for system in systems:
                if system == "adapted" and not (models["adapted"] / "generator.ckpt").is_file():
                    continue
                rows[system] = score_system(cdir, set_name, system, stems, n_jobs, log, models.get(system))
            sets[set_name] = summarize_set(rows)
            per_file[set_name] = {s: {f: [round(r[m], 4) for m in METRICS] for f, r in per.items()}
                                  for s, per in rows.items()}
        state_conditions[c] = {"manifest": manifests[c], "budget": budgets[c], "sets": sets,
                               "verdict": condition_verdict(sets), "per_file": per_file}
    state = {"benchmark": "benchmarks/adapt.py", "date": _dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
             "command": command, "machine": machine, "lscpu": cpu, "fake_adapt": bool(fake), "small": bool(small),
             "piper": piper, "seed": seed, "sizes": asdict(sizes), "minutes_flag": minutes,
             "clean_pile": bool(clean_pile), "metrics": list(METRICS), "per_file_columns": list(METRICS),
             "total_minutes": (time.perf_counter() - t_start) / 60.0, "conditions": state_conditions}
    text = render(state)
    if results is None:
        results = (work / "adapt") if (fake or small) else REPO / "benchmarks" / "adapt"
    results = Path(results)
    results.parent.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(results.with_suffix(".json"), state)
    tmp = results.with_name(f".{results.name}.txt.part")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, results.with_suffix(".txt"))
    print(text)
    log(f"wrote {results.with_suffix('.json')} and {results.with_suffix('.txt')} "
        f"({state['total_minutes']:.1f} min in all)")
    log.close()
    return state


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="work folder (conditions, clean pile, scores)")
    parser.add_argument("--minutes", type=float, default=30.0, help="adapt's budget per condition (default 30)")
    parser.add_argument("--conditions", default=",".join(CONDITION_NAMES),
                        help=f"comma-separated, of {', '.join(CONDITION_NAMES)} (default: all)")
    parser.add_argument("--n-jobs", type=int, default=2, help="scoring processes and torch threads (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of speakers, sentences, scenes, noise (default 0)")
    parser.add_argument("--small", action="store_true", help="a few files per set (checks, not results)")
    parser.add_argument("--skip-adapt", action="store_true", help="score only (what is adapted already)")
    parser.add_argument("--no-clean-pile", action="store_true",
                        help="no --clean_folder for adapt: it synthesizes its own clean speech")
    parser.add_argument("--results", type=Path, default=None,
                        help="PREFIX of PREFIX.json / PREFIX.txt (default benchmarks/adapt; WORK/adapt for "
                             "--fake-adapt or --small runs)")
    parser.add_argument("--fake-adapt", action="store_true", help=argparse.SUPPRESS)  # tests: copy `unpaired`
    args = parser.parse_args(argv)
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown or not conditions:
        parser.error(f"--conditions: unknown {', '.join(unknown) or '(none given)'}; "
                     f"choose from {', '.join(CONDITION_NAMES)}")
    if args.fake_adapt and args.skip_adapt:
        parser.error("--fake-adapt and --skip-adapt exclude each other")
    if args.minutes <= 0:
        parser.error("--minutes must be positive")
    command = shlex.join(["python", "benchmarks/adapt.py", *(sys.argv[1:] if argv is None else argv)])
    run(args.work, conditions, args.minutes, small=args.small, fake=args.fake_adapt, skip_adapt=args.skip_adapt,
        clean_pile=not args.no_clean_pile, n_jobs=max(1, args.n_jobs), seed=args.seed, results=args.results,
        command=command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
