"""BM25 statistics per access scope (issue 16).

With the collection's statistics, a staff member's lexical scores moved with the words of hr-only documents: by
searching for a name or a deal code and watching the scores, anyone could learn whether a restricted document
mentions it. Each search now counts N and every term's document frequency over what its reader may read, on both
store engines, so two stores that differ only in documents a reader cannot read answer that reader identically.
"""

import math

import pytest
from llama_index.core.schema import TextNode
from qdrant_client import QdrantClient, models

import retrieval.store
from retrieval import ChunkStore, RetrievalSettings
from retrieval.points import QueryVectors, SearchPlan
from retrieval.sparse import Bm25Encoder
from retrieval.store import DocumentRecord, chunk_point_id

BM25 = Bm25Encoder()
STAFF = ("staff",)
ADMIN = ("admin",)
# "kestrel" is the rare word a curious staff member probes for; the other two words give the query some spread.
QUERY = "kestrel merger timeline"
DENSE_QUERY = [0.3, 0.6, 0.2, 0.1]
READABLE = {
    # doc id: (groups, text, a 4-d "dense vector" standing in for the embedder's)
    "plan": (("staff",), "The kestrel project timeline moves to the spring.", [1, 0, 0, 0]),
    "birds": (("staff",), "A kestrel hovers over the field before it dives for a mouse.", [0, 1, 0, 0]),
    "merger": (("staff",), "The merger committee meets every month to review the timeline.", [0, 0, 1, 0]),
    "canteen": (("staff", "hr"), "The canteen serves lunch from noon until two.", [0, 0, 0, 1]),
}
# hr only: the probed word many times, and other words besides, so it would move every statistic it touches.
SECRET = (
    "acquisition",
    ("hr",),
    (
        "Kestrel: the kestrel acquisition (code name kestrel) closes in March. Kestrel salaries, the kestrel merger "
        "timeline and the kestrel board are confidential."
    ),
    [0.5, 0.5, 0, 0],
)


@pytest.fixture(params=["edge", "client"])
def make_store(request, tmp_path):
    """Opens a fresh store on the engine under test, holding the readable documents and, if asked, the secret one."""
    opened = []

    def make(name: str, secret: bool) -> ChunkStore:
        path = str(tmp_path / name) if request.param == "edge" else ":memory:"
        store = ChunkStore(RetrievalSettings(qdrant_path=path), 4)
        opened.append(store)
        for doc_id, (groups, text, vector) in READABLE.items():
            put(store, doc_id, groups, text, vector)
        if secret:
            put(store, *SECRET)
        return store

    yield make
    for store in opened:
        store.close()


def put(store, doc_id, groups, text, vector):
    node = TextNode(
        id_=chunk_point_id(doc_id, 0),
        text=text,
        metadata={"doc_id": doc_id, "groups": list(groups), "chunk": 0, "content_hash": "h1"},
        embedding=[float(v) for v in vector],
    )
    store.upsert_chunks([node], BM25.documents([text]))
    store.put_document(DocumentRecord(doc_id, f"/docs/{doc_id}.md", "h1", tuple(groups), 1, 1, "t", "t"))


def scored(store, groups, mode):
    """(doc id, score) in rank order."""
    store.plan = SearchPlan(mode, store.plan.candidates, store.plan.fusion)
    hits = store.search(QueryVectors(dense=DENSE_QUERY, sparse=BM25.query(QUERY)), groups, k=10)
    return [(hit.node.metadata["doc_id"], hit.score) for hit in hits]


@pytest.mark.parametrize("mode", ["sparse", "hybrid"])
def test_a_document_the_reader_cannot_read_changes_neither_their_results_nor_their_scores(make_store, mode):
    without = scored(make_store("without", secret=False), STAFF, mode)
    with_secret = scored(make_store("with", secret=True), STAFF, mode)
    assert {doc for doc, _ in without} >= {"plan", "birds", "merger"}
    assert with_secret == without  # same order, same scores to the last bit


def test_an_admin_who_can_read_it_scores_with_it(make_store):
    # The statistics are per scope, not switched off: a reader of the hr document counts it.
    without = dict(scored(make_store("without", secret=False), ADMIN, "sparse"))
    with_secret = dict(scored(make_store("with", secret=True), ADMIN, "sparse"))
    assert "acquisition" in with_secret
    for doc in ("plan", "birds", "merger"):
        assert with_secret[doc] != pytest.approx(without[doc], rel=1e-3)


@pytest.mark.parametrize("groups", [STAFF, ADMIN, ("hr",)])
def test_scores_are_bm25_with_the_readers_own_n_and_document_frequencies(make_store, groups):
    store = make_store("with", secret=True)
    texts = {doc: text for doc, (_, text, _) in READABLE.items()} | {SECRET[0]: SECRET[2]}
    readers = {doc: g for doc, (g, _, _) in READABLE.items()} | {SECRET[0]: SECRET[1]}
    readable = [doc for doc in texts if "admin" in groups or set(readers[doc]) & set(groups)]
    vectors = dict(zip(texts, BM25.documents(list(texts.values())), strict=True))
    weights = {doc: dict(zip(v.indices, v.values, strict=True)) for doc, v in vectors.items()}
    query = BM25.query(QUERY)
    n = len(readable)  # every chunk here has terms, so all of them carry a sparse vector
    expected = {}
    for doc in readable:
        score = 0.0
        for term, q in zip(query.indices, query.values, strict=True):
            df = sum(term in weights[other] for other in readable)
            idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
            score += q * idf * weights[doc].get(term, 0.0)
        if score > 0:
            expected[doc] = score
    got = dict(scored(store, groups, "sparse"))
    assert got == pytest.approx(expected, rel=1e-5)


def test_a_deleted_document_leaves_every_scope_at_once(make_store):
    # The engines' whole-collection statistics go on counting deleted points until a segment is rebuilt; the
    # scoped ones count live points, admins' included.
    store = make_store("deleted", secret=True)
    store.delete_document(store.get_document(SECRET[0]))
    never = make_store("never", secret=False)
    for groups in (STAFF, ADMIN):
        assert scored(store, groups, "sparse") == scored(never, groups, "sparse")


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
def test_a_server_too_old_to_scope_the_statistics_is_refused_for_lexical_search(monkeypatch):
    def server_of(version: str) -> QdrantClient:
        server = QdrantClient(location=":memory:")
        monkeypatch.setattr(server, "info", lambda: models.VersionInfo(title="qdrant", version=version))
        monkeypatch.setattr(retrieval.store, "QdrantClient", lambda **_: server)
        return server

    url = "http://qdrant.internal:6333"
    created = []
    for mode in ("sparse", "hybrid"):
        server = server_of("1.18.2")
        monkeypatch.setattr(server, "create_collection", lambda name, **_: created.append(name))
        with pytest.raises(ValueError, match=r"version '1\.18\.2'.*1\.19 or later.*ASSISTANT_SEARCH_MODE=dense"):
            ChunkStore(RetrievalSettings(qdrant_url=url, search_mode=mode), 4)
    assert created == []  # refused before anything was made on that server
    server_of("1.18.2")
    ChunkStore(RetrievalSettings(qdrant_url=url, search_mode="dense"), 4).close()  # no BM25, nothing to leak
    server_of("1.19.0")
    ChunkStore(RetrievalSettings(qdrant_url=url), 4).close()
