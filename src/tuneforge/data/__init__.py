"""Datasets: reading files, detecting formats, canonical records, validation, tokenization, packing."""
