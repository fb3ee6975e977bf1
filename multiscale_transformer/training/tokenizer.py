"""The AXL card's import path for the tokenizer; the vocabulary is defined in model/vocab.py."""

from multiscale_transformer.model.vocab import BOS_ID, EOS_ID, VOCAB_SIZE, ByteTokenizer

__all__ = ["BOS_ID", "EOS_ID", "VOCAB_SIZE", "ByteTokenizer"]
