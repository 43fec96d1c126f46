"""Speed benchmark of Up-Cycle-SENet: inference real-time factor, memory, efficiency, precision, training.

Usage (from the repository root)::

    python -m benchmarks.speed            # full run (~13 min on the idle 2-core development CPU)
    python -m benchmarks.speed --quick    # smaller grid, no torch.compile, ~6 min
    python -m benchmarks.speed --no-write # print the section instead of updating benchmarks/RESULTS.md

It rewrites only its own section of ``benchmarks/RESULTS.md`` (between ``<!-- speed:begin -->`` and
``<!-- speed:end -->``), creating the file or the markers when missing. Every figure is measured in a
fresh subprocess (``python -m benchmarks.speed --worker ...``), so that its peak memory is its own.

* :mod:`.inference`: the machine's measured matmul peak (MKL and oneDNN sgemm, same run and thread
  count); the real-time factor, memory and share of that peak of each model of :data:`.common.MODELS`
  (the Up-Cycle presets and a DCCRN-E-sized reference built from the same complex layers) over a grid
  of input lengths, batches and thread counts (and the GPU when one is present); the opt-in allocator
  setting and ``torch.compile`` against the eager defaults.
* :mod:`.precision`: fp32 and bf16 peaks, each generator in both precisions with % of its own peak,
  the packaged default through ``upcycle-se enhance --precision``, PESQ bf16 vs fp32, a training step
  with bf16 autocast (``--precision-only``), and bf16 through ``torch.compile`` (``--compile-precision-only``).
* :mod:`.training`: one full cycle-GAN step (``UpCycleBrain.fit_batch``) with the recipes' own hparams,
  the real data pipeline on its own, and a profile of one step.
"""
