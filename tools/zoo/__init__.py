"""Train the demo zoo on MNIST and export it as ONNX (``make zoo``).

A build-time tool, not part of the installed runtime: it needs torch (exactly
``torch==2.13.0``, the CPU wheel: ``pip install -e '.[zoo]'``), which jetsplit never
imports at run time, and setup.py leaves this package out of the wheel. One module
per role:

- ``data``: MNIST splits, the runtime's preprocessing, training augmentation;
- ``models``: the nine networks (little, big and its split halves, four ensemble
  members) and BatchNorm folding;
- ``training``: the training loops;
- ``export``: ONNX export and what is measured on the exported files;
- ``flops``: the FLOP count written to ``zoo.json``;
- ``checks``: the gate checks, with jetsplit's own gates and threshold search;
- ``build``: the whole pipeline and ``main`` (``python -m jetsplit.tools.zoo``).
"""
