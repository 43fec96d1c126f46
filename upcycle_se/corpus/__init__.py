"""The synthetic corpus factory: VoiceBank-DEMAND-shaped corpora built offline, for tests, the demo and
the benchmarks (the recipes read real corpora through :mod:`upcycle_se.data`).

- :mod:`upcycle_se.corpus.build`: the corpus builder and its presets (``build_corpus``, ``build_preset``).
- :mod:`upcycle_se.corpus.speech`: synthetic voices (flite, espeak-ng, Piper) and sentences.
- :mod:`upcycle_se.corpus.noise`: generated noise types and SNR mixing.
- :mod:`upcycle_se.corpus.realvoice`: a small test set of recorded voice clips mixed with the test noises.
"""
