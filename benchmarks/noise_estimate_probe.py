#!/usr/bin/env python3
"""How good are the noise estimates that remixed pseudo-pairs are built from?

The opt-in remix term (``LossConfig.remix_weight``) adds an enhancer's noise estimate of a noisy crop,
``noisy - enhanced``, to unrelated clean speech. This probe measures those estimates on random crops of a
corpus's *training* noisy files, against the true noise ``noisy - clean`` (the synthetic corpus keeps the
clean references of its noisy files; unpaired training never reads them):

- ``si_snr``: scale-invariant SNR (dB) of the estimate against the true noise (the remix rescales the
  estimate to its SNR, so only its shape counts; high is good);
- ``speech_share``: the share of the estimate's STFT energy in bins where the clean speech is stronger
  than the noise (speech leaking into the estimate raises it); ``true_speech_share`` is the true noise's.

For ``--remix_noise=pauses`` (:func:`upcycle_se.losses.pause_noise`), which re-tiles each crop's quietest
windows rather than estimating the noise sample by sample, ``pauses`` reports the SI-SNR of the noisy crop
against the true noise on the samples of the windows it would draw, and the speech-to-noise ratio there.

Estimators: packaged or exported models (``--model``, by name or folder, enhancing each crop on its own as
training does) and the classical MMSE-LSA with its MCRA noise tracker (``mmse_lsa``). Per-crop means with
95 % CIs. Usage::

    python benchmarks/noise_estimate_probe.py --corpus WORK/corpus --model unpaired --out probe.json
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.baselines import mmse_lsa  # noqa: E402
from benchmarks.quality import ci95  # noqa: E402
from upcycle_se.audio import read_audio  # noqa: E402

N_FFT, HOP = 512, 128


def si_snr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant SNR (dB) of ``estimate [time]`` against ``reference [time]``."""
    scale = float(estimate @ reference) / max(float(reference @ reference), 1e-20)
    target = scale * reference
    return 10 * np.log10(max(float(target @ target), 1e-20) / max(float(((estimate - target) ** 2).sum()), 1e-20))


def _power(x: np.ndarray) -> torch.Tensor:
    spec = torch.stft(torch.as_tensor(x, dtype=torch.float64), N_FFT, HOP, window=torch.hann_window(N_FFT,
                      dtype=torch.float64), return_complex=True)
    return spec.abs() ** 2


def speech_share(estimate: np.ndarray, clean: np.ndarray, noise: np.ndarray) -> float:
    """Share of ``estimate``'s STFT energy in the bins where ``clean`` is stronger than ``noise`` (all
    ``[time]``)."""
    est = _power(estimate)
    speech_bins = (_power(clean) > _power(noise)).to(est.dtype)
    return float((est * speech_bins).sum() / est.sum().clamp(min=1e-20))


def model_estimator(name_or_folder: str) -> Callable[[np.ndarray, int], np.ndarray]:
    """``f(noisy [time], sr) -> enhanced [time]`` with a packaged (by name) or exported model, fp32."""
    from upcycle_se.inference import PACKAGED_MODELS, UpCycleEnhancement, packaged_model_dir

    folder = Path(name_or_folder)
    if not folder.is_dir() and name_or_folder in PACKAGED_MODELS:
        folder = packaged_model_dir(name_or_folder)
    model = UpCycleEnhancement.from_hparams(str(folder), run_opts={"precision": "fp32"})

    def enhance(noisy: np.ndarray, sr: int) -> np.ndarray:
        out = model.enhance_signal(torch.as_tensor(noisy, dtype=torch.float32), sr)
        return out.reshape(-1)[: len(noisy)].double().numpy()

    return enhance


def training_crops(corpus: Path, n: int, seconds: float, seed: int) -> List[tuple]:
    """``n`` random ``(noisy, clean, sr)`` crops of the corpus's training files, one per file drawn."""
    names = sorted(p.name for p in (corpus / "noisy_trainset_wav").glob("*.wav"))
    if not names:
        raise SystemExit(f"error: {corpus}/noisy_trainset_wav holds no wav files")
    rng = random.Random(seed)
    crops = []
    for name in rng.sample(names, min(n, len(names))):
        noisy, sr = read_audio(corpus / "noisy_trainset_wav" / name)
        clean, _ = read_audio(corpus / "clean_trainset_wav" / name)
        noisy, clean = noisy.reshape(-1).double().numpy(), clean.reshape(-1).double().numpy()
        length = int(seconds * sr)
        start = rng.randint(0, max(0, len(noisy) - length))
        crops.append((noisy[start:start + length], clean[start:start + length], sr))
    return crops


def probe(enhance: Callable[[np.ndarray, int], np.ndarray], crops: Sequence[tuple]) -> Dict[str, Dict]:
    """Per-crop figures of one estimator's noise estimates, as means with 95 % CIs."""
    snr, share, true_share = [], [], []
    for noisy, clean, sr in crops:
        noise = noisy - clean
        estimate = noisy - enhance(noisy, sr)
        snr.append(si_snr(estimate, noise))
        share.append(speech_share(estimate, clean, noise))
        true_share.append(speech_share(noise, clean, noise))
    return {"si_snr": ci95(snr), "speech_share": ci95(share), "true_speech_share": ci95(true_share)}


def pause_quality(crops: Sequence[tuple], quantile: Optional[float] = None) -> Dict[str, Dict]:
    """How much speech is left in the windows :func:`upcycle_se.losses.pause_noise` draws from: per crop,
    the SI-SNR (dB) of the noisy samples against the true noise there, and the speech-to-noise ratio."""
    from upcycle_se.losses import PAUSE_FRAME, PAUSE_QUANTILE

    quantile = PAUSE_QUANTILE if quantile is None else quantile
    hop, win = PAUSE_FRAME, 2 * PAUSE_FRAME
    snr, speech_to_noise = [], []
    for noisy, clean, sr in crops:
        starts = np.arange(0, len(noisy) - win + 1, hop)
        energy = np.array([np.mean(noisy[a:a + win] ** 2) for a in starts])
        k = max(1, int(np.ceil(quantile * len(starts))))
        keep = np.zeros(len(noisy), dtype=bool)
        for a in starts[energy <= np.sort(energy)[k - 1]]:
            keep[a:a + win] = True
        noise = noisy - clean
        snr.append(si_snr(noisy[keep], noise[keep]))
        speech_to_noise.append(10 * np.log10(max(float(clean[keep] @ clean[keep]), 1e-20)
                                             / max(float(noise[keep] @ noise[keep]), 1e-20)))
    return {"si_snr": ci95(snr), "speech_to_noise_db": ci95(speech_to_noise), "quantile": quantile}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="corpus with noisy_/clean_trainset_wav")
    parser.add_argument("--model", action="append", default=[], help="packaged model name or model folder")
    parser.add_argument("--crops", type=int, default=60, help="random training crops")
    parser.add_argument("--seconds", type=float, default=1.0, help="crop length (the recipes train on 1 s)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the figures")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    crops = training_crops(args.corpus, args.crops, args.seconds, args.seed)
    estimators = {m: model_estimator(m) for m in args.model}
    estimators["mmse_lsa"] = lambda noisy, sr: mmse_lsa(noisy, sr)
    results = {"corpus": str(args.corpus), "crops": len(crops), "seconds": args.seconds, "seed": args.seed,
               "estimators": {name: probe(f, crops) for name, f in estimators.items()}}
    results["pauses"] = pause_quality(crops)
    for name, r in results["estimators"].items():
        print(f"{name:>12}: SI-SNR {r['si_snr']['mean']:+.2f} ± {r['si_snr']['ci']:.2f} dB, speech-bin share "
              f"{r['speech_share']['mean']:.3f} ± {r['speech_share']['ci']:.3f} "
              f"(true noise {r['true_speech_share']['mean']:.3f})")
    r = results["pauses"]
    print(f"{'pauses':>12}: SI-SNR {r['si_snr']['mean']:+.2f} ± {r['si_snr']['ci']:.2f} dB on the quietest "
          f"{r['quantile']:.0%} of windows (speech-to-noise there {r['speech_to_noise_db']['mean']:+.1f} dB)")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
