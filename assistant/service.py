"""The Assistant: the one object the CLI, the portal and the HTTP API talk to."""

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

import numpy as np
from llama_index.core.schema import NodeWithScore
from qdrant_client.http.exceptions import ApiException

from assistant import extractive, follow_ups, policy, runs
from assistant.audit import AuditLog
from assistant.conversations import TITLE_CHARS, Conversation, ConversationStore, StoredTurn
from assistant.errors import InvalidRequest, NotFound, NotPermitted
from assistant.evaluation.questions import Problem, QuestionFileError, read_questions
from assistant.evaluation.records import LATEST, EvaluationRun, RunNotFound, RunStore, new_run_id
from assistant.evaluation.scoring import score
from assistant.originals import Original, OriginalMissing, read_original, render_page
from assistant.policy import AdapterNotPermitted
from assistant.settings import Settings
from assistant.types import Answer, DocumentInfo, Health, Source, UploadResult, User
from assistant.uploads import UPLOADS_DIR, Upload, folder_size, outcome_rows, save_uploads, user_folder
from assistant.version import installed_version
from model.generators import Generator, GeneratorError
from model.generators import build as build_generator
from model.prompt import Passage, Turn, build_prompt, passage_header, rewrite_prompt
from model.run_layout import ADAPTER_CONFIG, ADAPTER_DIR
from retrieval import ChunkStore, DocumentRecord, EmbedderMismatch, Ingestor, IngestReport, validate_groups
from retrieval.access import ADMIN_GROUP
from retrieval.embedding import LocalEmbedding
from retrieval.ingest import document_id
from retrieval.search import Searcher
from retrieval.store import chunk_point_id

EXTRACTIVE_MODEL = "extractive"
HEALTH_TIMEOUT_S = 2.0  # a health page must answer quickly, even when the model server does not
# What one person may type: a question with room to quote a paragraph, a comment of a few sentences. Longer text is
# refused, not cut: it would be searched, sent to the model and kept in the audit log at whatever size was sent.
MAX_QUESTION_CHARS = 8_000
MAX_COMMENT_CHARS = 2_000
MAX_ANSWER_CHARS = 50_000  # an answer handed back with feedback: the model's own text, bounded by its token budget


class Assistant:
    """Ingest, search, ask, delete and upload, each with the policy checked and the act audited.

    Built from its parts by `assistant.assembly.build_assistant`, which is what callers use."""

    def __init__(
        self,
        settings: Settings,
        *,
        embedder: LocalEmbedding,
        store: ChunkStore,
        ingestor: Ingestor,
        searcher: Searcher,
        audit: AuditLog,
        conversations: ConversationStore,
        evaluations: RunStore,
    ):
        self.settings = settings
        self.embedder = embedder  # may be shared (tests, one portal process with several stores)
        self.store = store
        self.ingestor = ingestor
        self.searcher = searcher
        self.audit = audit
        self._conversations = conversations
        self.evaluations = evaluations
        # Built on first use: loading a model takes seconds to minutes, and a command that only ingests needs none.
        self._generator: Generator | None = None
        self._generator_lock = threading.Lock()

    def close(self) -> None:
        close_generator = getattr(self._generator, "close", None)
        if close_generator is not None:
            close_generator()
        self.store.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- documents -------------------------------------------------------------------------

    def ingest(
        self,
        paths: Iterable[str | Path],
        groups: Iterable[str] = (),
        prune: bool = False,
        progress: bool = False,
        *,
        user: User | None = None,
    ) -> IngestReport:
        """Adds or updates files and folders for `groups`.

        With `user` (someone acting through the portal or the API) the policy applies: they share only with their own
        groups, and name only files in their upload folder (administrators also the paths the store holds); what
        they did is audited. Without one it is the operator's own process (assistant.policy says why that is allowed).
        """
        if user is not None:
            self.audit.check()
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        groups = validate_groups(groups)  # once, here: a generator of names would be spent before the audit
        if user is not None:
            policy.check_share(user, groups)
            policy.check_ingest_paths(user, [Path(p) for p in paths], self.upload_folder(user), self._is_stored)
        report = self.ingestor.ingest(paths, groups=groups, prune=prune, progress=progress)
        if user is not None:
            self.audit.record(
                "ingest",
                user.id,
                **_display_name(user),
                paths=[str(path) for path in paths],
                groups=list(groups),
                prune=prune,
                **{name: len(getattr(report, name)) for name in _REPORT_LISTS},
                chunks=report.chunks,
                redacted=dict(report.redacted),
            )
        return report

    def reembed(self, progress: bool = False) -> int:
        """The operator's re-embedding of every stored chunk after a change of embedding model (Ingestor.reembed);
        nobody acting through the portal or the API can start it. Returns the chunks re-embedded."""
        return self.ingestor.reembed(progress=progress)

    def upload(self, files: Sequence[Upload], groups: Iterable[str], user: User) -> UploadResult:
        """Saves uploaded files in `user`'s folder and indexes them for `groups`: the portal's and the API's upload.

        Refused whole when the groups are not the user's to share with; file by file when a file is over the size
        limit or the user's quota. A file that is not indexed (unreadable, or no document) is removed again, so the
        folder holds only what the store holds, and only that counts against the quota. Each file is named by its
        file name alone.
        """
        self.audit.check()
        groups = validate_groups(groups)
        policy.check_share(user, groups)
        folder = self.upload_folder(user)
        quota = int(self.settings.upload_quota_mb * _MB)
        saved = save_uploads(list(files), folder, self.settings.upload_max_mb, room=quota - folder_size(folder))
        report = self.ingest(saved.paths, groups=groups, user=user) if saved.paths else None
        if report is not None:
            for failure in [*report.failed, *report.skipped]:
                Path(failure.path).unlink(missing_ok=True)
        return UploadResult(outcome_rows(saved, report), report)

    def upload_folder(self, user: User) -> Path:
        """Where `user`'s uploads are kept, keyed by who they are (user.id), never by a display name."""
        return user_folder(self.settings.data_dir, user.id)

    def _is_stored(self, path: Path) -> bool:
        return self.store.get_document(document_id(path.expanduser())) is not None

    def documents(self, user: User) -> list[DocumentInfo]:
        return [_to_info(record) for record in self.store.list_documents(user.groups)]

    def delete(self, path_or_doc_id: str | Path, *, user: User | None = None) -> DocumentInfo:
        """Removes a document and all its chunks, named by its id or by its path (administrators only); audited.

        An uploaded document's file goes too, so a deleted upload cannot come back with the next re-index and no
        longer counts against its owner's quota. The operator's own files elsewhere are never touched.
        """
        if user is not None:
            policy.check_delete(user)
            self.audit.check()
        key = str(path_or_doc_id)
        record = self.store.get_document(key) or self.store.get_document(document_id(Path(key).expanduser()))
        if record is None:
            raise NotFound(
                "no document with that id or path: the documents page (or `assistant documents`) lists them",
                detail=f"no document with id or path {key!r}: `assistant documents` lists them",
            )
        self.store.delete_document(record)
        uploads = (self.settings.data_dir / UPLOADS_DIR).resolve()
        if Path(record.path).resolve().is_relative_to(uploads):
            Path(record.path).unlink(missing_ok=True)
        info = _to_info(record)
        if user is not None:
            self.audit.record(
                "delete", user.id, **_display_name(user), paths=[info.path], doc_id=info.doc_id, chunks=info.chunks
            )
        return info

    # --- questions -------------------------------------------------------------------------

    def search(self, query: str, user: User, k: int = 10) -> list[Source]:
        """The k passages `user` may read that best match `query`; who searched and what they were shown is audited."""
        _require_text(query, "query", MAX_QUESTION_CHARS)
        self.audit.check()
        started = time.perf_counter()
        sources = [_to_source(hit) for hit in self.searcher.search(query, user.groups, k)]
        self.audit.record(
            "search",
            user.id,
            **_display_name(user),
            texts={"question": query},
            groups=list(user.groups),
            **_shown(sources),
            seconds=round(time.perf_counter() - started, 3),
        )
        return sources

    def original(self, doc_id: str, user: User) -> Original:
        """The file a document was ingested from, for a user who may read it; audited as a download."""
        self.audit.check()
        record = self._openable(doc_id, user)
        try:
            original = read_original(Path(record.path))
        except OriginalMissing as error:
            raise _moved(record, error) from error
        self._record_opening("download", user, record)
        return original

    def page_image(self, doc_id: str, page: int, user: User, chunk: int | None = None) -> bytes:
        """Page `page` of a PDF as a PNG, with passage `chunk` of it marked; audited as an opening."""
        self.audit.check()
        record = self._openable(doc_id, user)
        if Path(record.path).suffix.lower() != ".pdf":
            raise InvalidRequest("only a PDF has pages to show: open the passage in its section, or download the file")
        # The document's access was checked just above: its own chunks need no second check.
        passage = self.store.get_chunk(chunk_point_id(doc_id, chunk)) if chunk is not None else None
        try:
            image = render_page(Path(record.path), page, passage.text if passage else None)
        except OriginalMissing as error:
            raise _moved(record, error) from error
        except ValueError as error:  # a page the document does not have
            raise InvalidRequest(str(error)) from error
        self._record_opening("open", user, record, page=page)
        return image

    def passage_in_context(self, doc_id: str, chunk: int, user: User) -> list[Source]:
        """Passage `chunk` with the passages before and after it in its section; audited as an opening."""
        self.audit.check()
        record = self._openable(doc_id, user)
        nodes = [self.store.get_chunk(chunk_point_id(doc_id, number)) for number in (chunk - 1, chunk, chunk + 1)]
        found = [_to_source(NodeWithScore(node=node, score=1.0)) for node in nodes if node is not None]
        cited = next((source for source in found if source.chunk == chunk), None)
        if cited is None:
            raise NotFound("no such passage in that document: the sources of an answer name the passages there are")
        context = [source for source in found if source.heading == cited.heading]
        self._record_opening("open", user, record, chunk=chunk)
        return context

    def conversations(self, user: User) -> list[Conversation]:
        """The user's own conversations, the most recent first, without their turns (`conversation` has those)."""
        return [replace(c, turns=[]) for c in self._conversations.list(user.id)]

    def conversation(self, user: User, conversation_id: str) -> Conversation:
        found = self._conversations.get(user.id, conversation_id)
        if found is None:
            raise NotFound("no such conversation among yours: it may have been deleted, or kept past its retention")
        return self._readable_turns(user, found)

    def keep_turn(self, user: User, conversation_id: str | None, question: str, answer: Answer) -> Conversation:
        """Adds a question and its answer to the user's conversation, or starts one (None); returns it."""
        try:
            return self._conversations.add_turn(user.id, conversation_id, StoredTurn(question, answer.to_dict()))
        except KeyError as error:
            raise NotFound("no such conversation among yours: start a new one") from error

    def rename_conversation(self, user: User, conversation_id: str, title: str) -> Conversation:
        title = " ".join(title.split())
        if not title or len(title) > TITLE_CHARS:
            raise InvalidRequest(f"a conversation's title has 1 to {TITLE_CHARS} characters")
        try:
            return self._conversations.rename(user.id, conversation_id, title)
        except KeyError as error:
            raise NotFound("no such conversation among yours") from error

    def delete_conversation(self, user: User, conversation_id: str) -> None:
        if not self._conversations.delete(user.id, conversation_id):
            raise NotFound("no such conversation among yours: it may have been deleted already")

    def _readable_turns(self, user: User, conversation: Conversation) -> Conversation:
        """The conversation as the user may see it now: an answer that drew on a document they can no longer read
        (their groups changed, or it was deleted) is withheld, sources and all."""
        readable: dict[str, bool] = {}
        for turn in conversation.turns:
            doc_ids = {source["doc_id"] for source in turn.answer.get("sources", [])}
            for doc_id in doc_ids - readable.keys():
                readable[doc_id] = self.store.readable_document(doc_id, user.groups) is not None
            if not all(readable[doc_id] for doc_id in doc_ids):
                turn.answer = {**WITHHELD, "model": turn.answer.get("model", "")}
        return conversation

    def _record_opening(self, event: str, user: User, record: DocumentRecord, **fields) -> None:
        self.audit.record(
            event,
            user.id,
            **_display_name(user),
            groups=list(user.groups),
            doc_id=record.doc_id,
            path=record.path,
            **fields,
        )

    def _openable(self, doc_id: str, user: User) -> DocumentRecord:
        """A document the user may read and whose original may be shown; NotFound alike for one that does not
        exist and one the user may not read, so that nobody learns of a document outside their groups."""
        record = self.store.readable_document(doc_id, user.groups)
        if record is None:
            raise NotFound("no document with that id among those you may read: the documents page lists them")
        if record.redacted:
            # Its passages had personal data replaced before they were stored; the file still holds it.
            raise NotPermitted(
                "this document was stored with personal data removed, and its original still holds that data: it is "
                "not shown or handed out; ask an administrator"
            )
        return record

    def ask(self, question: str, user: User, k: int = 5, history: Sequence[Turn] = ()) -> Answer:
        *_, answer = self.stream(question, user, k, history)
        return answer

    @property
    def generator(self) -> Generator | None:
        """The configured generator, built (its model loaded) once, on first use; None for extractive answers."""
        if self.settings.generator == "extractive":
            return None
        with self._generator_lock:  # two first questions at once must not load the model twice
            if self._generator is None:
                self._generator = build_generator(self.settings)
        return self._generator

    def stream(self, question: str, user: User, k: int = 5, history: Sequence[Turn] = ()) -> Iterator[str | Answer]:
        """Yields the answer's text in pieces as it is produced, then the whole Answer.

        `history` is the conversation so far (oldest first); the last few turns make a follow-up ("and for
        part-time staff?") answerable: the previous question joins the search, and the model sees the turns.
        """
        _require_text(question, "question", MAX_QUESTION_CHARS)
        # Every answer is recorded: a log that cannot be written stops the question before any of it is shown.
        self.audit.check()
        self._check_adapter(user)
        started = time.perf_counter()
        history = tuple(history)[-FOLLOW_UP_TURNS:]
        question_vector, sources, rewrite = self._searched(question, history, user, k)
        retrieved = time.perf_counter()
        # No source the user may read means nothing to answer from: the model is not asked, so it cannot answer
        # from what it learned elsewhere (or from documents an adapter was trained on).
        generator = self.generator if sources else None
        first_piece = None
        pieces = []
        for piece in self._compose(generator, question, question_vector, sources, history):
            if generator is not None:
                first_piece = first_piece or time.perf_counter()
            pieces.append(piece)
            yield piece
        text = "".join(pieces) if generator is None else "".join(pieces).strip()
        model, adapter = (EXTRACTIVE_MODEL, None) if generator is None else (generator.name, generator.adapter)
        done = time.perf_counter()
        timings = {
            "retrieve_ms": round((retrieved - started) * 1000, 1),
            "generate_ms": round((done - retrieved) * 1000, 1),
            "total_ms": round((done - started) * 1000, 1),
        }
        if first_piece is not None:
            timings["first_token_ms"] = round((first_piece - started) * 1000, 1)
        answer = Answer(
            text=text,
            sources=sources,
            model=model,
            timings=timings,
            adapter=_adapter_label(adapter),
            search_question=rewrite,
        )
        # Recorded before the Answer is handed over: a caller may stop iterating once it has it. An audit write
        # that fails raises (AuditError) rather than let answers go unrecorded.
        self.audit.record(
            "ask",
            user.id,
            **_display_name(user),
            texts={"question": question, **({"search_question": rewrite} if rewrite else {})},
            groups=list(user.groups),
            **_shown(sources),
            model=model,
            adapter=adapter,
            seconds=round(done - started, 3),
        )
        yield answer

    def _compose(
        self,
        generator: Generator | None,
        question: str,
        question_vector: list[float],
        sources: list[Source],
        history: tuple[Turn, ...],
    ) -> Iterator[str]:
        """The answer's text in pieces: the model's, or without one the sources' own sentences that answer."""
        if generator is None:
            text = extractive.compose(
                question_vector,
                sources,
                self.embedder.embed,
                min_similarity=self.embedder.answer_similarity,
                question=question,
            )
            yield from text.splitlines(keepends=True)
            return
        passages = [Passage(passage_header(s.path, s.location), s.text) for s in sources]
        yield from generator.stream(build_prompt(question, passages, [_brief_turn(turn) for turn in history]))

    def _searched(
        self, question: str, history: tuple[Turn, ...], user: User, k: int
    ) -> tuple[list[float], list[Source], str | None]:
        """(the searched text's vector, the sources found, the model's standalone rewrite where one was searched).

        assistant/follow_ups.py says when the conversation joins the search and why.
        """
        if history and not follow_ups.refers_back(question):
            vector, sources = self._search_as(question, user, k)
            if self._something_answers(vector, sources):
                return vector, sources, None
        elif not history:
            return (*self._search_as(question, user, k), None)
        rewrite = self._rewrite(question, history)
        text = rewrite or follow_ups.joined(question, history[-1].question)
        return (*self._search_as(text, user, k), rewrite)

    def _search_as(self, text: str, user: User, k: int) -> tuple[list[float], list[Source]]:
        vector = self.embedder.embed_query(text)
        return vector, [_to_source(hit) for hit in self.searcher.search(text, user.groups, k, dense=vector)]

    def _something_answers(self, vector: list[float], sources: list[Source]) -> bool:
        """Whether a passage found scores as an answer for the embedder (the cut the extractive answer uses)."""
        passages = self.embedder.embed([source.text for source in sources[:ANSWER_CHECK_PASSAGES]])
        if not passages:
            return False
        cosines = np.asarray(passages) @ np.asarray(vector)  # unit vectors, as in the extractive answer
        return float(cosines.max()) >= self.embedder.answer_similarity

    def _rewrite(self, question: str, history: tuple[Turn, ...]) -> str | None:
        """The model's standalone version of a follow-up; None without a model, or when its reply is not one."""
        generator = self.generator
        if generator is None:
            return None
        try:
            reply = "".join(generator.stream(rewrite_prompt(question, [_brief_turn(turn) for turn in history])))
        except GeneratorError as error:
            # The question is still searched, joined to the previous one; the answer's own request will report a
            # server that is down.
            log.warning("the model could not rewrite a follow-up, searching it with the previous question: %s", error)
            return None
        return follow_ups.standalone_rewrite(reply, question)

    def feedback(self, user: User, question: str, answer: str, rating: int, comment: str = "") -> None:
        """A reader's verdict on an answer: +1 (helpful) or -1 (not), with an optional comment."""
        if isinstance(rating, bool) or rating not in (1, -1):
            raise InvalidRequest(f"a rating is +1 or -1, not {rating!r}")
        _require_length(question, "question", MAX_QUESTION_CHARS)
        _require_length(answer, "answer", MAX_ANSWER_CHARS)
        _require_length(comment, "comment", MAX_COMMENT_CHARS)
        self.audit.record(
            "feedback",
            user.id,
            **_display_name(user),
            texts={"question": question, "answer": answer, "comment": comment},
            rating=rating,
        )

    def adapter_audience(self) -> tuple[str, ...] | None:
        """The groups the adapter that writes answers may answer; None when answers come from no adapter."""
        settings = self.settings
        if settings.adapter is None or settings.generator == "extractive":
            return None
        if settings.generator == "local":
            return runs.adapter_audience(settings.adapter)
        return tuple(settings.adapter_groups) if settings.adapter_groups else (ADMIN_GROUP,)

    def _check_adapter(self, user: User) -> None:
        # Checked before any search; a refusal is audited with its detail (which adapter, trained on what).
        try:
            policy.check_adapter(user, self.adapter_audience(), str(self.settings.adapter))
        except AdapterNotPermitted as refusal:
            self.audit.record(
                "refused",
                user.id,
                **_display_name(user),
                groups=list(user.groups),
                adapter=str(self.settings.adapter),
                reason=refusal.detail,
            )
            raise

    # --- evaluation ------------------------------------------------------------------------

    def evaluate(
        self,
        data: bytes | str,
        name: str,
        by: User,
        *,
        reader: User | None = None,
        k: int = 5,
        answers: bool = True,
        progress: Callable[[int, int], None] | None = None,
    ) -> EvaluationRun:
        """Asks every question of the question file `data`, called `name` (its format: evaluation/questions.py), and
        scores what was found; administrators only. The run is kept with a snapshot of what produced it, and audited.

        Each question is asked as `reader`, or without one as a member of the groups its line names, so a run sees
        only what those readers may read. `answers`: the assistant's answer is composed too, and checked for the
        expected phrase and for a citation of an expected document.
        """
        policy.check_evaluate(by)
        if not 1 <= k <= MAX_EVALUATION_K:
            raise InvalidRequest(f"k is the number of passages scored per question, 1 to {MAX_EVALUATION_K}, not {k}")
        self.audit.check()
        data = data.encode("utf-8") if isinstance(data, str) else data  # hashed as the bytes it was read from
        try:
            questions, problems = read_questions(data, max_chars=MAX_QUESTION_CHARS)
        except QuestionFileError as error:
            raise InvalidRequest(f"{name}: {error}") from None
        if reader is None:
            # No group means no passage: such a line would score as a miss that says nothing of the search.
            unasked = [question for question in questions if not question.groups]
            problems += [
                Problem(line=q.line, reason='no groups to ask as: add "groups" to the line, or name a reader')
                for q in unasked
            ]
            questions = [question for question in questions if question.groups]
            if not questions:
                raise InvalidRequest(
                    f'{name}: no question names the groups to ask as: add "groups" to its lines, or name a reader '
                    "(a user, or groups)"
                )
        started, clock = datetime.now(UTC), time.perf_counter()
        snapshot = self._snapshot()
        audience = self.adapter_audience()  # read once: a local adapter's is a file on disk
        generator_failed = None
        results = []
        if progress is not None:
            progress(0, len(questions))
        for done, question in enumerate(questions, 1):
            asker = reader or User(EVALUATION_READER, question.groups)
            searched = time.perf_counter()
            vector, sources = self._search_as(question.question, asker, k)
            latency_ms = (time.perf_counter() - searched) * 1000
            reply, note = None, None
            if answers and generator_failed is None:
                try:
                    policy.check_adapter(asker, audience, str(self.settings.adapter))
                    generator = self.generator if sources else None
                    reply = "".join(self._compose(generator, question.question, vector, sources, ()))
                except AdapterNotPermitted as refusal:
                    note = f"not answered: {refusal.detail}"
                except GeneratorError as error:
                    # A server that is down would cost its timeout on every question: the rest are not answered.
                    generator_failed = note = (
                        f"the model failed at line {question.line}, so no later answer was checked: {error}"
                    )
            elif answers:
                note = generator_failed
            results.append(score(question, asker.groups, sources, latency_ms, reply, note))
            if progress is not None:
                progress(done, len(questions))
        run = EvaluationRun(
            id=new_run_id(started),
            started=started.isoformat(timespec="seconds"),
            seconds=round(time.perf_counter() - clock, 2),
            by=by.id,
            questions_file=name,
            questions_sha256=hashlib.sha256(data).hexdigest(),
            k=k,
            reader=_reader_words(reader),
            answers=answers,
            snapshot=snapshot,
            results=results,
            problems=sorted(problems, key=lambda problem: problem.line),
        )
        self.evaluations.save(run)
        shown = {(passage.doc_id, passage.path) for result in results for passage in result.found}
        self.audit.record(
            "evaluate",
            by.id,
            **_display_name(by),
            run=run.id,
            questions_file=name,
            questions_sha256=run.questions_sha256,
            questions=len(results),
            asked_as=run.reader,
            k=k,
            hit=run.figure("hit"),
            # Which documents the run's passages came from: the run file (under the data directory) has each one.
            sources=[{"doc_id": doc_id, "path": path} for doc_id, path in sorted(shown)],
        )
        return run

    def evaluation_runs(self, user: User) -> list[EvaluationRun]:
        """The kept evaluation runs, oldest first; administrators only."""
        policy.check_evaluate(user)
        return self.evaluations.runs()

    def evaluation_run(self, run_id: str, user: User, *, questions_file: str | None = None) -> EvaluationRun:
        """A kept run by its id, or "latest": the newest run (on `questions_file` where given); administrators only."""
        policy.check_evaluate(user)
        try:
            if run_id == LATEST:
                return self.evaluations.latest(questions_file)
            return self.evaluations.load(run_id)
        except RunNotFound as error:
            raise NotFound(str(error)) from None

    def _snapshot(self) -> dict:
        """What produces an evaluation's figures, to tell two runs' settings apart. The chunking settings are the
        current ones: a change of them reaches only the documents ingested after it."""
        s = self.settings
        documents = sorted((record.doc_id, record.content_hash) for record in self.store.all_documents())
        model = {"local": s.model_path, "openai": s.openai_model}.get(s.generator)
        return {
            "version": installed_version(),
            "embedding_model": self.embedder.model_name,
            "embedding_precision": s.embedding_precision,
            "search_mode": s.search_mode,
            "fusion": s.fusion if s.search_mode == "hybrid" else None,
            "search_candidates": s.search_candidates,
            "bm25_avg_len": s.bm25_avg_len,
            "reranker": s.reranker,
            "rerank_candidates": s.rerank_candidates if s.reranker else None,
            "rerank_weight": s.rerank_weight if s.reranker else None,
            "chunk_size": s.chunk_size,
            "chunk_overlap": s.chunk_overlap,
            "generator": s.generator,
            "model": None if model is None else str(model),
            "adapter": None if s.adapter is None else str(s.adapter),
            "documents": len(documents),
            "chunks": self.store.count_chunks(),
            # Changes when any document is added, removed or changed: two runs over the same documents share it.
            "documents_sha256": hashlib.sha256("\n".join(f"{d} {h}" for d, h in documents).encode()).hexdigest(),
        }

    # --- operations ------------------------------------------------------------------------

    def health(self) -> Health:
        """Whether the store and the generator can answer now; loads no model and waits at most a few seconds."""
        store_ok, store_message = self._store_health()
        generator_ok, generator_message = self._generator_health()
        return Health(store_ok, store_message, generator_ok, generator_message)

    def _store_health(self) -> tuple[bool, str]:
        settings = self.settings
        where = settings.qdrant_url or settings.qdrant_path
        # What a cheap count raises: a server's connection and HTTP errors, a closed or damaged embedded store, a
        # collection gone missing. The health page reports it rather than fail with it.
        try:
            chunks = self.store.count_chunks()
        except (ApiException, OSError, RuntimeError, ValueError) as exc:
            fix = "start Qdrant or check ASSISTANT_QDRANT_URL" if settings.qdrant_url else "check ASSISTANT_QDRANT_PATH"
            return False, f"the store at {where} is not reachable ({exc}): {fix}"
        try:
            self.store.require_embedder()
        except EmbedderMismatch as mismatch:
            return False, str(mismatch)
        return True, f"the store at {where} holds {chunks} chunks"

    def _generator_health(self) -> tuple[bool, str]:
        settings = self.settings
        if settings.generator == "extractive":
            return True, "extractive answers (the sources' own sentences): no model needed"
        if settings.generator == "local":
            if not settings.model_path.is_dir():
                return False, f"the model directory {settings.model_path} does not exist: check ASSISTANT_MODEL_PATH"
            if settings.gguf_file is not None and not (settings.model_path / settings.gguf_file).is_file():
                return False, (
                    f"{settings.model_path} holds no {settings.gguf_file}: check ASSISTANT_GGUF_FILE and "
                    "ASSISTANT_MODEL_PATH"
                )
            if settings.adapter is not None and not (settings.adapter / ADAPTER_CONFIG).is_file():
                return False, f"the adapter {settings.adapter} is not an adapter directory: check ASSISTANT_ADAPTER"
            return True, f"local model at {settings.model_path} (loaded on the first question)"
        return _openai_health(settings)

    # --- adapters --------------------------------------------------------------------------

    def adapters(self) -> list[Path]:
        """The adapters fine-tuning runs under runs_dir produced, one directory each."""
        return runs.adapters(self.settings.runs_dir)

    def use_adapter(self, adapter: Path | None) -> None:
        """Answers from now on use `adapter` (None: the base model); the model is loaded again on the next answer."""
        if self.settings.generator != "local":
            raise ValueError(
                f"adapters are switched here only for the in-process model; the {self.settings.generator!r} generator "
                "names its adapter in ASSISTANT_ADAPTER (the name the model server serves it under)"
            )
        if adapter is not None:
            adapter = Path(adapter).expanduser()
            if not adapter.is_dir():
                raise ValueError(f"{adapter} is not a directory: choose an adapter directory (a run's adapter/)")
            if not (adapter / ADAPTER_CONFIG).is_file():
                raise ValueError(
                    f"{adapter} holds no {ADAPTER_CONFIG}, so it is not a PEFT adapter: choose a finished run's "
                    "adapter/ directory"
                )
        with self._generator_lock:  # not while another thread is building the generator from the old setting
            self.settings.adapter = adapter
            previous, self._generator = self._generator, None
            close_previous = getattr(previous, "close", None)
            if close_previous is not None:
                close_previous()


log = logging.getLogger(__name__)
_MB = 1024 * 1024
_REPORT_LISTS = ("added", "updated", "unchanged", "removed", "failed", "skipped")
# How much of a conversation a follow-up carries: enough for "and for part-timers?", little enough that an old topic
# does not steer the search or fill the model's context.
FOLLOW_UP_TURNS = 3
TURN_ANSWER_CHARS = 1000


# How many of a standalone search's passages are checked for one that answers (each is embedded again).
ANSWER_CHECK_PASSAGES = 3
# Who an evaluation's questions are asked as when the run names nobody: the groups come from each question's line.
EVALUATION_READER = "evaluation"
MAX_EVALUATION_K = 100


def _brief_turn(turn: Turn) -> Turn:
    answer = turn.answer if len(turn.answer) <= TURN_ANSWER_CHARS else turn.answer[:TURN_ANSWER_CHARS] + " ..."
    return Turn(turn.question, answer)


def _openai_health(settings: Settings) -> tuple[bool, str]:
    import httpx  # only this generator needs it

    url = f"{settings.openai_base_url.rstrip('/')}/models"
    headers = {}
    if settings.openai_api_key is not None:
        headers["Authorization"] = f"Bearer {settings.openai_api_key.get_secret_value()}"
    try:
        # Only the configured host: proxy variables are ignored and a redirect is reported, not followed, as the
        # generator itself does (model/generators/openai_server.py).
        response = httpx.get(url, headers=headers, timeout=HEALTH_TIMEOUT_S, follow_redirects=False, trust_env=False)
    except httpx.HTTPError as exc:
        return False, (
            f"no answer from the model server at {url} within {HEALTH_TIMEOUT_S:.0f} s ({exc}): start it, or check "
            "ASSISTANT_OPENAI_BASE_URL"
        )
    if response.status_code in (401, 403):
        return (
            False,
            f"the model server at {url} refused the key ({response.status_code}): check ASSISTANT_OPENAI_API_KEY",
        )
    if response.is_redirect:
        return False, (
            f"the model server at {url} redirected to {response.headers.get('location')!r}, and redirects are not "
            "followed (the documents go only to the configured host): set ASSISTANT_OPENAI_BASE_URL to the final URL"
        )
    if not response.is_success:
        return False, f"the model server at {url} answered {response.status_code}: check its logs"
    return True, f"the model server at {settings.openai_base_url} answers (model {settings.openai_model})"


def _shown(sources: list[Source]) -> dict:
    """What an audit record keeps of the passages shown: each chunk's point id, and its document for people."""
    return {
        "chunks": [chunk_point_id(s.doc_id, s.chunk) for s in sources],
        "sources": [{"doc_id": s.doc_id, "path": s.path, "page": s.page, "heading": s.heading} for s in sources],
    }


def _to_info(record: DocumentRecord) -> DocumentInfo:
    return DocumentInfo(
        record.doc_id,
        record.path,
        record.groups,
        record.chunks,
        record.size,
        record.modified,
        record.ingested_at,
        title=record.title,
        period=record.period,
    )


def _to_source(hit: NodeWithScore) -> Source:
    meta = hit.node.metadata
    return Source(
        doc_id=meta["doc_id"],
        path=meta["path"],
        page=meta.get("page"),
        chunk=meta["chunk"],
        score=float(hit.score),
        text=hit.node.text,
        heading=meta.get("heading"),
        title=meta.get("title"),
        period=meta.get("period"),
        table=bool(meta.get("table")),
    )


def _require_text(text: str, what: str, limit: int) -> None:
    if not text or not text.strip():
        raise InvalidRequest(f"the {what} is empty: ask something")
    _require_length(text, what, limit)


def _require_length(text: str, what: str, limit: int) -> None:
    if len(text) > limit:
        raise InvalidRequest(f"the {what} has {len(text):,} characters, over the limit of {limit:,}: shorten it")


def _adapter_label(adapter: str | None) -> str | None:
    """How an answer names its adapter to readers: the run it came from, not where it lies on the server (the audit
    log keeps the path)."""
    if adapter is None:
        return None
    path = Path(adapter)
    return path.parent.name if path.name == ADAPTER_DIR and path.parent.name else path.name


# What a kept answer becomes when a document it drew on is no longer the user's to read.
WITHHELD = {
    "answer": "This answer is no longer shown: it drew on a document you may no longer read, or that was removed.",
    "sources": [],
    "timings": {},
}


def _moved(record: DocumentRecord, error: Exception) -> NotFound:
    return NotFound(
        "the document's file is no longer where it was indexed from: an administrator can index it again",
        detail=f"{record.path}: {error}",
    )


def _reader_words(reader: User | None) -> str:
    if reader is None:
        return "each question's groups"
    return f"{reader.name} ({', '.join(reader.groups) or 'no groups'})"


def _display_name(user: User) -> dict[str, str]:
    """What an audit record adds when the user's id is not the name people know them by (an OIDC subject)."""
    return {} if user.name == user.id else {"name": user.name}
