"""ROUGE-1/2/L and BLEU-4 for generated text, Chinese included.

Text with CJK characters is segmented into words with jieba (as is usual for AdvertiseGen-style data);
other text is split on whitespace and punctuation. Scores are F1 (ROUGE) and smoothed sentence BLEU,
averaged over examples, in 0–100 like LLaMA-Factory reports them.
"""

from __future__ import annotations

import re

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
WORD = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def segment(text: str) -> list[str]:
    if CJK.search(text):
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)
        return [w for w in jieba.lcut(text) if w.strip()]
    return WORD.findall(text.lower())


class _Tokenizer:
    """rouge-score's tokenizer interface over ``segment``."""

    def tokenize(self, text: str) -> list[str]:
        return segment(text)


def text_scores(predictions: list[str], references: list[str]) -> dict[str, float]:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_Tokenizer())
    smooth = SmoothingFunction().method3
    totals = {"rouge-1": 0.0, "rouge-2": 0.0, "rouge-l": 0.0, "bleu-4": 0.0}
    for pred, ref in zip(predictions, references, strict=True):
        p, r = segment(pred), segment(ref)
        if not p or not r:
            continue  # an empty side scores zero on every metric
        s = scorer.score(ref, pred)
        totals["rouge-1"] += s["rouge1"].fmeasure
        totals["rouge-2"] += s["rouge2"].fmeasure
        totals["rouge-l"] += s["rougeL"].fmeasure
        totals["bleu-4"] += sentence_bleu([r], p, smoothing_function=smooth)
    n = max(1, len(predictions))
    return {k: round(100 * v / n, 4) for k, v in totals.items()}
