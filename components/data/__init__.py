"""Prompt data: reading files, tokenising and aligning in loader workers, length-bucketed batches."""
