"""Fill-in-the-middle training data: the transform keeps every byte, splits on characters, marks with
sentinels; training with --fim-rate records it in the model's config; sampling never emits a sentinel."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from multiscale_transformer.generation.row import CompletionOptions, RowState
from multiscale_transformer.generation.sampling import SamplingParams
from multiscale_transformer.model.vocab import EOS_ID, FIM_IDS, FIM_MIDDLE_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID
from multiscale_transformer.training.fim import apply_fim, char_starts, fim_piece

from .test_data import small_corpus
from .test_train import axl_train

TEXT = "def grüße(n):\n    return '€' * n\n".encode()


def undo(piece: list[int]) -> tuple[bytes, bytes, bytes]:
    """(prefix, middle, suffix) of a PSM or SPM piece."""
    assert piece[0] == FIM_PREFIX_ID
    mid = piece.index(FIM_MIDDLE_ID)
    if piece[1] == FIM_SUFFIX_ID:  # SPM: <PRE><SUF> suffix <MID> prefix+middle; the split is not marked
        return b"", bytes(piece[mid + 1 :]), bytes(piece[2:mid])
    suf = piece.index(FIM_SUFFIX_ID)
    return bytes(piece[1:suf]), bytes(piece[mid + 1 :]), bytes(piece[suf + 1 : mid])


@pytest.mark.parametrize("seed", range(40))
def test_a_piece_keeps_its_bytes_in_fim_order_and_splits_on_characters(seed: int) -> None:
    piece = np.frombuffer(TEXT, dtype=np.uint8).astype(np.int64)
    out = fim_piece(piece, np.random.default_rng(seed)).tolist()
    assert len(out) == len(TEXT) + 3 and sorted(i for i in out if i in FIM_IDS) == sorted(FIM_IDS)
    prefix, middle, suffix = undo(out)
    assert prefix + middle + suffix == TEXT
    for part in (prefix, middle, suffix):
        part.decode("utf-8")  # raises if a split cut a character


def test_char_starts_skip_continuation_bytes() -> None:
    piece = np.frombuffer("a€b".encode(), dtype=np.uint8).astype(np.int64)
    assert char_starts(piece).tolist() == [0, 1, 4, 5]


def test_windows_keep_their_length_and_documents_their_eos() -> None:
    doc = list(TEXT)
    window = np.array([*doc[10:], EOS_ID, *doc, EOS_ID, *doc[:7]], dtype=np.int64)
    assert apply_fim(window, 0.0, np.random.default_rng(0)) is window
    seen_psm = seen_spm = False
    for seed in range(30):
        out = apply_fim(window, 1.0, np.random.default_rng(seed))
        assert out.shape == window.shape
        eos = np.flatnonzero(out == EOS_ID).tolist()
        assert len(eos) == 2
        whole = out[eos[0] + 1 : eos[1]].tolist()  # the one complete document, transformed
        prefix, middle, suffix = undo(whole)
        assert prefix + middle + suffix == TEXT
        seen_spm |= whole[1] == FIM_SUFFIX_ID
        seen_psm |= whole[1] != FIM_SUFFIX_ID
    assert seen_psm and seen_spm


LONG = b"".join(f"def f{i}(x):\n    y = x + {i}\n    return y\n\n".encode() for i in range(40))


def test_a_window_cut_from_inside_a_file_ends_its_middle_with_eos_anywhere() -> None:
    """Most windows hold no EOS at all: the transformed piece still ends with one, right after its middle,
    at a random position, and the rest of the file follows as plain text. (Ending every such example at
    the window's last position taught the model to write EOS at position 256, not after a middle.)"""
    text = LONG[100:357]
    window = np.frombuffer(text, dtype=np.uint8).astype(np.int64)  # 257 ids, no document boundary
    positions = set()
    for seed in range(40):
        out = apply_fim(window, 1.0, np.random.default_rng(seed)).tolist()
        assert len(out) == len(window) and out.count(EOS_ID) == 1
        at = out.index(EOS_ID)
        prefix, middle, suffix = undo(out[:at])
        taken = prefix + middle + suffix
        assert text.startswith(taken)  # the piece's first bytes, none invented
        assert bytes(out[at + 1 :]) == text[len(taken) :][: len(out) - at - 1]  # then the rest of the file
        positions.add(at)
    assert len(positions) > 20 and min(positions) < 128  # spread over the window


def test_half_of_the_middles_are_whole_lines_from_their_indentation() -> None:
    piece = np.frombuffer(LONG[:600], dtype=np.uint8).astype(np.int64)
    psm = lines = single = 0
    for seed in range(600):
        out = fim_piece(piece, np.random.default_rng(seed)).tolist()
        if out[1] == FIM_SUFFIX_ID:
            continue  # SPM does not mark where the prefix ends
        psm += 1
        prefix, middle, suffix = undo(out)
        at_line_start = prefix.rstrip(b" ").endswith(b"\n") or not prefix.strip(b" ")
        if middle and at_line_start and suffix.startswith(b"\n") and not middle.startswith((b" ", b"\n")):
            lines += 1
            single += b"\n" not in middle
    assert 0.45 < lines / psm < 0.65  # LINE_SHARE, plus the random spans that happen to be lines
    assert 0.4 < single / lines < 0.65  # half of the line middles are one line


def test_rate_is_the_share_of_documents_transformed() -> None:
    window = np.array([*([*b"x = 1\n", EOS_ID] * 400)], dtype=np.int64)
    out = apply_fim(window, 0.5, np.random.default_rng(0))
    share = int((out == FIM_PREFIX_ID).sum()) / int((out == EOS_ID).sum())  # of the documents still in it
    assert 0.4 < share < 0.6


def test_another_layout_keeps_the_window_and_its_bytes() -> None:
    """apply_fim with a `transform` (an experiment's layout): what the layout leaves of a piece
    follows the EOS as plain text, and the window keeps its length."""

    def first_three_marked(piece: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        held = min(3, len(piece))
        return np.concatenate([[FIM_PREFIX_ID], piece[:held]]), held

    window = np.array([*TEXT, EOS_ID, *b"x = 1\n"], dtype=np.int64)
    out = apply_fim(window, 1.0, np.random.default_rng(0), first_three_marked).tolist()
    assert len(out) == len(window)
    assert out[: 4 + 1 + len(TEXT) - 3] == [FIM_PREFIX_ID, *TEXT[:3], EOS_ID, *TEXT[3:]]


def test_sampling_never_emits_a_sentinel() -> None:
    options = CompletionOptions(50, SamplingParams(1.0, None, None, 1.0), logit_bias={i: 100.0 for i in FIM_IDS})
    state = RowState([1, 2, 3], options, torch.Generator().manual_seed(0), 258)
    logits = torch.zeros(258)
    logits[list(FIM_IDS)] = 50.0
    assert all(state.sample(logits) not in FIM_IDS for _ in range(50))


def test_train_with_fim_rate_marks_the_model(tmp_path: Path) -> None:
    src = small_corpus(tmp_path / "corpus", n=30)
    out = tmp_path / "run"
    done = axl_train(src, out, "--max-steps", "3", "--eval-every", "3")  # FIM at 0.5 is the default
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "config.json").read_text())["fim"] is True
    off = axl_train(src, tmp_path / "off", "--fim-rate", "0", "--max-steps", "2", "--eval-every", "2")
    assert off.returncode == 0, off.stderr
    assert json.loads((tmp_path / "off" / "config.json").read_text())["fim"] is False
    bad = axl_train(src, tmp_path / "bad", "--fim-rate", "1.5", "--max-steps", "1")
    assert bad.returncode != 0 and "--fim-rate must be in [0, 1]" in bad.stderr


def test_a_run_from_before_fim_resumes(tmp_path: Path) -> None:
    """Checkpoints written before ModelConfig had `fim` resume with --fim-rate 0; the default says so."""
    src = small_corpus(tmp_path / "corpus", n=30)
    out = tmp_path / "run"
    first = axl_train(src, out, "--fim-rate", "0", "--max-steps", "2", "--eval-every", "2", "--checkpoint-every", "1")
    assert first.returncode == 0, first.stderr
    for path in (out / "checkpoints").glob("step_*.pt"):  # as an older version wrote them
        ckpt = torch.load(path, weights_only=True)
        del ckpt["config"]["fim"]
        torch.save(ckpt, path)
    refused = axl_train(src, out, "--resume", "--max-steps", "3", "--eval-every", "3")
    assert refused.returncode != 0 and "--fim-rate 0" in refused.stderr
    resumed = axl_train(src, out, "--resume", "--fim-rate", "0", "--max-steps", "3", "--eval-every", "3")
    assert resumed.returncode == 0, resumed.stderr
