"""Real recorded voices from KLettres (Debian's klettres-data): the speaker split and the utterances made."""
from __future__ import annotations

import numpy as np
import pytest

from upcycle_se.corpus import noise as N
from upcycle_se.corpus.realspeech import (BABBLE_SPEAKERS, KLETTRES_ROOT, TARGET_SPEAKERS, real_utterance,
                                          require_klettres, speaker_clips)
from upcycle_se.errors import UserError

SR = 16000


def test_speaker_split_is_disjoint_and_every_speaker_is_installed():
    groups = [*TARGET_SPEAKERS.values(), *BABBLE_SPEAKERS.values()]
    names = [n for g in groups for n in g]
    assert len(names) == len(set(names)) == 20
    for name in names:
        assert (KLETTRES_ROOT / name).is_dir(), name


def test_clips_are_trimmed_to_speech_at_unit_active_power():
    clips = speaker_clips("fr", SR)
    assert len(clips) > 40 and all(k.split("/")[0] in ("alpha", "syllab") for k in clips)
    for sig in list(clips.values())[:10]:
        assert N.active_speech_power(sig, SR) == pytest.approx(1.0, rel=1e-6)
        assert 0.15 * SR <= len(sig) < 2.0 * SR  # the recordings' padding is cut (they are about 1.5 s long)
        # trimmed: the first and last 20 ms frames are within 40 dB of the loudest
        frames = np.mean(sig[: len(sig) // 320 * 320].reshape(-1, 320) ** 2, axis=1)
        assert 10 * np.log10(min(frames[0], frames[-1]) / frames.max()) > -40.5


def test_real_utterance_joins_distinct_clips_of_one_speaker_deterministically():
    clips = speaker_clips("nl", SR)
    a, used = real_utterance(clips, np.random.default_rng(3), SR)
    b, used_b = real_utterance(clips, np.random.default_rng(3), SR)
    assert np.array_equal(a, b) and used == used_b
    assert len(used) >= 3 and len(set(used)) == len(used) and set(used) <= set(clips)
    assert len(a) <= 4.0 * SR and N.active_speech_power(a, SR) == pytest.approx(1.0, rel=1e-6)
    lengths = [len(real_utterance(clips, np.random.default_rng(s), SR)[0]) / SR for s in range(20)]
    assert 1.5 <= np.median(lengths) <= 4.0


def test_missing_recordings_are_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="apt-get install klettres-data"):
        require_klettres(tmp_path)
    with pytest.raises(UserError, match="apt-get install klettres-data"):
        speaker_clips("fr", SR, root=tmp_path)
