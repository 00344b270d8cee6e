"""A training run assembled from its configs, shared by compress.py and train.py: the job
(`job`: device, loader, programs, scope, output places), where it starts (`restore`:
checkpoint resume or weights), the hooks it adds (`epoch_hooks`: evaluation, checkpoints,
the strategies' `evaluate()`), and the guarded loop (`loop`); backbone pretraining on
object crops (`pretrain`).

Imports: engine, strategies, io, data, metrics, model, config, errors; never commands.
"""
