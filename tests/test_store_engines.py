"""The store's contract on both engines it runs on: qdrant-edge (embedded, on disk) and qdrant-client (a server;
here its in-memory local mode, which runs the same client calls)."""

import pytest
from llama_index.core.schema import TextNode

from retrieval import ChunkStore, RetrievalSettings, StoreLockedError
from retrieval.points import QueryVectors
from retrieval.sparse import Bm25Encoder
from retrieval.store import DocumentRecord, StoreNotFound, chunk_point_id

BM25 = Bm25Encoder()
TEXTS = {
    # doc id: (groups, text, a 4-d "dense vector" standing in for the embedder's)
    "finance": (("finance",), "Invoices above 10,000 euros need the approval of two directors.", [1, 0, 0, 0]),
    "lab": (("research",), "Zirconium crucibles are stored in the locked cabinet of room B12.", [0, 1, 0, 0]),
    "canteen": (("staff", "research"), "The canteen serves lunch from noon until two.", [0, 0, 1, 0]),
}


@pytest.fixture(params=["edge", "client"])
def store_settings(request, tmp_path):
    path = str(tmp_path / "qdrant") if request.param == "edge" else ":memory:"
    return lambda **extra: RetrievalSettings(qdrant_path=path, **extra)


@pytest.fixture
def store(store_settings):
    opened = ChunkStore(store_settings(), 4)
    for doc_id, (groups, text, vector) in TEXTS.items():
        put(opened, doc_id, groups, text, vector)
    yield opened
    opened.close()


def put(store, doc_id, groups, text, vector, content_hash="h1"):
    node = TextNode(
        id_=chunk_point_id(doc_id, 0),
        text=text,
        metadata={"doc_id": doc_id, "groups": list(groups), "chunk": 0, "content_hash": content_hash},
        embedding=[float(v) for v in vector],
    )
    store.upsert_chunks([node], BM25.documents([text]))
    store.put_document(DocumentRecord(doc_id, f"/docs/{doc_id}.md", content_hash, tuple(groups), 1, 1, "t", "t"))


def found(store, query, groups, mode, vector=(0.5, 0.5, 0.5, 0.5)):
    store.plan = type(store.plan)(mode, store.plan.candidates, store.plan.fusion)
    hits = store.search(QueryVectors(dense=list(vector), sparse=BM25.query(query)), groups, k=10)
    return [hit.node.metadata["doc_id"] for hit in hits]


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_every_search_mode_keeps_to_the_readers_groups(store, mode):
    query = "zirconium crucibles canteen lunch invoices approval"
    assert set(found(store, query, ["research"], mode)) == {"lab", "canteen"}
    assert set(found(store, query, ["finance"], mode)) == {"finance"}
    assert found(store, query, [], mode) == []
    assert set(found(store, query, ["admin"], mode)) == set(TEXTS)


def test_sparse_search_ranks_by_words_and_hybrid_fuses_both_branches(store):
    # The dense vector points at the canteen; the words at the lab.
    assert found(store, "where are the zirconium crucibles", ["admin"], "sparse") == ["lab"]
    assert found(store, "where are the zirconium crucibles", ["admin"], "dense", vector=(0, 0, 1, 0))[0] == "canteen"
    hybrid = found(store, "where are the zirconium crucibles", ["admin"], "hybrid", vector=(0, 0, 1, 0))
    assert set(hybrid[:2]) == {"lab", "canteen"}


def test_a_query_of_stop_words_finds_nothing_lexically_and_hybrid_falls_back_to_dense(store):
    assert found(store, "the of and", ["admin"], "sparse") == []
    assert found(store, "the of and", ["admin"], "hybrid", vector=(1, 0, 0, 0))[0] == "finance"


@pytest.mark.parametrize("mode", ["sparse", "hybrid"])
def test_both_engines_score_the_same_contents_alike(tmp_path, mode):
    # BM25's statistics are counted per reader (the access scope) inside each engine: the embedded one in Rust,
    # the client's local mode in Python; a server runs the embedded one's code. Same contents, same scores.
    query = QueryVectors(dense=[0.4, 0.3, 0.2, 0.1], sparse=BM25.query("zirconium crucibles canteen lunch invoices"))
    scores = []
    for path in (str(tmp_path / "qdrant"), ":memory:"):
        opened = ChunkStore(RetrievalSettings(qdrant_path=path, search_mode=mode), 4)
        for doc_id, (groups, text, vector) in TEXTS.items():
            put(opened, doc_id, groups, text, vector)
        scores.append(
            {
                groups: {hit.node.metadata["doc_id"]: hit.score for hit in opened.search(query, [groups], k=10)}
                for groups in ("research", "staff", "finance", "admin")
            }
        )
        opened.close()
    edge, client = scores
    assert set(edge["admin"]) == set(TEXTS)
    for groups, found in edge.items():
        assert found == pytest.approx(client[groups], rel=1e-5), groups


def test_groups_changes_deletions_and_stale_chunks_reach_both_branches(store):
    lab = store.get_document("lab")
    store.set_groups(lab, ("finance",))
    assert "lab" in found(store, "zirconium", ["finance"], "sparse")
    assert "lab" not in found(store, "zirconium", ["research"], "hybrid")
    assert store.get_document("lab").groups == ("finance",)

    store.delete_document(store.get_document("canteen"))
    assert "canteen" not in found(store, "canteen lunch", ["admin"], "hybrid")
    assert store.get_document("canteen") is None

    store.remove_stale_chunks("finance", "h2")  # a newer version was written: the old chunks go
    assert "finance" not in found(store, "invoices", ["admin"], "hybrid")
    assert store.count_chunks() == 1
    assert [n.metadata["doc_id"] for n in store.scroll_chunks()[0]] == ["lab"]
    assert [r.doc_id for r in store.list_documents(["research"])] == []
    assert {r.doc_id for r in store.all_documents()} == {"finance", "lab"}


def test_the_embedded_store_persists_locks_and_checks_its_dimension(tmp_path):
    settings = RetrievalSettings(qdrant_path=str(tmp_path / "qdrant"))
    store = ChunkStore(settings, 4)
    put(store, "lab", ("research",), TEXTS["lab"][1], TEXTS["lab"][2])
    with pytest.raises(StoreLockedError, match="one process at a time"):
        ChunkStore(settings, 4)
    store.close()

    with pytest.raises(ValueError, match="holds 4-d vectors but the embedding model makes 8-d"):
        ChunkStore(settings, 8)
    reopened = ChunkStore(settings, None)  # as a reader that makes no vectors opens it
    assert found(reopened, "zirconium", ["research"], "hybrid") == ["lab"]
    reopened.close()


def test_missing_and_outdated_embedded_stores_say_what_to_do(tmp_path):
    with pytest.raises(StoreNotFound):
        ChunkStore(RetrievalSettings(qdrant_path=str(tmp_path / "none")), None)
    old = tmp_path / "old"
    old.mkdir()
    (old / "meta.json").write_text('{"collections": {}}')  # qdrant-client's local-mode layout
    with pytest.raises(ValueError, match="earlier embedded format.*ingest the documents again"):
        ChunkStore(RetrievalSettings(qdrant_path=str(old)), 4)


@pytest.mark.filterwarnings("ignore:Payload indexes have no effect")
def test_a_collection_without_sparse_vectors_refuses_hybrid_search_and_says_how_to_go_on(monkeypatch):
    from qdrant_client import QdrantClient, models

    import retrieval.store

    # A server holding a collection made before sparse vectors existed: dense only.
    server = QdrantClient(location=":memory:")
    server.create_collection(
        "documents", vectors_config={"dense": models.VectorParams(size=4, distance=models.Distance.COSINE)}
    )
    monkeypatch.setattr(retrieval.store, "QdrantClient", lambda **_: server)
    with pytest.raises(ValueError, match="built without sparse vectors.*ASSISTANT_SEARCH_MODE=dense"):
        ChunkStore(RetrievalSettings(qdrant_url="http://qdrant.internal:6333"), 4)
    server = QdrantClient(location=":memory:")
    server.create_collection(
        "documents", vectors_config={"dense": models.VectorParams(size=4, distance=models.Distance.COSINE)}
    )
    dense_only = ChunkStore(RetrievalSettings(qdrant_url="http://qdrant.internal:6333", search_mode="dense"), 4)
    assert dense_only.count_chunks() == 0
    dense_only.close()
