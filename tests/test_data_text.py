"""Character-sequence datasets: PTB char parsing, plain files, directories, the embedded corpus."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from raygen.data import DataConfig, DataError, load_dataset
from raygen.data.text import EMBEDDED_ALPHABET, is_ptb_char
from tests.shared_data import SHARED_DATA

SHARED_PTB = SHARED_DATA / "ptb"


def decode(ds, split: str) -> list[str]:
    return [ds.vocab[i] for i in ds.splits[split].reshape(-1).tolist()]


def independent_ptb_tokens(path: Path) -> list[str]:
    """Reference parse: whitespace-split every line, newline token after each sentence."""
    out: list[str] = []
    for line in path.read_text().splitlines():
        if line.strip():
            out += line.split() + ["\n"]
    return out


@pytest.fixture
def shared_ptb() -> Path:
    if not (SHARED_PTB / "ptb.char.valid.txt").exists():
        pytest.skip(f"{SHARED_PTB} (the project's shared PTB char valid/test files) is not on this machine")
    return SHARED_PTB


def test_ptb_official_without_train_explains(shared_ptb):
    with pytest.raises(DataError) as err:
        load_dataset("text:ptb", DataConfig(root=str(shared_ptb.parent)))
    msg = str(err.value)
    assert "ptb.char.train.txt" in msg and str(shared_ptb) in msg and "data.ptb_split=valid-as-train" in msg


def test_ptb_valid_as_train(shared_ptb):
    ds = load_dataset("text:ptb", DataConfig(root=str(shared_ptb.parent), ptb_split="valid-as-train"))
    assert ds.kind == "sequence" and ds.shape == (500,) and ds.meta["format"] == "ptb-char"
    assert "valid-as-train" in ds.meta["split"]
    # PF: "Alphabet 50"; the word separator is "_" and spaces are separators, not symbols
    assert 45 <= len(ds.vocab) <= 52 and "_" in ds.vocab and "\n" in ds.vocab and " " not in ds.vocab
    for x in ds.splits.values():
        assert x.dtype == torch.int64 and x.shape[1] == 500 and int(x.max()) < len(ds.vocab)
    valid_tokens = independent_ptb_tokens(shared_ptb / "ptb.char.valid.txt")
    test_tokens = independent_ptb_tokens(shared_ptb / "ptb.char.test.txt")
    cut = int(0.95 * len(valid_tokens))
    # non-overlapping, contiguous sequences: rows concatenated reproduce the token stream exactly
    train, valid, test = decode(ds, "train"), decode(ds, "valid"), decode(ds, "test")
    assert train == valid_tokens[: len(train)] and len(train) > cut - 500
    assert valid == valid_tokens[cut : cut + len(valid)] and len(valid) > len(valid_tokens) - cut - 500
    assert test == test_tokens[: len(test)] and len(test) > len(test_tokens) - 500


def test_ptb_detection(tmp_path):
    ptb = "a _ c a t \n t h e _ d o g \n"
    assert is_ptb_char(ptb)
    assert not is_ptb_char("a cat sat\nthe dog\n")
    assert not is_ptb_char("a b c\n")  # single letters but no word separator


def test_single_ptb_file_split_90_5_5(tmp_path):
    line = " ".join("the_cat_sat") + " \n"
    path = tmp_path / "mini.char.txt"
    path.write_text(line * 200)
    ds = load_dataset(f"text:{path}", DataConfig(seq_len=10))
    tokens = (list("the_cat_sat") + ["\n"]) * 200  # 2400 tokens
    assert ds.meta["format"] == "ptb-char" and ds.vocab == sorted(set(tokens))
    assert decode(ds, "train") == tokens[:2160]
    assert decode(ds, "valid") == tokens[2160:2280]
    assert decode(ds, "test") == tokens[2280:2400]


def test_plain_file_and_shared_vocab(tmp_path):
    text = "abcab\n" * 90 + "Z" * 30  # 'Z' appears only in the test block
    path = tmp_path / "plain.txt"
    path.write_text(text)
    ds = load_dataset(f"text:{path}", DataConfig(seq_len=5))
    assert ds.meta["format"] == "plain" and ds.vocab == sorted(set(text))
    assert "".join(decode(ds, "train")) == text[: len(decode(ds, "train"))]
    assert "Z" in decode(ds, "test") and ds.meta["vocabulary"].startswith("sorted union")


def test_directory_of_splits(tmp_path):
    for split, body in {
        "train": "hello world\n" * 20,
        "valid": "world\n" * 10,
        "test": "hello\n" * 10,
    }.items():
        (tmp_path / f"{split}.txt").write_text(body)
    ds = load_dataset(f"text:{tmp_path}", DataConfig(seq_len=6))
    assert "".join(decode(ds, "valid")) == ("world\n" * 10)
    assert "".join(decode(ds, "test")) == ("hello\n" * 10)


def test_sequence_length_longer_than_split(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abc" * 100)
    with pytest.raises(DataError, match="fewer than data.seq_len=500"):
        load_dataset(f"text:{path}")


def test_not_utf8(tmp_path):
    path = tmp_path / "bin.txt"
    path.write_bytes(b"\xff\xfe\x00\x81" * 10)
    with pytest.raises(DataError, match="not UTF-8") as err:
        load_dataset(f"text:{path}", DataConfig(seq_len=2))
    assert str(path) in str(err.value)


def test_missing_text_path(tmp_path):
    with pytest.raises(DataError, match="no such text file"):
        load_dataset(f"text:{tmp_path / 'nope.txt'}")


def test_binarize_rejected_for_text():
    with pytest.raises(DataError, match="applies to image data"):
        load_dataset("text:embedded", DataConfig(binarize="fixed"))


def test_embedded_corpus():
    a = load_dataset("text:embedded")
    b = load_dataset("text:embedded")
    assert a.meta["sha256"] == b.meta["sha256"] and a.splits["train"].equal(b.splits["train"])
    assert sum(a.meta["tokens"].values()) >= 200_000
    assert set(a.vocab) <= set(EMBEDDED_ALPHABET) and 40 <= len(a.vocab) <= len(EMBEDDED_ALPHABET)
    assert a.shape == (500,) and all(len(x) > 10 for x in a.splits.values())
    text = "".join(decode(a, "train"))
    assert "assert" in text and text == text.lower()
