"""Character-level text as token sequences: `text:embedded`, `text:ptb`, `text:PATH`.

Every text becomes non-overlapping sequences of `data.seq_len` tokens (PF, PTB char: "non-overlapping
sequences with each length of 500"); the tail that does not fill a whole sequence is dropped and counted
in `meta["dropped_tokens"]`. Splits are int64 tensors (N, seq_len) of ids into `Dataset.vocab`.

Vocabulary: the sorted union of the symbols of all three splits, so ids are identical across splits and
no <unk> is needed. (PTB char has a closed 50-symbol alphabet — its word-level <unk> is spelled out as
the characters `<`, `u`, `n`, `k`, `>` — so the union equals the training alphabet in practice.)

PTB char format (Mikolov's preprocessing, files ptb.char.{train,valid,test}.txt): one sentence per line,
each character followed by a space, `_` between words. It is detected when the first 200 non-empty lines
all consist of single characters separated by single spaces and `_` occurs; then each line is split on
spaces (empty pieces dropped) and a newline token "\\n" is appended per line, so the sentence boundary is a
symbol the model sees. Any other file is read as plain characters (newlines included).

Splits: a single file is cut into contiguous 90/5/5 blocks (train, valid, test); a directory (and
`text:ptb`, meaning DATA_ROOT/ptb) holds one file per split. With `data.ptb_split=valid-as-train` the train
file is not needed: the first 95% of the valid file trains, its last 5% validates, the test file tests —
the fallback for the project's shared data, which has only PTB valid/test (recorded in `meta["split"]`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from raygen.data.base import DataConfig, DataError, Dataset
from raygen.data.registry import data_root
from raygen.data.transforms import SPLITS

log = logging.getLogger(__name__)

SINGLE_FILE_FRACTIONS = (0.9, 0.05, 0.05)
VALID_AS_TRAIN_FRACTION = 0.95
NEWLINE = "\n"

# The text:embedded alphabet: lowercase letters, digits, space, newline and 14 punctuation marks (52
# symbols, close to PTB char's 50).
EMBEDDED_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789 \n.,;:'\"()[]-_=*"
_ASCII = {
    "\u2019": "'",
    "\u2018": "'",
    "\u201c": '"',
    "\u201d": '"',
    "\u2014": "-",
    "\u2013": "-",
    "\u2026": "...",
}


# --------------------------------------------------------------------------------------------- parsing


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None


def is_ptb_char(text: str, sample: int = 200) -> bool:
    """True when the text looks like Mikolov's PTB char files (see the module docstring)."""
    lines = [line.strip() for line in text.split(NEWLINE, 5 * sample)[: 5 * sample]]
    lines = [line for line in lines if line][:sample]
    if not lines or not any("_" in line for line in lines):
        return False
    return all(all(c == " " for c in line[1::2]) and " " not in line[0::2] for line in lines)


def ptb_char_tokens(text: str) -> list[str]:
    """Tokens of a PTB char file: the space-separated symbols of each line, then a newline token."""
    tokens: list[str] = []
    lines = text.split(NEWLINE)
    if lines and lines[-1].strip() == "":
        lines = lines[:-1]  # the file's final newline does not start another sentence
    for line in lines:
        tokens.extend(piece for piece in line.rstrip("\r").split(" ") if piece)
        tokens.append(NEWLINE)
    return tokens


def tokens_of(text: str, fmt: str) -> list[str]:
    return ptb_char_tokens(text) if fmt == "ptb-char" else list(text)


def embedded_corpus() -> str:
    """Python's own reference text: `pydoc_data.topics.topics` (the Language Reference sections that
    `help()` shows; part of every CPython standard library), topics in sorted key order joined by blank
    lines, lowercased, curly quotes/dashes made ASCII, symbols outside EMBEDDED_ALPHABET removed, runs of
    spaces collapsed, lines without any letter or digit (rst underlines, bare brackets) and repeated blank
    lines dropped. About 400k characters on Python 3.11; the text changes a little between Python
    versions, so meta records the version and a sha256 of the corpus."""
    try:
        from pydoc_data.topics import topics
    except ImportError as err:  # pragma: no cover - part of the standard library
        raise DataError(f"text:embedded needs the standard-library module pydoc_data ({err})") from None
    raw = "\n\n".join(topics[k] for k in sorted(topics)).lower()
    for fancy, plain in _ASCII.items():
        raw = raw.replace(fancy, plain)
    allowed = set(EMBEDDED_ALPHABET)
    out: list[str] = []
    for line in raw.split(NEWLINE):
        line = " ".join("".join(c if c in allowed else " " for c in line).split())
        if not any(c.isalnum() for c in line):
            line = ""
        if line or (out and out[-1]):
            out.append(line)
    return NEWLINE.join(out).strip() + NEWLINE


# --------------------------------------------------------------------------------------------- files


def _ptb_dir(config: DataConfig) -> Path:
    return data_root(config) / "ptb"


def _split_file(directory: Path, split: str) -> Path:
    """ptb.char.<split>.txt, else <split>.txt; the PTB name when neither exists (for messages)."""
    for candidate in (directory / f"ptb.char.{split}.txt", directory / f"{split}.txt"):
        if candidate.exists():
            return candidate
    return directory / f"ptb.char.{split}.txt"


def _needed_splits(config: DataConfig) -> tuple[str, ...]:
    return ("valid", "test") if config.ptb_split == "valid-as-train" else SPLITS


def text_files(name: str, config: DataConfig) -> list[Path]:
    """The files a text dataset reads (for `raygen datasets`)."""
    which = name.split(":", 1)[1]
    if which == "embedded":
        spec = importlib.util.find_spec("pydoc_data.topics")
        return [Path(spec.origin)] if spec and spec.origin else [Path("<pydoc_data.topics is missing>")]
    if which == "ptb":
        directory = _ptb_dir(config)
    else:
        directory = Path(which).expanduser()
        if not directory.is_dir():
            return [directory]
    return [_split_file(directory, s) for s in _needed_splits(config)]


# --------------------------------------------------------------------------------------------- dataset


def _sequences(ids: np.ndarray, seq_len: int, split: str, where: str) -> tuple[torch.Tensor, int]:
    n = len(ids) // seq_len
    if n == 0:
        raise DataError(
            f"{where}: the {split} split has {len(ids)} tokens, fewer than data.seq_len={seq_len}; "
            "lower data.seq_len"
        )
    return torch.from_numpy(ids[: n * seq_len].reshape(n, seq_len).astype(np.int64)), len(ids) - n * seq_len


def _cut(tokens: list[str], fractions: tuple[float, ...]) -> list[list[str]]:
    bounds = np.cumsum([0, *[int(f * len(tokens)) for f in fractions[:-1]]]).tolist() + [len(tokens)]
    return [tokens[a:b] for a, b in itertools.pairwise(bounds)]


def _from_directory(directory: Path, config: DataConfig, name: str) -> tuple[dict[str, list[str]], dict]:
    needed = _needed_splits(config)
    files = {s: _split_file(directory, s) for s in needed}
    missing = [f for f in files.values() if not f.exists()]
    if missing:
        msg = (
            f"dataset '{name}': missing {', '.join(f.name for f in missing)} in {directory}. Put the PTB "
            "character files there (ptb.char.{train,valid,test}.txt from data/ of Mikolov's "
            "simple-examples.tgz; there is no checksummed download for them)"
        )
        if (
            config.ptb_split == "official"
            and files["train"] in missing
            and all(files[s].exists() for s in ("valid", "test"))
        ):
            msg += (
                ", or set data.ptb_split=valid-as-train to train on the valid file and test on the test file"
            )
        raise DataError(msg + ".")
    texts = {s: read_text(f) for s, f in files.items()}
    fmt = "ptb-char" if all(is_ptb_char(t) for t in texts.values()) else "plain"
    tokens = {s: tokens_of(t, fmt) for s, t in texts.items()}
    meta: dict = {"format": fmt, "files": [str(f) for f in files.values()]}
    if config.ptb_split == "valid-as-train":
        train, valid = _cut(tokens["valid"], (VALID_AS_TRAIN_FRACTION, 1 - VALID_AS_TRAIN_FRACTION))
        tokens = {"train": train, "valid": valid, "test": tokens["test"]}
        meta["split"] = (
            "valid-as-train: no train file used; train = first 95% of the valid file, valid = its last 5%, "
            "test = the test file (report as such; not the published protocol)"
        )
    else:
        meta["split"] = "official: one file per split"
    return tokens, meta


def load_text(name: str, config: DataConfig) -> Dataset:
    which = name.split(":", 1)[1]
    if not which:
        raise DataError("text: needs a source: text:embedded, text:ptb or text:PATH")
    if which == "embedded":
        corpus = embedded_corpus()
        tokens = dict(zip(SPLITS, _cut(list(corpus), SINGLE_FILE_FRACTIONS)))
        meta: dict = {
            "format": "plain",
            "source": "pydoc_data.topics (Python reference text), lowercased, 52-symbol alphabet",
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
            "sha256": hashlib.sha256(corpus.encode()).hexdigest(),
            "split": "contiguous 90/5/5",
        }
    else:
        path = _ptb_dir(config) if which == "ptb" else Path(which).expanduser()
        if path.is_dir() or which == "ptb":
            tokens, meta = _from_directory(path, config, name)
        elif path.exists():
            text = read_text(path)
            fmt = "ptb-char" if is_ptb_char(text) else "plain"
            tokens = dict(zip(SPLITS, _cut(tokens_of(text, fmt), SINGLE_FILE_FRACTIONS)))
            meta = {"format": fmt, "files": [str(path)], "split": "contiguous 90/5/5"}
        else:
            raise DataError(f"{path}: no such text file or directory (from dataset name '{name}')")

    vocab = sorted(set().union(*(set(t) for t in tokens.values())))
    lookup = {symbol: i for i, symbol in enumerate(vocab)}
    splits, dropped, counts = {}, {}, {}
    for split in SPLITS:
        ids = np.fromiter((lookup[t] for t in tokens[split]), dtype=np.int64, count=len(tokens[split]))
        splits[split], dropped[split] = _sequences(ids, config.seq_len, split, f"dataset '{name}'")
        counts[split] = len(ids)
    meta.update(
        tokens=counts,
        dropped_tokens=dropped,
        seq_len=config.seq_len,
        vocab_size=len(vocab),
        vocabulary="sorted union of all splits' symbols",
    )
    return Dataset(name=name, kind="sequence", shape=(config.seq_len,), splits=splits, vocab=vocab, meta=meta)
