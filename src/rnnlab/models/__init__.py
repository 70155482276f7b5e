"""Sequence models built from a Recurrent stack and an output head."""

from rnnlab.models.rnn import ModelConfig, RNNPredictor, SequenceLogProb

__all__ = ["ModelConfig", "RNNPredictor", "SequenceLogProb"]
