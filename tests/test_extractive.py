from assistant import extractive
from assistant.types import Source


def question(text, embedder):
    return embedder.embed_query(text)  # as the Assistant embeds it


def source(text, n=0):
    return Source(doc_id=f"d{n}", path=f"/docs/{n}.md", page=None, chunk=0, score=0.5, text=text)


def test_the_answer_is_made_of_the_sources_own_sentences_with_markers(embedder):
    sources = [
        source("The cafeteria serves lunch from noon. Parking is free for staff with a permit.", 1),
        source("Employees receive 27 days of annual leave each year. Leave requests go to the line manager.", 2),
    ]

    text = extractive.compose(question("How many days of annual leave do I get?", embedder), sources, embedder.embed)

    lines = text.splitlines()
    assert lines[0] == extractive.LABEL
    assert lines[2] == "- Employees receive 27 days of annual leave each year. [2]"
    for line in lines[2:]:
        body, marker = line[2:].rsplit(" [", 1)
        assert body in sources[int(marker.rstrip("]")) - 1].text


def test_nothing_relevant_means_no_answer_rather_than_invented_text(embedder):
    assert extractive.compose(question("annual leave", embedder), [], embedder.embed) == extractive.NO_ANSWER
    unrelated = [source("Quarterly revenue rose in the northern sales region by a wide margin.")]
    swallow = question("What is the airspeed of a swallow?", embedder)
    cut = embedder.answer_similarity
    assert extractive.compose(swallow, unrelated, embedder.embed, min_similarity=cut) == extractive.NO_ANSWER


def test_sentences_split_lines_bullets_and_sentence_ends():
    text = "# Leave\n- Staff get 27 days of leave. Unused days expire in March.\n1. Ask your manager first please."
    assert extractive.sentences(text) == [
        "Staff get 27 days of leave.",
        "Unused days expire in March.",
        "Ask your manager first please.",
    ]
