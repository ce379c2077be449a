"""The tokenized examples of a job's records, kept so the next job on the same data starts at once.

Under ``$TUNEFORGE_HOME/cache/tokenized/<key>.npz``. The key is a hash of everything the examples
depend on: the records themselves (so a different split, ``max_samples`` or column mapping is another
entry), the tokenizer (its whole serialized form and special tokens), the chat template's text, and the
data settings that change tokenization (max_len, mask, truncation), plus the versions of the code that
tokenizes. A tokenizer without a serialized form (a slow, Python one) is never cached.

An entry is written to a temporary file beside it and renamed into place, so a job killed while
writing leaves no half entry (its temporary file, named for its process, is removed by the next prune
once an hour has passed). The folder is bounded: after each write the least recently used entries
(a hit touches its entry) are removed until the folder holds at most ``MAX_CACHE_BYTES``. A cache that
cannot be read or written is a miss with a warning, never a failed job.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tuneforge.settings import get_settings

log = logging.getLogger(__name__)

TOKENIZED_DIR = "tokenized"  # under settings.cache_dir
SUFFIX = ".npz"
TMP_PREFIX = ".tmp-"
MAX_CACHE_BYTES = 2 << 30  # int32 ids and labels: ~15 tokenized sets of 52,000 alpaca records
STALE_TMP_S = 3600.0
# Bump when tokenization changes what it gives for the same inputs: older entries then miss.
FORMAT = 1


@dataclass
class CachedExamples:
    examples: list[dict]
    truncated: int
    dropped: int


def cache_folder() -> Path:
    return get_settings().cache_dir / TOKENIZED_DIR


def tokenizer_fingerprint(tokenizer) -> str | None:
    """A hash of everything in the tokenizer that decides token ids; None when it cannot be had."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    h = hashlib.sha256(backend.to_str().encode())
    extra = {
        "class": type(tokenizer).__name__,
        "special": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
        "add_bos_token": getattr(tokenizer, "add_bos_token", None),
        "add_eos_token": getattr(tokenizer, "add_eos_token", None),
        "split_special_tokens": getattr(tokenizer, "split_special_tokens", None),
    }
    h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()


def cache_key(records: list[dict], tokenizer, template: str, settings: dict) -> str | None:
    """The entry's name for these inputs; ``settings``: the data settings that change tokenization."""
    import tokenizers
    import transformers

    fingerprint = tokenizer_fingerprint(tokenizer)
    if fingerprint is None:
        return None
    h = hashlib.sha256()
    head = [FORMAT, transformers.__version__, tokenizers.__version__, fingerprint, template, settings]
    h.update(json.dumps(head, sort_keys=True).encode() + b"\n")
    for start in range(0, len(records), 1024):  # one dumps call for many records: a third of the time
        chunk = json.dumps(records[start : start + 1024], sort_keys=True, ensure_ascii=False)
        h.update(chunk.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def load(key: str | None) -> CachedExamples | None:
    """The entry ``key`` (and marks it used), or None."""
    if key is None:
        return None
    import numpy as np

    path = cache_folder() / f"{key}{SUFFIX}"
    try:
        with np.load(path, allow_pickle=False) as z:
            ids, labels, lengths, counts = z["input_ids"], z["labels"], z["lengths"], z["counts"]
        if int(lengths.sum()) != len(ids) or len(ids) != len(labels) or counts.shape != (2,):
            raise ValueError("lengths do not add up")
        os.utime(path)
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged entry: dropped, and tokenized again
        log.warning("tokenized cache %s unreadable (%s); tokenizing again", path, exc)
        path.unlink(missing_ok=True)
        return None
    ids_list, labels_list = ids.tolist(), labels.tolist()
    examples, at = [], 0
    for n in lengths.tolist():
        examples.append({"input_ids": ids_list[at : at + n], "labels": labels_list[at : at + n]})
        at += n
    return CachedExamples(examples, int(counts[0]), int(counts[1]))


def store(key: str | None, entry: CachedExamples) -> None:
    """Write the entry atomically, then prune the folder to its bound; a failure only warns."""
    if key is None:
        return
    import numpy as np

    folder = cache_folder()
    tmp = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        ids = [t for e in entry.examples for t in e["input_ids"]]
        labels = [t for e in entry.examples for t in e["labels"]]
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", suffix=SUFFIX, dir=folder)
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                input_ids=np.asarray(ids, dtype=np.int32),
                labels=np.asarray(labels, dtype=np.int32),
                lengths=np.asarray([len(e["input_ids"]) for e in entry.examples], dtype=np.int64),
                counts=np.asarray([entry.truncated, entry.dropped], dtype=np.int64),
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / f"{key}{SUFFIX}")
        tmp = None
        prune(folder)
    except OSError as exc:
        log.warning("could not keep the tokenized examples in %s: %s", folder, exc)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def prune(folder: Path, max_bytes: int = MAX_CACHE_BYTES) -> None:
    """Remove the least recently used entries beyond ``max_bytes``, and temporary files left by killed
    writers."""
    entries = []
    now = time.time()
    for path in folder.iterdir():
        try:
            st = path.lstat()
        except OSError:
            continue
        if path.name.startswith(TMP_PREFIX):
            if now - st.st_mtime > STALE_TMP_S:
                path.unlink(missing_ok=True)
        elif path.name.endswith(SUFFIX):
            entries.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= max_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
