"""Sequence mixers: the attention slot of a block (causal attention, masks)."""
