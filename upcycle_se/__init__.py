"""Up-Cycle-SENet for SpeechBrain: unpaired, phase-aware speech enhancement with a cycle-consistent GAN.

Park & Choi, "Up-Cycle-SENet", Neurocomputing 2025. Sub-packages:

- :mod:`upcycle_se.nnet`: complex-valued layers and the STFT front end;
- :mod:`upcycle_se.models`: the generators and discriminators;
- :mod:`upcycle_se.data`: the recipes' data preparation and pipelines;
- :mod:`upcycle_se.corpus`: the offline synthetic-corpus builder (tests, the demo, the benchmarks);
- :mod:`upcycle_se.metrics`: PESQ, STOI, CSIG/CBAK/COVL, SSNR;
- :mod:`upcycle_se.brain`, :mod:`upcycle_se.inference`, :mod:`upcycle_se.cli`.
"""

__version__ = "0.1.0"
