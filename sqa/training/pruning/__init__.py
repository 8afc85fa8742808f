"""Structured pruning internals (the public API is :mod:`sqa.training.pruning.pruner`).

- ``units``: unit groups with masks, the tensor plan (which axis of which tensor belongs to which
  group), parameter counts as a function of kept units, physical removal of masked units.
- ``layers``: transformer layers whose head count and FFN width are per-layer config values.
- ``head``: the XLS-R-SQA head with prunable layers and attention-pool neurons.
- ``student``: the convolutional-transformer student family, prunable (arch ``pruned-conv-transformer-sqa``).
- ``wav2vec2``: the XLS-R teacher with its own Wav2Vec2 encoder, prunable (arch ``pruned-xlsr-teacher``).
- ``taylor``: data-driven importance and the iterative prune -> recover loop.
- ``gates``: hard-concrete (L0) gates trained with a Lagrangian constraint on the expected size.
"""
