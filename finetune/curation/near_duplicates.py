"""Near-duplicate documents: MinHash signatures of word shingles, candidates from LSH, checked by their estimate.

datasketch (MIT) rather than our own hashing: its LSH banding is tuned to the threshold, and its MinHash is the
standard one (the same method as the dedup of public pre-training sets), so a threshold means what it means there.
"""

from __future__ import annotations

from collections.abc import Sequence

from datasketch import MinHash, MinHashLSH

from .text_units import words

PERMUTATIONS = 128


def signature(text: str, shingle: int) -> MinHash:
    tokens = words(text)
    grams = {" ".join(tokens[i : i + shingle]) for i in range(max(1, len(tokens) - shingle + 1))}
    minhash = MinHash(num_perm=PERMUTATIONS)
    minhash.update_batch([gram.encode() for gram in grams])
    return minhash


def clusters(
    texts: Sequence[str], threshold: float, signatures: list[MinHash] | None = None, shingle: int = 5
) -> tuple[list[list[int]], list[MinHash]]:
    """Groups of two or more texts whose estimated Jaccard similarity reaches `threshold`, linked transitively, and
    every text's signature (to say how alike two members are, or to cluster again at another threshold)."""
    signatures = signatures or [signature(text, shingle) for text in texts]
    lsh = MinHashLSH(threshold=threshold, num_perm=PERMUTATIONS)
    parent = list(range(len(texts)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for index, minhash in enumerate(signatures):
        for other in lsh.query(minhash):
            # LSH only proposes: a pair joins when its own estimate reaches the threshold.
            if signatures[other].jaccard(minhash) >= threshold:
                parent[root(index)] = root(other)
        lsh.insert(index, minhash)
    groups: dict[int, list[int]] = {}
    for index in range(len(texts)):
        groups.setdefault(root(index), []).append(index)
    return [members for members in groups.values() if len(members) > 1], signatures
