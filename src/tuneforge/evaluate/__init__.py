"""Evaluation: eval loss, generation, ROUGE and BLEU."""
