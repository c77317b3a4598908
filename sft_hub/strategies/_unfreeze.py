"""The Trainer callback behind gradual unfreezing (``freeze`` strategy's ``unfreeze_schedule``).

Private module (leading underscore): the strategy registry imports every public module of this
package at ``sft-hub validate`` time, and this one needs transformers at import.
"""
from __future__ import annotations

from transformers import TrainerCallback


class GradualUnfreezing(TrainerCallback):
    """Applies the strategy's schedule at each epoch start (and on resume, at train start)."""

    def __init__(self, strategy):
        self.strategy = strategy

    def on_train_begin(self, args, state, control, **kwargs):
        self.strategy.check_processes(args.world_size)
        self.strategy.apply_epoch(state.epoch or 0.0)

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.strategy.apply_epoch(state.epoch or 0.0)
