"""Builds a VoiceBank-DEMAND-shaped corpus offline from synthetic voices and generated noise.

VoiceBank-DEMAND cannot be downloaded on the project's machines, so tests, the demo and the benchmarks
use this builder. It writes the real corpus's layout, so the same data-preparation code serves both::

    OUT/clean_trainset_wav/p226_001.wav   (naming="28spk": clean_trainset_28spk_wav/)
    OUT/noisy_trainset_wav/p226_001.wav   (naming="28spk": noisy_trainset_28spk_wav/)
    OUT/clean_testset_wav/p232_001.wav
    OUT/noisy_testset_wav/p232_001.wav
    OUT/trainset_txt/, OUT/testset_txt/           transcripts (naming="28spk": trainset_28spk_txt/)
    OUT/logfiles/log_trainset.txt, log_testset.txt  "<name> <noise> <snr>" per line, like VoiceBank's
    OUT/corpus_info.json                          voices, noises, SNRs, seed, counts (written last)

Speakers are flite / espeak-ng voices with a per-speaker pitch/formant warp and speaking rate
(:mod:`upcycle_se.corpus.speech`); test speakers and test noise types are unseen in training; train SNRs
0/5/10/15 dB and test SNRs 2.5/7.5/12.5/17.5 dB follow VoiceBank-DEMAND, under the SNR definition of
:mod:`upcycle_se.corpus.noise` (active speech power over whole-file noise power). Files are 16-bit PCM.
The build is deterministic: the same arguments give byte-identical audio.

The ``broad_*`` presets are for training that generalizes: their training noise is the randomized
``broad`` family (any spectral slope / EQ / band limits, modulated, tonal, 2-10-talker babble, bursts and
mixtures), train SNRs -5..20 dB, speech levels over 24 dB, and half of their training speakers are Piper
neural pseudo-speakers. Their *test* side (speakers, noises, SNRs, files) is byte-identical to that of the
preset they extend (``broad_benchmark`` -> ``benchmark``), so results stay comparable.

These voices are synthetic: a score measured on this corpus is never a VoiceBank-DEMAND score.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from tqdm import tqdm

from upcycle_se.audio import write_audio_atomic
from upcycle_se.corpus import noise as N
from upcycle_se.corpus.speech import PIPER_VOICE, Voice, base_voices, make_sentence, require_piper, require_tools, \
    synthesize, tool_versions, trim_silence
from upcycle_se.errors import DataError, UserError

PathLike = Union[str, os.PathLike]

#: Noise types per split (disjoint, as DEMAND's train and test noises are).
TRAIN_NOISES = ("white", "brown", "babble", "hum", "engine")
TEST_NOISES = ("pink", "clicks", "alsa", "cafe")
TRAIN_SNRS = (0.0, 5.0, 10.0, 15.0)
TEST_SNRS = (2.5, 7.5, 12.5, 17.5)

#: VoiceBank-DEMAND's 28 training speakers and its 2 test speakers; larger builds continue with other
#: VCTK-style IDs (train from p225 upwards, test from p360 upwards, never shared).
VB_TRAIN_SPEAKERS = ("p226", "p227", "p228", "p230", "p231", "p233", "p236", "p239", "p243", "p244",
                     "p250", "p254", "p256", "p258", "p259", "p267", "p268", "p269", "p270", "p273",
                     "p274", "p276", "p277", "p278", "p279", "p282", "p286", "p287")
VB_TEST_SPEAKERS = ("p232", "p257")

#: The broad training side: randomized noise, SNRs -5..20 dB in 2.5 dB steps, speech levels -40..-16 dBFS.
BROAD_TRAIN_NOISES = ("broad",)
BROAD_TRAIN_SNRS = tuple(float(x) for x in np.arange(-5.0, 20.01, 2.5))
BROAD_TRAIN_LEVELS_DB = (-40.0, -16.0)
DEFAULT_LEVELS_DB = (-30.0, -22.0)  # active speech level per recording, as VoiceBank's varies
_BROAD = dict(train_noises=BROAD_TRAIN_NOISES, train_snrs=BROAD_TRAIN_SNRS, train_levels_db=BROAD_TRAIN_LEVELS_DB)

#: Named sizes: ``tiny`` for tests (seconds), ``small`` for the demo (~2 min of training audio),
#: ``benchmark`` for the benchmarks (~1 h), ``full`` VoiceBank-DEMAND's own counts (11564 / 824 files, ~12 h).
#: ``broad_small`` / ``broad_benchmark``: the broad training side (half Piper speakers) with the test side
#: of ``small`` / ``benchmark``.
PRESETS: Dict[str, Dict] = {
    "tiny": dict(n_train_speakers=4, n_test_speakers=2, utts_per_speaker=5, test_utts_per_speaker=3),
    "small": dict(n_train_speakers=6, n_test_speakers=2, utts_per_speaker=5, test_utts_per_speaker=6),
    "benchmark": dict(n_train_speakers=24, n_test_speakers=2, utts_per_speaker=40, test_utts_per_speaker=60),
    "full": dict(n_train_speakers=28, n_test_speakers=2, utts_per_speaker=413, test_utts_per_speaker=412),
    "broad_small": dict(n_train_speakers=12, n_test_speakers=2, utts_per_speaker=5, test_utts_per_speaker=6,
                        piper_speakers=6, **_BROAD),
    "broad_benchmark": dict(n_train_speakers=32, n_test_speakers=2, utts_per_speaker=40, test_utts_per_speaker=60,
                            piper_speakers=16, **_BROAD),
}

INFO_FILE = "corpus_info.json"
#: The noise name the corpus log gives a training file in same-voice babble (:mod:`upcycle_se.corpus.self_babble`).
SELF_BABBLE_NOISE = "self_babble"
FORMAT_VERSION = 1
_SPLIT_CODE = {"train": 1, "test": 2}
_BABBLE_TALKERS = 8


def corpus_folders(naming: str = "vb") -> Dict[str, str]:
    """Folder names of the layout: keys ``clean_train``, ``noisy_train``, ``clean_test``, ``noisy_test``,
    ``txt_train``, ``txt_test``, ``logs``; ``naming`` is ``"vb"`` or ``"28spk"`` (the distributed names)."""
    if naming not in ("vb", "28spk"):
        raise UserError(f"naming must be 'vb' or '28spk', not {naming!r}")
    tag = "_28spk" if naming == "28spk" else ""
    return {
        "clean_train": f"clean_trainset{tag}_wav", "noisy_train": f"noisy_trainset{tag}_wav",
        "clean_test": "clean_testset_wav", "noisy_test": "noisy_testset_wav",
        "txt_train": f"trainset{tag}_txt", "txt_test": "testset_txt", "logs": "logfiles",
    }


def log_names(naming: str = "vb") -> Dict[str, str]:
    """Log file names under ``logfiles/`` per split."""
    tag = "_28spk" if naming == "28spk" else ""
    return {"train": f"log_trainset{tag}.txt", "test": "log_testset.txt"}


def speaker_ids(n_train: int, n_test: int) -> Tuple[List[str], List[str]]:
    """Disjoint VoiceBank/VCTK-style speaker IDs: VoiceBank's own first (p226..., p232, p257)."""
    test = list(VB_TEST_SPEAKERS[:n_test])
    test += [f"p{i}" for i in range(360, 360 + n_test - len(test))]
    used = set(test) | set(VB_TRAIN_SPEAKERS)
    extra = (f"p{i}" for i in range(225, 10_000) if f"p{i}" not in used)
    train = list(VB_TRAIN_SPEAKERS[:n_train])
    train += [next(extra) for _ in range(n_train - len(train))]
    return train, test


def read_log(path: PathLike) -> Dict[str, Tuple[str, float]]:
    """Parses a log file written by :func:`build_corpus`: ``{name: (noise_type, snr_db)}``."""
    out = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out[parts[0]] = (parts[1], float(parts[2]))
    return out


# ------------------------------------------------------------------------------------------ planning
def seeded_rng(*key: int) -> np.random.Generator:
    """A numpy generator seeded by a tuple of integers (seed, split, indices, purpose), so every random
    choice of the corpus depends only on what it is for, not on the order things are built in."""
    return np.random.default_rng([int(k) for k in key])


def _plan_speakers(split: str, ids: Sequence[str], pool: Sequence[Voice], seed: int) -> Dict[str, Voice]:
    speakers = {}
    for i, spk in enumerate(ids):
        base = pool[i % len(pool)]
        r = seeded_rng(seed, _SPLIT_CODE[split], i, 1)
        warp, rate, pitch = float(r.uniform(0.9, 1.12)), float(r.uniform(0.9, 1.1)), int(r.integers(35, 66))
        speakers[spk] = Voice(base.engine, base.name, warp=round(warp, 3), rate=round(rate, 3),
                              pitch=pitch if base.engine == "espeak-ng" else 50)
    return speakers


def _plan_piper_speakers(ids: Sequence[str], first_index: int, seed: int) -> Dict[str, Voice]:
    """Training pseudo-speakers of the Piper voice: seeded warp (pitch and formants), rate and Piper's noises."""
    speakers = {}
    for i, spk in enumerate(ids):
        r = seeded_rng(seed, _SPLIT_CODE["train"], first_index + i, 7)
        speakers[spk] = Voice("piper", PIPER_VOICE, warp=round(float(r.uniform(0.84, 1.2)), 3),
                              rate=round(float(r.uniform(0.85, 1.15)), 3),
                              noise_scale=round(float(r.uniform(0.3, 1.0)), 3),
                              noise_w=round(float(r.uniform(0.3, 1.2)), 3))
    return speakers


def babble_voices(split: str, pool: Sequence[Voice], seed: int, piper: bool = False) -> List[Voice]:
    """The talkers of a split's babble noise, seeded by ``seed``."""
    # taken from the far end of the split's pool: mostly not the split's own speakers, never the other split's;
    # a training split with Piper speakers gets Piper babble talkers too (more natural voices in the crowd)
    voices = [] if not piper else list(_plan_piper_speakers(["babble_a", "babble_b"], 1000, seed).values())
    for j in range(_BABBLE_TALKERS):
        base = pool[-(j + 1) % len(pool)]
        r = seeded_rng(seed, _SPLIT_CODE[split], j, 5)
        warp, rate, pitch = float(r.uniform(0.88, 1.15)), float(r.uniform(0.9, 1.15)), int(r.integers(30, 70))
        voices.append(Voice(base.engine, base.name, warp=round(warp, 3), rate=round(rate, 3),
                            pitch=pitch if base.engine == "espeak-ng" else 50))
    return voices


def _noise_schedule(split: str, n: int, noises: Sequence[str], snrs: Sequence[float],
                    seed: int) -> List[Tuple[str, float]]:
    """Balanced (noise, SNR) per utterance: every combination once per round, reshuffled each round."""
    r = random.Random(int(seeded_rng(seed, _SPLIT_CODE[split], 3).integers(2 ** 62)))
    combos = [(nz, float(s)) for nz in noises for s in snrs]
    out: List[Tuple[str, float]] = []
    while len(out) < n:
        rnd = combos[:]
        r.shuffle(rnd)
        out += rnd
    return out[:n]


# ------------------------------------------------------------------------------------------ speech
def _speak(voice: Voice, rng: np.random.Generator, sample_rate: int, min_s: float, max_s: float,
           pads: float = 0.0) -> Tuple[np.ndarray, str]:
    """Trimmed speech of ``voice`` such that its length plus ``pads`` seconds is ``min_s``..``max_s``;
    retries with other sentences (more or fewer words) until it fits."""
    text_rng = random.Random(int(rng.integers(2 ** 62)))
    n_words = int(rng.integers(4, 12))
    last = 0.0
    for _ in range(16):
        text = make_sentence(text_rng, n_words)
        sig = trim_silence(synthesize(voice, text, sample_rate), sample_rate)
        last = len(sig) / sample_rate + pads
        if min_s <= last <= max_s:
            return sig, text
        n_words = n_words + 3 if last < min_s else max(3, n_words - 3)
    raise DataError(f"could not make a {min_s:.1f}-{max_s:.1f} s utterance with voice {voice.base} "
                    f"(last try {last:.2f} s)")


def _clean_utterance(voice: Voice, rng: np.random.Generator, sample_rate: int, min_s: float,
                     max_s: float, levels_db: Sequence[float] = DEFAULT_LEVELS_DB) -> Tuple[np.ndarray, str]:
    # leading/trailing silence like VoiceBank's recordings; drawn first so the length check includes it
    lead = np.zeros(int(rng.uniform(0.1, 0.35) * sample_rate))
    tail = np.zeros(int(rng.uniform(0.1, 0.4) * sample_rate))
    sig, text = _speak(voice, rng, sample_rate, min_s, max_s, pads=(len(lead) + len(tail)) / sample_rate)
    level_db = rng.uniform(*levels_db)  # active speech level varies per recording, as VoiceBank's does
    sig = sig.astype(np.float64) * np.sqrt(10 ** (level_db / 10.0) / max(N.active_speech_power(sig, sample_rate),
                                                                         1e-20))
    sig = np.concatenate([lead, sig, tail])
    # a microphone-like floor far below the speech (-78 dBFS): "clean" recordings are never digital zero
    return sig + 10 ** (-78 / 20.0) * rng.standard_normal(len(sig)), text


def babble_utterance(voice: Voice, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """One babble talker's sentence ``[time]`` float64, scaled to unit active speech power."""
    sig, _ = _speak(voice, rng, sample_rate, 1.0, 8.0)
    sig = sig.astype(np.float64)
    return sig / np.sqrt(max(N.active_speech_power(sig, sample_rate), 1e-20))


# ------------------------------------------------------------------------------------------ build
def build_corpus(out_dir: PathLike, *, n_train_speakers: int, n_test_speakers: int, utts_per_speaker: int,
                 test_utts_per_speaker: Optional[int] = None, sample_rate: int = 16000, naming: str = "vb",
                 seed: int = 0, train_snrs: Sequence[float] = TRAIN_SNRS, test_snrs: Sequence[float] = TEST_SNRS,
                 train_noises: Sequence[str] = TRAIN_NOISES, test_noises: Sequence[str] = TEST_NOISES,
                 min_duration: float = 1.5, max_duration: float = 6.0, workers: Optional[int] = None,
                 progress: Optional[bool] = None, overwrite: bool = False,
                 alsa_noise: PathLike = N.ALSA_NOISE, piper_speakers: int = 0,
                 train_levels_db: Sequence[float] = DEFAULT_LEVELS_DB, self_babble_every: int = 0,
                 self_babble_add: bool = False) -> dict:
    """Writes a synthetic corpus in the VoiceBank-DEMAND layout under ``out_dir``; returns a summary.

    Arguments
    ---------
    out_dir : the corpus root (created).
    n_train_speakers, n_test_speakers : speakers per split (disjoint IDs and voices).
    utts_per_speaker : utterances per training speaker; ``test_utts_per_speaker`` for test speakers
        (defaults to the same).
    sample_rate : of every file (16000; 48000 like the distributed corpus; any rate >= 8000).
    naming : ``"vb"`` (``clean_trainset_wav/``) or ``"28spk"`` (``clean_trainset_28spk_wav/``).
    seed : decides speaker warps, texts, levels, noise and SNR assignment; same arguments -> same bytes.
    train_snrs, test_snrs, train_noises, test_noises : SNRs (dB) and noise types per split.
    min_duration, max_duration : utterance length bounds in seconds (VoiceBank's are about 1.5-6 s).
    workers : threads for synthesis/mixing (default: 2 per CPU, at most 8).
    progress : tqdm bar (default: only for builds of 100+ utterances).
    overwrite : replace an existing corpus here; without it an existing different corpus is an error,
        and an identical complete one (same arguments) is reused as is.
    alsa_noise : the clip behind the ``alsa`` noise type.
    piper_speakers : how many of the training speakers (the last ones) are Piper pseudo-speakers
        (needs the ``voices`` extra); the others and every test speaker are flite / espeak-ng voices.
    train_levels_db : range of the training utterances' active speech level in dBFS (test: -30..-22).
    self_babble_every : > 0: every such training file of each speaker (sorted, from the first) has babble of
        its own speaker's other utterances instead of its noise, at its SNR
        (:mod:`upcycle_se.corpus.self_babble`).
    self_babble_add : with ``self_babble_every``, the babble files are *added* beside the training files under
        new ids (``p226_001`` -> ``p226_001x``, same clean speech) instead of replacing their noise: the
        packaged `default`'s training corpus is ``broad_benchmark`` with ``self_babble_every=2`` added so.

    Returns
    -------
    dict with ``out_dir``, ``sample_rate``, ``naming``, ``seed``, ``folders``, per split ``speakers`` /
    ``utterances`` / ``seconds``, ``noises``, ``snrs``, ``build_seconds`` and ``reused``.

    Raises
    ------
    UserError: flite / espeak-ng or Piper missing (what to install), bad arguments, or a different corpus
        in the way.
    """
    t0 = time.perf_counter()
    out = Path(out_dir)
    test_utts = utts_per_speaker if test_utts_per_speaker is None else test_utts_per_speaker
    folders = corpus_folders(naming)
    for name, value in (("n_train_speakers", n_train_speakers), ("n_test_speakers", n_test_speakers),
                        ("utts_per_speaker", utts_per_speaker), ("test_utts_per_speaker", test_utts)):
        if int(value) < 1:
            raise UserError(f"{name} must be at least 1, not {value}")
    if int(sample_rate) < 8000:
        raise UserError(f"sample_rate must be at least 8000 Hz, not {sample_rate}")
    if not 0.5 <= min_duration < max_duration:
        raise UserError(f"need 0.5 <= min_duration < max_duration (got {min_duration}, {max_duration})")
    if not train_snrs or not test_snrs or not train_noises or not test_noises:
        raise UserError("train/test SNRs and noise types must not be empty")
    overlap = set(train_noises) & set(test_noises)
    if overlap:
        raise UserError(f"train and test noise types must differ (both have {', '.join(sorted(overlap))})")
    recorded = [nz for nz in train_noises if nz in N.USES_ALSA_RECORDING]
    if recorded and "alsa" in test_noises:
        raise UserError(f"training noise {recorded[0]!r} uses ALSA's Noise.wav, the recording behind the 'alsa' "
                        f"test noise; use 'broad' (without it) or drop 'alsa' from the test noises")
    if not 0 <= int(piper_speakers) <= int(n_train_speakers):
        raise UserError(f"piper_speakers must be 0..n_train_speakers ({n_train_speakers}), not {piper_speakers}")
    if int(self_babble_every) < 0:
        raise UserError(f"self_babble_every must be 0 (off) or more, not {self_babble_every}")
    if self_babble_add and not int(self_babble_every):
        raise UserError("self_babble_add needs self_babble_every (which files get a same-voice babble twin)")
    if int(self_babble_every) and int(utts_per_speaker) < 2:
        raise UserError("same-voice babble needs at least 2 utterances per training speaker")
    if len(train_levels_db) != 2 or not train_levels_db[0] <= train_levels_db[1] < 0:
        raise UserError(f"train_levels_db must be (low, high) dBFS with low <= high < 0, not {train_levels_db}")
    require_tools()
    if piper_speakers:
        require_piper()
    N.check_noise_types(list(train_noises) + list(test_noises), Path(alsa_noise))

    config = dict(n_train_speakers=int(n_train_speakers), n_test_speakers=int(n_test_speakers),
                  utts_per_speaker=int(utts_per_speaker), test_utts_per_speaker=int(test_utts),
                  sample_rate=int(sample_rate), naming=naming, seed=int(seed),
                  train_snrs=[float(s) for s in train_snrs], test_snrs=[float(s) for s in test_snrs],
                  train_noises=list(train_noises), test_noises=list(test_noises),
                  min_duration=float(min_duration), max_duration=float(max_duration), format=FORMAT_VERSION)
    # only when set: corpora built before these options existed keep matching (and are reused)
    if piper_speakers:
        config["piper_speakers"] = int(piper_speakers)
    if tuple(float(x) for x in train_levels_db) != DEFAULT_LEVELS_DB:
        config["train_levels_db"] = [float(x) for x in train_levels_db]
    if self_babble_every:
        config["self_babble_every"] = int(self_babble_every)
    if self_babble_add:
        config["self_babble_add"] = True
    reused = _existing(out, config, folders, overwrite)
    if reused is not None:
        reused.update(out_dir=str(out), build_seconds=round(time.perf_counter() - t0, 3), reused=True)
        return reused

    train_pool, test_pool = base_voices()
    train_ids, test_ids = speaker_ids(int(n_train_speakers), int(n_test_speakers))
    n_classic = len(train_ids) - int(piper_speakers)
    speakers = {"train": {**_plan_speakers("train", train_ids[:n_classic], train_pool, seed),
                          **_plan_piper_speakers(train_ids[n_classic:], n_classic, seed)},
                "test": _plan_speakers("test", test_ids, test_pool, seed)}
    levels = {"train": tuple(float(x) for x in train_levels_db), "test": DEFAULT_LEVELS_DB}
    n_utts = {"train": int(utts_per_speaker), "test": int(test_utts)}
    noises = {"train": list(train_noises), "test": list(test_noises)}
    snrs = {"train": config["train_snrs"], "test": config["test_snrs"]}
    sr = int(sample_rate)
    # keep a small margin inside the bounds: sample counts round, and tests check the bounds exactly
    lo, hi = min_duration + 0.02, max_duration - 0.02
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    total = sum(len(speakers[s]) * n_utts[s] for s in speakers)
    show = total >= 100 if progress is None else progress

    with ThreadPoolExecutor(max_workers=workers) as pool:
        # babble material first (the noise of every babble/cafe utterance draws on it)
        contexts = {}
        for split, pool_voices in (("train", train_pool), ("test", test_pool)):
            babble: List[np.ndarray] = []
            if any(nz in N.NEEDS_BABBLE for nz in noises[split]):
                per_talker = min(6, 2 + total // 200)  # more material for bigger builds: less repetition
                talkers = babble_voices(split, pool_voices, seed, piper=split == "train" and bool(piper_speakers))
                jobs = [(v, k) for v in talkers for k in range(per_talker)]
                futs = [pool.submit(babble_utterance, v, seeded_rng(seed, _SPLIT_CODE[split], j, 6), sr)
                        for j, (v, _) in enumerate(jobs)]
                babble = [f.result() for f in futs]
            contexts[split] = N.NoiseContext(sr, babble, Path(alsa_noise))

        tasks = []
        for split in ("train", "test"):
            names = [(spk, i) for spk in speakers[split] for i in range(1, n_utts[split] + 1)]
            schedule = _noise_schedule(split, len(names), noises[split], snrs[split], seed)
            spk_index = {spk: k for k, spk in enumerate(speakers[split])}
            for (spk, i), (nz, snr) in zip(names, schedule):
                tasks.append((split, spk, spk_index[spk], i, nz, snr))
        futures = [pool.submit(_make_pair, out, folders, speakers[t[0]][t[1]], contexts[t[0]], sr, lo, hi,
                               seed, *t, levels_db=levels[t[0]]) for t in tasks]
        records: List[dict] = []
        bar = tqdm(total=len(futures), desc="build-corpus", unit="utt", disable=not show, leave=False)
        try:
            for fut in as_completed(futures):
                records.append(fut.result())
                bar.update(1)
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
        finally:
            bar.close()

    records.sort(key=lambda r: (r["split"], r["name"]))
    if self_babble_every:
        _add_self_babble(out, folders, records, sr, int(self_babble_every), int(seed), add=bool(self_babble_add))
    logs = log_names(naming)
    (out / folders["logs"]).mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        lines = [f"{r['name']} {r['noise']} {r['snr']:g}\n" for r in records if r["split"] == split]
        (out / folders["logs"] / logs[split]).write_text("".join(lines), encoding="utf-8")

    seconds = {s: round(sum(r["seconds"] for r in records if r["split"] == s), 3) for s in ("train", "test")}
    counts = {s: sum(1 for r in records if r["split"] == s) for s in ("train", "test")}
    info = {
        "description": "Synthetic speech-enhancement corpus in the VoiceBank-DEMAND layout, built offline by "
                       "upcycle_se.corpus.build (flite / espeak-ng voices"
                       + (", Piper pseudo-speakers in training" if piper_speakers else "")
                       + ", generated noise). Not VoiceBank-DEMAND: never report scores on it as "
                       "VoiceBank-DEMAND scores.",
        "synthetic": True,
        "config": config,
        "folders": folders,
        "logs": {s: f"{folders['logs']}/{logs[s]}" for s in logs},
        "sample_rate": sr,
        "naming": naming,
        "seed": int(seed),
        "snr_definition": "10*log10(P_speech/P_noise): P_speech = mean power of the clean signal's 20 ms frames "
                          "within 40 dB of its loudest frame; P_noise = mean power of (noisy - clean) over the file",
        "speakers": {s: {spk: v.to_dict() for spk, v in speakers[s].items()} for s in speakers},
        "babble_voices": {s: [v.to_dict() for v in babble_voices(s, p, seed, s == "train" and bool(piper_speakers))]
                          for s, p in (("train", train_pool), ("test", test_pool))
                          if any(nz in N.NEEDS_BABBLE for nz in noises[s])},
        "noises": {**noises, "train": noises["train"] + ([SELF_BABBLE_NOISE] if self_babble_every else [])},
        "snrs": snrs,
        "counts": counts,
        "seconds": seconds,
        "tools": tool_versions(piper=bool(piper_speakers)),
    }
    _write_json_atomic(out / INFO_FILE, info)  # last: its presence marks a complete corpus
    summary = _summary(info)
    summary.update(out_dir=str(out), build_seconds=round(time.perf_counter() - t0, 3), reused=False)
    return summary


def build_preset(out_dir: PathLike, preset: str = "tiny", **overrides) -> dict:
    """:func:`build_corpus` with the settings of a named preset (:data:`PRESETS`); ``overrides`` win."""
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    return build_corpus(out_dir, **{**PRESETS[preset], **overrides})


def _make_pair(out: Path, folders: Dict[str, str], voice: Voice, ctx: N.NoiseContext, sr: int, lo: float,
               hi: float, seed: int, split: str, spk: str, spk_idx: int, utt: int, noise_type: str,
               snr: float, levels_db: Sequence[float] = DEFAULT_LEVELS_DB) -> dict:
    """Synthesizes, mixes and writes one clean/noisy pair plus its transcript."""
    code = _SPLIT_CODE[split]
    clean, text = _clean_utterance(voice, seeded_rng(seed, code, spk_idx, utt, 2), sr, lo, hi, levels_db)
    noise = N.make_noise(noise_type, len(clean), sr, seeded_rng(seed, code, spk_idx, utt, 4), ctx)
    clean, noisy = N.mix_at_snr(clean, noise, snr, sr)
    name = f"{spk}_{utt:03d}"
    write_audio_atomic(out / folders[f"clean_{split}"] / f"{name}.wav", clean, sr)
    write_audio_atomic(out / folders[f"noisy_{split}"] / f"{name}.wav", noisy, sr)
    txt = out / folders[f"txt_{split}"] / f"{name}.txt"
    txt.parent.mkdir(parents=True, exist_ok=True)
    txt.write_text(text + "\n", encoding="utf-8")
    return {"split": split, "name": name, "noise": noise_type, "snr": snr, "seconds": len(clean) / sr}


def _add_self_babble(out: Path, folders: Dict[str, str], records: List[dict], sr: int, every: int,
                     seed: int, add: bool = False) -> None:
    """Rewrites every ``every``-th training mixture of each speaker in same-voice babble (clean files kept) and
    renames its noise in ``records``; with ``add``, writes the babble mixture as a new pair ``<id>x`` (clean
    speech and transcript copied) and appends its record instead."""
    from upcycle_se.audio import load_mono
    from upcycle_se.corpus.self_babble import self_babble_mixtures  # (it imports this module)

    by_speaker: Dict[str, List[dict]] = {}
    for r in records:
        if r["split"] == "train":
            by_speaker.setdefault(r["name"].split("_")[0], []).append(r)
    for k, spk in enumerate(sorted(by_speaker)):
        recs = {r["name"]: r for r in by_speaker[spk]}
        clips = {u: load_mono(out / folders["clean_train"] / f"{u}.wav", sr).numpy() for u in recs}
        mixtures = self_babble_mixtures(clips, {u: r["snr"] for u, r in recs.items()}, sr, every=every, seed=seed,
                                        speaker_index=k)
        for uid, noisy in mixtures.items():
            if not add:
                write_audio_atomic(out / folders["noisy_train"] / f"{uid}.wav", noisy, sr)
                recs[uid]["noise"] = SELF_BABBLE_NOISE
                continue
            new = f"{uid}x"
            for kind, ext in (("clean_train", "wav"), ("txt_train", "txt")):
                src = out / folders[kind] / f"{uid}.{ext}"
                tmp = src.with_name(f".{new}.{ext}.part")
                shutil.copyfile(src, tmp)
                os.replace(tmp, src.with_name(f"{new}.{ext}"))
            write_audio_atomic(out / folders["noisy_train"] / f"{new}.wav", noisy, sr)
            records.append({**recs[uid], "name": new, "noise": SELF_BABBLE_NOISE})
    records.sort(key=lambda r: (r["split"], r["name"]))


def _summary(info: dict) -> dict:
    return {
        "sample_rate": info["sample_rate"], "naming": info["naming"], "seed": info["seed"],
        "folders": dict(info["folders"]),
        "train": {"speakers": len(info["speakers"]["train"]), "utterances": info["counts"]["train"],
                  "seconds": info["seconds"]["train"]},
        "test": {"speakers": len(info["speakers"]["test"]), "utterances": info["counts"]["test"],
                 "seconds": info["seconds"]["test"]},
        "noises": info["noises"], "snrs": info["snrs"],
    }


def _existing(out: Path, config: dict, folders: Dict[str, str], overwrite: bool) -> Optional[dict]:
    """The summary of an identical complete corpus at ``out`` (reuse), else clears the way or refuses."""
    ours = [out / f for f in folders.values()] + [out / INFO_FILE]
    present = [p for p in ours if p.exists() and (p.is_file() or any(p.iterdir()))]
    if not present:
        return None
    info_path = out / INFO_FILE
    if not overwrite and info_path.is_file():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            info = {}
        if info.get("config") == config and _complete(out, info):
            return _summary(info)
    if not overwrite:
        raise UserError(f"{out} already holds a corpus built with other settings (or an incomplete one); "
                        f"pass overwrite=True / --overwrite to replace it, or choose another folder")
    for p in ours:  # only what this builder writes; anything else in out_dir is left alone
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    return None


def _complete(out: Path, info: dict) -> bool:
    folders = info.get("folders", {})
    counts = info.get("counts", {})
    try:
        return all(len(list((out / folders[f"{kind}_{s}"]).glob("*.wav"))) == counts[s]
                   for kind in ("clean", "noisy") for s in ("train", "test"))
    except (KeyError, OSError):
        return False


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
