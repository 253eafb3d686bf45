"""Alignment of cached teacher rows to a student's tokens, on hand-made strings.

The oracle is independent of the byte tables under test: each tokenizer's own ``decode`` of a
prefix. A student position must be aligned with a teacher row exactly when both prefixes
spell the same text (and hold the same number of special tokens), and the next token of both
is a training target.
"""

from __future__ import annotations

import numpy as np
import pytest

from logitcache.crosstok import CrossTokenizerCollate, Retokenizer, check_roundtrip
from logitcache.errors import ConfigError, VocabularyMismatchError

HARD = [
    "héllo wörld — naïve café, 東京 and Ελληνικά",
    "emoji 😀 and a family 👨‍👩‍👧 and flags 🇯🇵🇫🇷 end",
    "runs   of    spaces\t\ttabs \n\n\n  newlines\r\n  and trailing   ",
    "def f(x):\n    return x  # 💡\n\n\nclass A:\n\tpass\n",
    "     ",
    "\n",
]


def _teacher_row(tok, texts, sep=True):
    ids = []
    for i, text in enumerate(texts):
        if i and sep:
            ids.append(tok.eos_token_id)  # packing puts EOS between documents
        ids.extend(tok(text, add_special_tokens=False)["input_ids"])
    return np.asarray(ids, np.int64)


def _prefixes(tok, ids):
    """(decoded prefix, specials in it) per position; None where the prefix ends inside a
    character (decode is lossy there, so it cannot judge)."""
    special = np.isin(ids, tok.all_special_ids)
    out = []
    for i in range(len(ids) - 1):
        text = tok.decode(ids[: i + 1].tolist(), skip_special_tokens=True)
        out.append(None if "\ufffd" in text else (text, int(special[: i + 1].sum())))
    return out


def _oracle(teacher, student, t_ids, s_ids):
    """Student positions whose prefix decodes cleanly, and the teacher row whose prefix spells
    the same text with the same number of specials (or None)."""
    t_pref = {}
    for t, key in enumerate(_prefixes(teacher, t_ids)):
        if key is not None:
            t_pref.setdefault(key, t)
    return {s: t_pref.get(key) for s, key in enumerate(_prefixes(student, s_ids)) if key}


def _check_against_oracle(teacher, student, t_ids, row):
    oracle = _oracle(teacher, student, t_ids, row.input_ids)
    for s, t in oracle.items():
        want = t if t is not None and row.targets[s + 1] else -1
        assert row.teacher_pos[s] == want, (s, t, int(row.teacher_pos[s]))
    return sum(1 for t in row.teacher_pos if t >= 0)


@pytest.mark.parametrize("text", HARD)
def test_bytelevel_student_aligns_exactly_where_prefixes_coincide(teacher_tok, student_toks, text):
    student = student_toks["bytelevel"]
    retok = Retokenizer(teacher_tok, student)
    t_ids = _teacher_row(teacher_tok, [text, text[::-1]])
    assert check_roundtrip(teacher_tok, retok.teacher_table, [t_ids], name="teacher") >= 1
    row = retok.align(t_ids, np.ones(len(t_ids), bool))
    # the student's tokens are its own tokenisation of the same text, EOS mapped to its EOS
    expect = _teacher_row(student, [text, text[::-1]])
    np.testing.assert_array_equal(row.input_ids, expect)
    # aligned positions are exactly the coinciding prefixes (whose next token is a target)
    assert _check_against_oracle(teacher_tok, student, t_ids, row) > 0
    # bytes of text per student token add up to the text's bytes
    assert int(row.piece_bytes.sum()) == 2 * len(text.encode())


def test_metaspace_student_aligns_through_offsets_and_unknown_characters(teacher_tok, student_toks):
    student = student_toks["metaspace"]
    retok = Retokenizer(teacher_tok, student)
    texts = ["runs   of    spaces\n\n\n  newlines and   more", "x = [1,  2]\n   done"]
    t_ids = _teacher_row(teacher_tok, texts)
    row = retok.align(t_ids, np.ones(len(t_ids), bool))
    np.testing.assert_array_equal(row.input_ids, _teacher_row(student, texts))
    assert _check_against_oracle(teacher_tok, student, t_ids, row) > 0

    # characters the student never saw become <unk>, spans from offsets: "é" is 2 bytes
    t_ids = _teacher_row(teacher_tok, ["a é 😀 b"])
    row = retok.align(t_ids, np.ones(len(t_ids), bool))
    pieces = student.convert_ids_to_tokens(row.input_ids.tolist())
    assert pieces.count("<unk>") == 2
    by_piece = dict(zip(pieces, row.piece_bytes.tolist()))
    assert by_piece["<unk>"] in (2, 4) and int(row.piece_bytes.sum()) == len("a é 😀 b".encode())
    # the position before " b" aligns: both have read "a é 😀"
    ends = np.cumsum(row.piece_bytes)
    s_b = int(np.flatnonzero(ends == len("a é 😀".encode()))[-1])
    assert row.teacher_pos[s_b] >= 0


def test_row_cut_inside_a_character_leaves_the_partial_bytes_uncovered(teacher_tok, student_toks):
    student = student_toks["bytelevel"]
    retok = Retokenizer(teacher_tok, student)
    text = "😀 done 東"
    ids = _teacher_row(teacher_tok, [text])
    pieces = teacher_tok.convert_ids_to_tokens(ids.tolist())
    assert len(pieces[0]) < 4 and len(pieces[-1]) < 3  # 😀 and 東 span several pieces
    cut = ids[1:-1]  # a packed window starting and ending inside a character
    row = retok.align(cut, np.ones(len(cut), bool))
    assert student.decode(row.input_ids.tolist()) == " done "
    assert int(row.piece_bytes.sum()) == len(b" done ")


def test_special_tokens_map_by_role_unmapped_ones_break_alignment(teacher_tok, student_toks):
    student = student_toks["bytelevel"]
    retok = Retokenizer(teacher_tok, student)
    im_start = teacher_tok.convert_tokens_to_ids("<|im_start|>")
    a = teacher_tok("one two", add_special_tokens=False)["input_ids"]
    b = teacher_tok("three", add_special_tokens=False)["input_ids"]
    ids = np.asarray(a + [im_start] + b + [teacher_tok.eos_token_id] + a, np.int64)
    row = retok.align(ids, np.ones(len(ids), bool))
    tokens = student.convert_ids_to_tokens(row.input_ids.tolist())
    assert "</s>" in tokens and "<|im_start|>" not in tokens  # eos -> </s>; im_start: none
    assert retok.stats["unmapped_specials"] == 1
    s_before = len(student("one two", add_special_tokens=False)["input_ids"]) - 1
    assert row.teacher_pos[s_before] == -1  # the teacher predicts <|im_start|>: no student twin
    eos_s = tokens.index("</s>")
    assert row.teacher_pos[eos_s - 1] == len(a) + 1 + len(b) - 1  # predicting EOS aligns


def test_text_spelling_a_student_special_stays_text(teacher_tok, student_toks):
    student = student_toks["bytelevel"]
    retok = Retokenizer(teacher_tok, student)
    ids = _teacher_row(teacher_tok, ["literal </s> and <s> in text"])
    row = retok.align(ids, np.ones(len(ids), bool))
    assert student.eos_token_id not in row.input_ids.tolist()
    assert student.decode(row.input_ids.tolist()) == "literal </s> and <s> in text"


def test_loss_mask_carries_over_by_text(teacher_tok, student_toks):
    student = student_toks["bytelevel"]
    retok = Retokenizer(teacher_tok, student)
    prompt = teacher_tok("question: what is   it?\n", add_special_tokens=False)["input_ids"]
    answer = teacher_tok("an answer 😀", add_special_tokens=False)["input_ids"]
    ids = np.asarray(prompt + answer, np.int64)
    mask = np.zeros(len(ids), bool)
    mask[len(prompt) - 1 : -1] = True  # positions predicting answer tokens
    row = retok.align(ids, mask)
    text_before = np.cumsum(row.piece_bytes) - row.piece_bytes  # byte start of each token
    prompt_bytes = len(b"question: what is   it?\n")
    np.testing.assert_array_equal(row.targets, text_before >= prompt_bytes)
    kd = row.teacher_pos[row.teacher_pos >= 0]
    assert mask[kd].all() and len(kd) > 0


def test_collate_moves_teacher_targets_onto_student_positions(teacher_tok, student_toks):
    student = student_toks["bytelevel"]
    retok = Retokenizer(teacher_tok, student)
    rng = np.random.default_rng(0)
    samples = []
    for text in HARD[:3]:
        ids = _teacher_row(teacher_tok, [text])
        t, k = len(ids), 4
        samples.append({
            "input_ids": ids.astype(np.int32),
            "loss_mask": np.r_[np.ones(t - 1, bool), False],
            "topk_ids": rng.integers(0, len(teacher_tok), (t, k)).astype(np.int32),
            "topk_logprobs": -rng.random((t, k)).astype(np.float32),
            "tail_logmass": -rng.random(t).astype(np.float32),
        })  # fmt: skip
    batch = CrossTokenizerCollate(retok, vocab_map=True)(samples)
    for i, sample in enumerate(samples):
        row = retok.align(sample["input_ids"], sample["loss_mask"])
        on = np.flatnonzero(row.teacher_pos >= 0)
        np.testing.assert_array_equal(
            batch["topk_ids"][i, on].numpy(), sample["topk_ids"][row.teacher_pos[on]]
        )
        assert batch["kd_mask"][i].sum() == len(on)
        mapped = retok.vocab_map[sample["topk_ids"][row.teacher_pos[on]]]
        np.testing.assert_array_equal(batch["topk_student_ids"][i, on].numpy(), mapped)
        n = len(row)
        labels = batch["labels"][i, : n - 1].numpy()
        np.testing.assert_array_equal(labels[labels >= 0], row.input_ids[1:][row.targets[1:]])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["kd_mask"].shape
    assert int(batch["label_bytes"].sum()) > 0

    no_topk = [{**s, "topk_ids": s["topk_ids"][:, :0]} for s in samples]
    with pytest.raises(ConfigError, match="--top-k K"):
        CrossTokenizerCollate(retok)(no_topk)


def test_vocabulary_map_is_one_to_one_across_piece_schemes(teacher_tok, student_toks):
    for kind, student in student_toks.items():
        retok = Retokenizer(teacher_tok, student)
        vm = retok.vocab_map
        hit = vm[vm >= 0]
        assert len(hit) == len(set(hit.tolist())) > 100, kind
        t_id = teacher_tok.convert_tokens_to_ids("Ġreturn")
        want = "Ġreturn" if kind == "bytelevel" else "▁return"
        assert student.convert_ids_to_tokens(int(vm[t_id])) == want
        assert vm[teacher_tok.eos_token_id] == student.eos_token_id


def test_a_tokenizer_whose_pieces_do_not_spell_the_text_is_refused(tmp_path, teacher_tok):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from logitcache.crosstok import token_bytes

    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.normalizer = normalizers.Lowercase()
    wp.pre_tokenizer = pre_tokenizers.Whitespace()
    wp.decoder = decoders.WordPiece()
    wp.train_from_iterator(["Some Text with  spaces\nand lines"] * 20, trainers.WordPieceTrainer(
        vocab_size=200, special_tokens=["[UNK]"], show_progress=False
    ))  # fmt: skip
    tok = PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]")
    ids = np.asarray(tok("Some Text with  spaces\nand lines")["input_ids"])
    with pytest.raises(VocabularyMismatchError, match="same-tokenizer student"):
        check_roundtrip(tok, token_bytes(tok), [ids], name="wordpiece")
