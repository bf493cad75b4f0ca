"""What the tests and the benchmarks share, one helper per role.

- ``daemons``: the real ``jetsplit`` daemons as processes, their output read with
  a timeout;
- ``frames``: folders of real digit images for the agent's folder source;
- ``jsonl``: reading the JSON-lines results another process is writing;
- ``tiny``: tiny real ONNX models, bundles and the edge's hand-off tensors;
- ``traces``: synthetic traces for the threshold search;
- ``machine``: the ``machine`` object every benchmark result carries.

Tests import ``tests.support.NAME``; a benchmark script run as
``python bench/NAME.py`` puts the repository root on ``sys.path`` first. Nothing
here imports a test module or a benchmark.
"""
