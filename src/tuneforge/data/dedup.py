"""Duplicates inside a dataset and overlap between a training and an evaluation set.

Exact: records whose texts are equal once whitespace and case are normalised (an 8-byte digest each).
Near: MinHash signatures over word shingles (datasketch's ``affine32`` permutations), candidate pairs
from the buckets datasketch's ``MinHashLSH`` makes (``BandTables``: the same buckets, built in numpy),
kept when the two signatures agree on at least ``jaccard`` of their values (the MinHash estimate of the
shingle sets' Jaccard similarity). Words are compared without case
or punctuation; a CJK character is a word of its own (those scripts put no spaces between words).

Linear and bounded, for 52,000 records in seconds: records are split into words, hashed, shingled and
permuted in numpy a batch of characters at a time (``Signatures._flush``; datasketch's own
``update_batch`` costs a Python call a shingle), and a signature is NUM_PERM 32-bit values. A record
contributes its first MAX_CHARS characters; an exact repeat gets no signature; near-duplicates are looked
for among the first NEAR_LIMIT distinct records, exact ones among all of them (8 bytes a record).

Long because: the numpy signatures, the two checks that use them (a dataset's own duplicates, an
evaluation set against it) and the messages that show them share their constants and record numbering.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable
from functools import cache

import numpy as np

from tuneforge.errors import ConfigError, Problem

from .problem_codes import message, problem
from .records import record_texts

NUM_PERM = 128  # the estimate of a Jaccard of 0.85 has a standard deviation of 0.03
SEED = 1
SCHEME = "affine32"
SHINGLE = 3  # words a shingle: one reworded word of a 40-word answer leaves ~85% of them shared
DEFAULT_JACCARD = 0.8
# The LSH tables hold the first LSH_PERM values of a signature (each band is a sort of every record)
# and datasketch picks the bands for the threshold, weighing missed pairs against false candidates: a
# false candidate costs one comparison of signatures here, a missed pair is a duplicate unreported.
# At 0.8: 10 bands of 6 values; a pair at Jaccard 0.85 is a candidate 99% of the time, at 0.8 95%.
LSH_PERM = 64
LSH_WEIGHTS = (0.05, 0.95)
EXAMPLES = 5  # pairs of record numbers shown for each kind of duplicate
MAX_CHARS = 200_000  # of a record's normalised text, for the near check (a 1 MB record is not slower)
LONG_TEXT = 65_536  # characters of one text normalised; past them a text is hashed as it is
# Distinct records with a signature (NUM_PERM x 4 bytes each, and the band tables' keys and rows); past
# this many, later records are checked exactly only.
NEAR_LIMIT = 64_000
WORD_CHARS = 24  # characters of a word that are hashed (longer words sharing them count as one)
BATCH_CHARS = 1 << 19  # characters split into words and shingled at once (~40 MB of numpy arrays)
ROWS = 1 << 14  # shingles permuted at once: ROWS x NUM_PERM x 4 bytes = 8 MiB
_MIX = (np.uint32(0x9E3779B1), np.uint32(0x85EBCA77))  # odd: shingle = w0*m0 + w1*m1 + w2 (mod 2^32)
_CHAR_MIX = np.random.RandomState(SEED).randint(0, 1 << 31, WORD_CHARS, dtype=np.uint32) * 2 + 1
_EMPTY = np.uint32(0xFFFFFFFF)
SEPARATOR, WORD, CJK = 0, 1, 2


def _normal(text: str) -> str:
    if len(text) <= LONG_TEXT:
        return " ".join(text.lower().split())
    # The head of a long text, and Python's hash of all of it (computed once per string object: a 1 MiB
    # string a Parquet dictionary repeats in every row, or 200 MiB of spaces, cost no copy per record).
    return " ".join(text[:LONG_TEXT].lower().split()) + f" \x1e{hash(text) & 0xFFFFFFFFFFFF:x}"


def normal_text(record: dict) -> str:
    """The record's texts in order, each lower-cased with its whitespace collapsed (past LONG_TEXT
    characters, the rest of a text counts through its hash: case and spaces there are not ignored)."""
    return "\x1f".join(_normal(text) for text in record_texts(record))


def _digest(text: str) -> int:
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate (an undecodable file name) is kept
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


@cache
def _classes() -> np.ndarray:
    """SEPARATOR, WORD or CJK for each code point of the basic plane (Python's \\w is a word character)."""
    table = np.array([WORD if (c := chr(i)).isalnum() or c == "_" else SEPARATOR for i in range(1 << 16)])
    for low, high in (
        (0x3040, 0x30FF),
        (0x3400, 0x4DBF),
        (0x4E00, 0x9FFF),
        (0xAC00, 0xD7AF),
        (0xF900, 0xFAFF),
    ):
        table[low : high + 1] = CJK
    return table.astype(np.uint8)


def _char_classes(points: np.ndarray) -> np.ndarray:
    classes = _classes()[points & 0xFFFF]
    beyond = points > 0xFFFF  # CJK extensions (planes 2 and 3) are CJK; emoji and the rest separate
    classes[beyond] = np.where((points[beyond] >= 0x20000) & (points[beyond] < 0x40000), CJK, SEPARATOR)
    return classes


def word_hashes(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(hash, start) of each word of ``text``: a run of word characters, or one CJK character. The hash
    is the word's first WORD_CHARS code points times fixed odd numbers, summed modulo 2^32."""
    points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    classes = _char_classes(points)
    inside = classes != SEPARATOR
    starts = inside & ((classes == CJK) | np.r_[True, classes[:-1] != WORD])
    first = np.flatnonzero(starts)
    if not len(first):
        return np.empty(0, np.uint32), first
    chars = np.flatnonzero(inside)
    word_of = np.cumsum(starts)[chars] - 1  # the word each word character belongs to
    offset = chars - first[word_of]
    counted = offset < WORD_CHARS
    mixed = points[chars[counted]] * _CHAR_MIX[offset[counted]]
    return np.add.reduceat(
        mixed, np.flatnonzero(np.r_[True, offset[counted][1:] == 0]), dtype=np.uint32
    ), first


def shingle_hashes(words: np.ndarray, owners: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(hash, owner) of every run of SHINGLE consecutive words of one owner (a record), ordered by owner;
    an owner with fewer words has one shingle of them all."""
    counts = np.bincount(owners) if len(owners) else np.empty(0, np.int64)
    n = max(len(words) - SHINGLE + 1, 0)
    shingles = words[:n] * _MIX[0] + words[1 : n + 1] * _MIX[1] + words[SHINGLE - 1 :]
    inside = owners[:n] == owners[SHINGLE - 1 :]
    short = np.flatnonzero((counts > 0) & (counts < SHINGLE))  # their first word is at the owner's start
    at = np.r_[0, np.cumsum(counts)[:-1]][short]
    second = np.where(counts[short] > 1, words[np.minimum(at + 1, len(words) - 1)] * _MIX[1], 0)
    hashes = np.r_[shingles[inside], words[at] * _MIX[0] + second].astype(np.uint32)
    owned = np.r_[owners[:n][inside], short]
    order = np.argsort(owned, kind="stable")
    return hashes[order], owned[order]


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finalizer: the pre-mix datasketch applies before its affine32 permutations."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


@cache
def _permutations() -> tuple[np.ndarray, np.ndarray]:
    """datasketch's (a, b) for NUM_PERM affine32 permutations, as columns, drawn as its
    ``MinHash._init_permutations`` draws them (odd ``a``), without importing datasketch: its package
    imports scipy, 1.5 CPU-s of every `datasets validate` and job that computes a signature.
    tests/data/test_dedup.py checks the signatures against datasketch's own MinHash."""
    gen = np.random.RandomState(SEED)
    a = gen.randint(0, 1 << 31, NUM_PERM, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, NUM_PERM, dtype=np.uint32)
    return a[:, None], b[:, None]


def fill_signatures(out: np.ndarray, hashes: np.ndarray, owners: np.ndarray) -> None:
    """Lower ``out[owner]`` to the MinHash of each owner's ``hashes`` (owners ascending): the values
    datasketch's ``MinHash(scheme="affine32", hashfunc=identity).update_batch(hashes)`` holds."""
    mixed = _fmix32(hashes)
    perm_a, perm_b = _permutations()
    for start in range(0, len(mixed), ROWS):
        part, who = mixed[start : start + ROWS], owners[start : start + ROWS]
        permuted = perm_a * part + perm_b  # NUM_PERM x ROWS; uint32 wraps: the modulo 2^32 of affine32
        firsts = np.flatnonzero(np.r_[True, who[1:] != who[:-1]])
        rows = who[firsts]
        out[rows] = np.minimum(out[rows], np.minimum.reduceat(permuted, firsts, axis=1).T)


class Signatures:
    """Exact digests and MinHash signatures of records added one at a time (a streaming read)."""

    def __init__(self):
        self.digests = array("q")  # of every record
        self.records = array("q")  # the record each signature is of: the first record of each digest
        self.word_counts = array("q")  # of each signature's record (0: no words, an empty signature)
        self.blocks: list[np.ndarray] = []
        self._seen: set[int] = set()
        self._texts: list[str] = []
        self._chars = 0
        self._sig: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.digests)

    @property
    def full(self) -> bool:
        """Whether NEAR_LIMIT distinct records have a signature (later ones are checked exactly only)."""
        return len(self._seen) >= NEAR_LIMIT

    def add(self, record: dict) -> None:
        text = normal_text(record)
        digest = _digest(text)
        self.digests.append(digest)
        if digest in self._seen or self.full:  # an exact repeat needs no signature: its first has one
            return
        self._seen.add(digest)
        self.records.append(len(self.digests) - 1)
        self._texts.append(text[:MAX_CHARS])
        self._chars += min(len(text), MAX_CHARS) + 1
        if self._chars >= BATCH_CHARS:
            self._flush()

    def _flush(self) -> None:
        """Signatures of the records pending: their texts joined by a separator, split in one go."""
        if not self._texts:
            return
        words, starts = word_hashes("\x00".join(self._texts))
        ends = np.cumsum([len(t) + 1 for t in self._texts])
        owners = np.searchsorted(ends, starts, side="right")
        block = np.full((len(self._texts), NUM_PERM), _EMPTY, dtype=np.uint32)
        fill_signatures(block, *shingle_hashes(words, owners))
        self.blocks.append(block)
        self.word_counts.extend(np.bincount(owners, minlength=len(self._texts)).tolist())
        self._texts, self._chars = [], 0

    @property
    def matrix(self) -> np.ndarray:
        """One signature a row (``records`` says whose) x NUM_PERM."""
        if self._sig is None or self._texts or self.blocks:
            self._flush()
            blocks = ([self._sig] if self._sig is not None else []) + self.blocks
            self.blocks = []
            self._sig = np.concatenate(blocks) if blocks else np.empty((0, NUM_PERM), np.uint32)
        return self._sig

    def row_records(self) -> np.ndarray:
        return np.frombuffer(self.records, dtype=np.int64)

    def kinds(self) -> tuple[np.ndarray, np.ndarray]:
        """(short, long) rows: of 1 to SHINGLE words (a single shingle: near means the same words, found
        by sorting) and of more (found through the LSH tables)."""
        _ = self.matrix  # signs the records still pending
        counts = np.frombuffer(self.word_counts, dtype=np.int64)
        return (counts > 0) & (counts <= SHINGLE), counts > SHINGLE


def _row_keys(rows: np.ndarray) -> np.ndarray:
    """64 bits of each signature: enough to tell single shingles apart."""
    return np.ascontiguousarray(rows[:, :2]).view(np.int64).ravel()


def _find(keys: np.ndarray, wanted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(which of ``wanted`` are among ``keys``, the index in ``keys`` of each of those found)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    at = np.minimum(np.searchsorted(ordered, wanted), max(len(ordered) - 1, 0))
    hit = ordered[at] == wanted if len(ordered) else np.zeros(len(wanted), bool)
    return hit, order[at[hit]]


def _exact_firsts(digests: np.ndarray) -> np.ndarray:
    """For each record, the first record with its digest (itself when it is the first)."""
    if not len(digests):
        return np.empty(0, np.int64)
    order = np.argsort(digests, kind="stable")
    ordered = digests[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]]
    group_first = order[np.flatnonzero(starts)][np.cumsum(starts) - 1]
    firsts = np.empty_like(order)
    firsts[order] = group_first
    return firsts


@cache
def lsh_bands(jaccard: float) -> tuple[int, int]:
    """(bands, values a band) of the LSH tables at ``jaccard``: datasketch's choice for LSH_PERM values
    and LSH_WEIGHTS (``datasketch.lsh._optimal_param``: the first (b, r), b then r ascending, of least
    weighted area of false candidates below ``jaccard`` and missed pairs above it). Its areas come from
    scipy's quad (datasketch's package imports scipy: 1.5 CPU-s of a process); here from Gauss-Legendre
    nodes, exact for these polynomials (degree b*r <= LSH_PERM). tests/data/test_dedup.py compares the
    choice with datasketch's at thresholds across the range."""
    nodes, weights = np.polynomial.legendre.leggauss(LSH_PERM // 2 + 1)

    def area(lo: float, hi: float, b: int, r: int) -> float:  # of P(a pair shares a bucket) on [lo, hi]
        s = (hi - lo) / 2 * nodes + (hi + lo) / 2
        return float((hi - lo) / 2 * (weights @ (1 - (1 - s**r) ** b)))

    fp_weight, fn_weight = LSH_WEIGHTS
    best, choice = float("inf"), (0, 0)
    for b in range(1, LSH_PERM + 1):
        for r in range(1, LSH_PERM // b + 1):
            false_positives = area(0.0, jaccard, b, r)
            false_negatives = (1.0 - jaccard) - area(jaccard, 1.0, b, r)
            error = false_positives * fp_weight + false_negatives * fn_weight
            if error < best:
                best, choice = error, (b, r)
    return choice


def _band_keys(sig: np.ndarray, band: int, width: int) -> np.ndarray:
    """Each row's values of one band as one opaque key: rows share a bucket when their keys are equal."""
    values = np.ascontiguousarray(sig[:, band * width : (band + 1) * width])
    return values.view(np.dtype((np.void, values.itemsize * width))).ravel()


class BandTables:
    """datasketch's MinHashLSH buckets (a band's values equal), as sorted numpy keys: built in one sort a band
    instead of a Python call a record and band (52,000 records: 10 s of the duplicate check and ~5 KB a
    record of Python sets), the same buckets, so the same candidates."""

    def __init__(self, sig: np.ndarray, rows: np.ndarray, jaccard: float):
        self.bands, self.width = lsh_bands(jaccard)
        self.rows = rows  # the signature rows in the tables
        self.tables = []  # a band's (keys sorted, the rows in that order: by key, then by row)
        for band in range(self.bands):
            keys = _band_keys(sig[rows], band, self.width)
            order = np.argsort(keys, kind="stable")
            self.tables.append((keys[order], rows[order]))

    def neighbour_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """(row, candidate) pairs, unique, by row then candidate: in each bucket every row but the first is
        paired with the bucket's first row and with the row before it (at most two a band: linear, however
        many rows share a bucket)."""
        pairs = []
        for keys, rows in self.tables if len(self.rows) else ():
            same = keys[1:] == keys[:-1]  # a row in the bucket of the row before it
            starts = np.r_[True, ~same]
            first = rows[np.flatnonzero(starts)][np.cumsum(starts) - 1]
            pairs += [(rows[1:][same], rows[:-1][same]), (rows[1:][same], first[1:][same])]
        row = np.concatenate([p[0] for p in pairs] or [np.empty(0, np.int64)]).astype(np.int64)
        candidate = np.concatenate([p[1] for p in pairs] or [np.empty(0, np.int64)]).astype(np.int64)
        if not len(row):
            return row, candidate
        width = int(max(row.max(), candidate.max())) + 1
        both = np.unique(row * width + candidate)  # sorted by row, then candidate
        return both // width, both % width

    def query(self, sig_row: np.ndarray) -> list[int]:
        """The rows sharing a bucket with a signature (of another set), ascending."""
        found: set[int] = set()
        for band, (keys, rows) in enumerate(self.tables):
            key = _band_keys(sig_row[None, :], band, self.width)
            low, high = np.searchsorted(keys, key)[0], np.searchsorted(keys, key, side="right")[0]
            found.update(rows[low:high].tolist())
        return sorted(found)


def best_pairs(sig: np.ndarray, row: np.ndarray, candidate: np.ndarray, jaccard: float):
    """For each row of the (row, candidate) pairs (by row, then candidate), the candidate whose signature
    agrees most with its own (the first of equals), where it agrees on at least ``jaccard`` of it: (rows,
    candidates, agreement). ``_best`` of each row's candidates, in a few numpy calls."""
    agree = np.empty(len(row), np.float64)
    for start in range(0, len(row), ROWS):
        a, b = row[start : start + ROWS], candidate[start : start + ROWS]
        agree[start : start + ROWS] = (sig[a] == sig[b]).mean(axis=1)
    if not len(row):
        return row, candidate, agree
    firsts = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
    best = np.maximum.reduceat(agree, firsts)
    group = np.cumsum(np.r_[True, row[1:] != row[:-1]]) - 1
    top = np.flatnonzero(agree == best[group])
    top = top[np.r_[True, group[top][1:] != group[top][:-1]]]  # the first candidate of each row's best
    keep = top[agree[top] >= jaccard]
    return row[keep], candidate[keep], agree[keep]


def _best(
    sig: np.ndarray, row: np.ndarray, candidates: list[int], jaccard: float
) -> tuple[int, float] | None:
    """The candidate whose signature agrees most with ``row``, if it agrees on ``jaccard`` of it."""
    if not candidates:
        return None
    agree = (sig[candidates] == row).mean(axis=1)
    k = int(np.argmax(agree))
    return (candidates[k], float(agree[k])) if agree[k] >= jaccard else None


class DuplicateFinder:
    """Exact and near duplicates among records streamed through ``add``; ``report()`` once at the end."""

    def __init__(self, jaccard: float | None = None):
        jaccard = DEFAULT_JACCARD if jaccard is None else jaccard
        if not 0.0 < jaccard <= 1.0:
            raise ConfigError(f"the Jaccard threshold must be over 0 and at most 1; got {jaccard}.")
        self.jaccard = jaccard
        self.signatures = Signatures()
        self.lsh: BandTables | None = None  # the LSH buckets of the records of more than SHINGLE words
        self.firsts: np.ndarray | None = None
        self.near: dict[int, tuple[int, float]] = {}  # record → (earlier record, estimated Jaccard)

    def add(self, record: dict) -> None:
        self.signatures.add(record)

    def _index(self) -> None:
        """Exact duplicates by digest. A record of at most SHINGLE words is one shingle, so its near
        duplicates have the same words: found by sorting. Longer ones go into the LSH tables, and each
        record of a band's bucket is compared with the bucket's first record and with the one before it
        (at most two comparisons a band: linear, however many records share a bucket)."""
        if self.firsts is not None:
            return
        self.firsts = _exact_firsts(np.frombuffer(self.signatures.digests, dtype=np.int64))
        sig, records = self.signatures.matrix, self.signatures.row_records()
        short, long = self.signatures.kinds()
        rows = np.flatnonzero(short)
        same = _exact_firsts(_row_keys(sig[rows]))
        for k in np.flatnonzero(same != np.arange(len(rows))).tolist():
            self.near[int(records[rows[k]])] = (int(records[rows[same[k]]]), 1.0)
        self.lsh = BandTables(sig[:, :LSH_PERM], np.flatnonzero(long), self.jaccard)
        rows, found, agree = best_pairs(sig, *self.lsh.neighbour_pairs(), self.jaccard)
        found_records = records[found].tolist()
        for row, like, share in zip(records[rows].tolist(), found_records, agree.tolist(), strict=True):
            self.near[row] = (like, share)

    def report(self) -> dict:
        """Counts and a few examples (record numbers count from 1, in reading order, as the rest of the
        validation report does and as lines do)."""
        self._index()
        dupes = np.flatnonzero(self.firsts != np.arange(len(self.firsts)))
        n = len(self.signatures)
        return {
            "records": n,
            "jaccard": self.jaccard,
            "exact": {
                "count": int(len(dupes)),
                "examples": [
                    {"record": int(i) + 1, "same_as": int(self.firsts[i]) + 1} for i in dupes[:EXAMPLES]
                ],
            },
            "near": {
                "count": len(self.near),
                "examples": [
                    {"record": i + 1, "like": j + 1, "jaccard": round(s, 2)}
                    for i, (j, s) in sorted(self.near.items())[:EXAMPLES]
                ],
                # past NEAR_LIMIT distinct records, the rest are checked for exact copies only
                **({"checked_distinct_records": NEAR_LIMIT} if self.signatures.full else {}),
            },
        }

    def keep(self) -> np.ndarray:
        """Whether each record is the first of its kind (neither an exact nor a near duplicate)."""
        self._index()
        keep = self.firsts == np.arange(len(self.firsts))
        keep[list(self.near)] = False
        return keep

    def overlap(self, evaluation: Signatures) -> dict:
        """How much of ``evaluation`` is in the records added here (the training set)."""
        self._index()
        hit, same = _find(
            np.frombuffer(self.signatures.digests, dtype=np.int64),
            np.frombuffer(evaluation.digests, dtype=np.int64),
        )
        exact = list(zip(np.flatnonzero(hit).tolist(), same.tolist(), strict=True))
        sig, train_records = self.signatures.matrix, self.signatures.row_records()
        rows, eval_records = evaluation.matrix, evaluation.row_records()
        short, long = (~hit[eval_records] & kind for kind in evaluation.kinds())
        train_short = np.flatnonzero(self.signatures.kinds()[0])
        found, at = _find(_row_keys(sig[train_short]), _row_keys(rows[short]))
        by_row = {  # eval row → (train record, Jaccard)
            row: (int(train_records[train_short[j]]), 1.0)
            for row, j in zip(np.flatnonzero(short)[found].tolist(), at.tolist(), strict=True)
        }
        for row in np.flatnonzero(long).tolist():
            best = _best(sig, rows[row], self.lsh.query(rows[row, :LSH_PERM]), self.jaccard)
            if best is not None:
                by_row[row] = (int(train_records[best[0]]), best[1])
        # An eval record that repeats an earlier eval record has no row: it shares its first's result.
        row_of = {record: row for row, record in enumerate(eval_records.tolist())}
        firsts = _exact_firsts(np.frombuffer(evaluation.digests, dtype=np.int64))
        near: list[tuple[int, int, float]] = []
        for i in np.flatnonzero(~hit).tolist():
            result = by_row.get(row_of.get(int(firsts[i]), -1))
            if result is not None:
                near.append((i, *result))
        n_eval = len(evaluation)
        overlapping = len(exact) + len(near)
        return {
            "train_records": len(self.signatures),
            "eval_records": n_eval,
            "jaccard": self.jaccard,
            "overlapping": overlapping,
            "share": round(overlapping / n_eval, 4) if n_eval else 0.0,
            "exact": {
                "count": len(exact),
                "examples": [{"eval_record": i + 1, "train_record": j + 1} for i, j in exact[:EXAMPLES]],
            },
            "near": {
                "count": len(near),
                "examples": [
                    {"eval_record": i + 1, "train_record": j + 1, "jaccard": round(s, 2)}
                    for i, j, s in near[:EXAMPLES]
                ],
            },
        }


def find_duplicates(records: Iterable[dict], jaccard: float | None = None) -> DuplicateFinder:
    finder = DuplicateFinder(jaccard)
    for record in records:
        finder.add(record)
    return finder


def eval_overlap(train: Iterable[dict], evaluation: Iterable[dict], jaccard: float | None = None) -> dict:
    """The overlap report of an evaluation set with a training set (records in memory)."""
    signatures = Signatures()
    for record in evaluation:
        signatures.add(record)
    return find_duplicates(train, jaccard).overlap(signatures)


def _pairs(examples: list[dict], a: str, b: str, sign: str) -> str:
    return ", ".join(f"{e[a]} {sign} {e[b]}" for e in examples)


def duplicate_warnings(report: dict) -> list[Problem]:
    """The warnings a validation shows for a ``DuplicateFinder.report()``."""
    out = []
    exact, near = report["exact"], report["near"]
    if exact["count"]:
        pairs = _pairs(exact["examples"], "record", "same_as", "=")
        out.append(problem("exact_duplicates", count=exact["count"], pairs=pairs))
    if near["count"]:
        pairs = _pairs(near["examples"], "record", "like", "~")
        out.append(problem("near_duplicates", count=near["count"], jaccard=report["jaccard"], pairs=pairs))
    return out


def overlap_params(overlap: dict) -> dict:
    """The params of the ``eval_overlap`` problem: how much of an evaluation set is in the training set."""
    parts = []
    if overlap["exact"]["count"]:
        shown = _pairs(overlap["exact"]["examples"], "eval_record", "train_record", "=")
        parts.append(f"{overlap['exact']['count']} exact (eval record = train record: {shown})")
    if overlap["near"]["count"]:
        shown = _pairs(overlap["near"]["examples"], "eval_record", "train_record", "~")
        parts.append(f"{overlap['near']['count']} near, Jaccard ≥ {overlap['jaccard']} ({shown})")
    return {
        "overlapping": overlap["overlapping"],
        "eval_records": overlap["eval_records"],
        "share": f"{overlap['share']:.1%}",
        "details": ": " + "; ".join(parts) if parts else "",
    }


def overlap_message(overlap: dict) -> str:
    """One line on how much of an evaluation set is in the training set."""
    return message("eval_overlap", **overlap_params(overlap))
