"""The scale benchmark's corpus: the same text for a seed everywhere, shaped like real text.

Its cached stores are keyed by seed and corpus version only, so a generator that changed
its output without a version bump would compare today's figures with another corpus's.
"""

from __future__ import annotations

from tests.benchmarks import scale_corpus as corpus


def test_same_seed_same_text_and_prefixes_agree() -> None:
    first = corpus.memories(300, seed=7)
    assert first == corpus.memories(300, seed=7)
    assert corpus.memories(100, seed=7) == first[:100]  # a smaller store is a prefix
    assert corpus.memories(300, seed=8) != first
    assert corpus.queries(20, 4, seed=7) == corpus.queries(20, 4, seed=7)
    assert corpus.new_texts(10, seed=7) != corpus.memories(10, seed=7)


def test_common_words_are_in_most_rows_and_rare_ones_in_few() -> None:
    rows = corpus.memories(2000, seed=1)
    assert corpus.rows_containing(rows, "the") > 0.85
    assert corpus.rows_containing(rows, "user") > 0.6
    rare = corpus.vocabulary()[5000]
    assert corpus.rows_containing(rows, rare) < 0.01
    assert corpus.probability("the") > 20 * corpus.probability(corpus.vocabulary()[50])


def test_memories_are_ten_to_sixty_words_and_queries_have_their_word_count() -> None:
    lengths = [len(text.split()) for text in corpus.memories(1000, seed=3)]
    assert min(lengths) >= corpus.MIN_WORDS
    assert max(lengths) <= corpus.MAX_WORDS
    assert max(lengths) - min(lengths) > 40  # the whole range is used, not one length
    one = corpus.queries(50, 1, seed=3)
    assert one[:2] == ["the", "user"]
    assert all(len(q.split()) == 1 for q in one)
    four = corpus.queries(50, 4, seed=3)
    assert all(len(set(q.split())) == 4 for q in four)
    assert sorted({len(q.split()) for q in corpus.mixed_queries(40, seed=3)}) == [1, 2, 3, 4]
