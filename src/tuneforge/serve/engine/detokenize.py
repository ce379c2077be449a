"""Incremental detokenization with stop strings: text is released as soon as it is final, never a
half character (byte-level BPE splits UTF-8) and never the first part of a stop string."""

from __future__ import annotations


class IncrementalText:
    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer = tokenizer
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.ids: list[int] = []
        self.text = ""  # decoded so far (complete characters only)
        self.sent = 0  # characters of ``text`` already released

    def add(self, token_id: int) -> tuple[str, bool]:
        """Append a token; return (new releasable text, whether a stop string was hit)."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return "", False
        self.text = text
        for s in self.stop:
            at = self.text.find(s, max(0, self.sent - len(s)))
            if at != -1:
                self.text = self.text[:at]
                return self._release(len(self.text)), True
        return self._release(len(self.text) - self.hold), False

    def finish(self) -> str:
        """Everything not yet released (held-back characters at the end of the answer)."""
        return self._release(len(self.text))

    def _release(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        out = self.text[self.sent : upto]
        self.sent = upto
        return out
