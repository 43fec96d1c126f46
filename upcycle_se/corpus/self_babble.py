"""Same-voice babble: training noise made of the target speaker's own other utterances.

A model trained on babble of *other* voices learns to keep the voice it hears most of and suppress the
rest; babble in the target's own voice (a room of people who sound alike, a recording with the speaker's
echoes and cross-talk) has no such cue, and there `default` lost STOI on real voices. Making some training
noise out of the same speaker's other utterances (4-7 talkers, each warped into a pseudo-speaker, as
:func:`upcycle_se.corpus.realvoice.real_babble` makes the real-voice set's babble) removed most of that loss
(``docs/experiments/speech_keep.md``, round 2). ``upcycle-se build-corpus --self-babble 2`` builds the packaged
`default`'s training corpus this way.

The clean files are never changed: the mixture is clipped at full scale instead of rescaling both, so a
clean file can be shared (hard-linked) with the corpus it was derived from.
"""
from __future__ import annotations

from typing import Dict, Mapping

import numpy as np

from upcycle_se.corpus import noise as N
from upcycle_se.corpus.build import SELF_BABBLE_NOISE
from upcycle_se.corpus.realvoice import babble_pool, real_babble
from upcycle_se.errors import UserError

__all__ = ["SELF_BABBLE_NOISE", "self_babble_mixtures"]


def self_babble_mixtures(clips: Mapping[str, np.ndarray], snrs: Mapping[str, float], sample_rate: int, *,
                         every: int = 2, seed: int = 0, speaker_index: int = 0) -> Dict[str, np.ndarray]:
    """Same-voice babble mixtures for one speaker.

    Arguments
    ---------
    clips : ``{utterance id: clean [time]}`` of one speaker (at least two utterances).
    snrs : ``{utterance id: SNR in dB}`` of each mixture (the file's SNR in the corpus log).
    sample_rate : of the clips.
    every : every ``every``-th utterance in sorted id order, from the first, gets a mixture.
    seed, speaker_index : decide the babble (``[seed, speaker_index, position]``): same inputs, same samples.

    Returns
    -------
    ``{utterance id: noisy [time] float32}`` for the chosen utterances: the clean clip plus babble of the
    speaker's *other* clips at the utterance's SNR, clipped to [-1, 1].
    """
    if every < 1:
        raise UserError(f"every must be at least 1, not {every}")
    if len(clips) < 2:
        raise UserError(f"same-voice babble needs at least 2 utterances of a speaker, not {len(clips)}")
    out = {}
    for i, uid in enumerate(sorted(clips)):
        if i % every:
            continue
        clean = np.asarray(clips[uid], dtype=np.float64)
        pool = babble_pool(dict(clips), uid, sample_rate)
        babble, _ = real_babble(len(clean), sample_rate, np.random.default_rng([seed, speaker_index, i]), pool)
        _, noisy = N.mix_at_snr(clean, babble, float(snrs[uid]), sample_rate, peak=float("inf"))
        out[uid] = np.clip(noisy, -1.0, 1.0).astype(np.float32)
    return out
