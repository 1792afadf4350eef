"""The local cross-encoder: real relevance, order and padding invariance, truncation, and clear errors."""

import shutil

import pytest

from retrieval.rerank import CrossEncoderReranker, RerankerNotFound, bundled_reranker_path

LEAVE_QUERY = "how many days of annual leave do employees get"
LEAVE = "Full-time employees are entitled to 25 days of paid annual leave per calendar year, plus public holidays."
EXPENSES = "Travel expenses must be submitted through the finance portal within 30 days, with receipts attached."
VPN = "To connect to the office network from home, install the VPN client and sign in with your company account."
PARKING = "Visitor parking is available in the basement garage; register the car's plate number at reception."
BACKUP = "The database is backed up every night at 2am and backups are kept for 90 days on the archive server."

LONG = " ".join([EXPENSES, VPN, PARKING, BACKUP] * 3)
MIXED_LENGTHS = [LONG, "Annual leave.", LEAVE, VPN + " " + PARKING, "Leave", LONG + " " + LEAVE]


@pytest.fixture(scope="module")
def reranker():
    return CrossEncoderReranker(threads=2)


def test_the_relevant_passage_outscores_unrelated_ones(reranker):
    scores = reranker.score(LEAVE_QUERY, [EXPENSES, VPN, LEAVE, PARKING, BACKUP])
    assert scores.index(max(scores)) == 2
    # "30 days", "90 days": sharing the word "days" is not enough
    assert scores[2] > max(scores[:2] + scores[3:]) + 3


def test_a_second_query_picks_its_own_passage(reranker):
    passages = [LEAVE, EXPENSES, VPN, PARKING, BACKUP]
    scores = reranker.score("how do I work remotely from home and reach internal systems", passages)
    assert scores.index(max(scores)) == 2
    scores = reranker.score("deadline for claiming travel costs", passages)
    assert scores.index(max(scores)) == 1


def test_scores_follow_input_order_and_do_not_depend_on_the_other_passages(reranker):
    alone = [reranker.score(LEAVE_QUERY, [p])[0] for p in MIXED_LENGTHS]
    assert reranker.score(LEAVE_QUERY, MIXED_LENGTHS) == pytest.approx(alone, abs=1e-3)
    assert reranker.score(LEAVE_QUERY, MIXED_LENGTHS[::-1]) == pytest.approx(alone[::-1], abs=1e-3)


def test_batched_pairs_are_padded_behind_the_attention_mask(reranker):
    alone = [reranker.score(LEAVE_QUERY, [p])[0] for p in MIXED_LENGTHS]
    # batch_size=2: the length sort crosses batch boundaries and the order must still be restored.
    # Not 1e-3: the int8 graph quantizes each activation tensor with one scale for the whole batch, so
    # batch-mates move a score a little (< 0.25 here); unmasked padding moves scores by up to ~5.
    for batch_size in (2, 32):
        batched = CrossEncoderReranker(batch_size=batch_size, threads=2).score(LEAVE_QUERY, MIXED_LENGTHS)
        assert batched == pytest.approx(alone, abs=0.5)


def test_a_passage_beyond_max_length_is_truncated_and_the_query_still_counts(reranker):
    long = LEAVE + " " + " ".join([EXPENSES, VPN, PARKING, BACKUP] * 20)
    assert len(long.split()) > 4 * reranker.max_length
    related = reranker.score(LEAVE_QUERY, [long])[0]
    unrelated = reranker.score("what is the boiling point of mercury", [long])[0]
    assert related > unrelated + 3
    # a query longer than max_length is cut too, rather than failing
    assert len(reranker.score(" ".join([LEAVE_QUERY] * 60), [long, LEAVE])) == 2


def test_no_passages_no_scores(reranker):
    assert reranker.score(LEAVE_QUERY, []) == []


def test_a_missing_directory_is_named(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(RerankerNotFound, match="no-such-model") as raised:
        CrossEncoderReranker(missing)
    assert "ASSISTANT_RERANKER" in str(raised.value)


def test_a_directory_without_model_onnx_is_named(tmp_path):
    shutil.copy(bundled_reranker_path() / "tokenizer.json", tmp_path / "tokenizer.json")
    with pytest.raises(RerankerNotFound, match="model.onnx") as raised:
        CrossEncoderReranker(tmp_path)
    assert str(tmp_path) in str(raised.value)


def test_a_broken_onnx_file_is_named(tmp_path):
    shutil.copy(bundled_reranker_path() / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "model.onnx").write_bytes(b"not an onnx graph")
    with pytest.raises(RerankerNotFound, match="model.onnx") as raised:
        CrossEncoderReranker(tmp_path)
    assert str(tmp_path) in str(raised.value)
