"""POST /v1/chat/completions and GET /v1/models: OpenAI's wire format, so existing OpenAI clients work against it.

The answer comes from retrieval as on every other route (Assistant.stream with the caller's User); the sources go
in an extra top-level field `sources`, in the final chunk when streamed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from assistant.api.auth import caller
from assistant.api.schemas import (
    MAX_QUESTION_CHARS,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ModelList,
    error_responses,
)
from assistant.api.state import ApiState, api_state
from assistant.errors import InvalidRequest
from assistant.types import Answer, User
from model.prompt import Turn

log = logging.getLogger("assistant.api")

router = APIRouter(prefix="/v1", tags=["openai"], responses=error_responses(400, 401, 429))

MODEL_ID = "assistant"  # what GET /v1/models lists; any name is accepted in a request
_END = object()


@router.get("/models", response_model=ModelList)
async def models(user: Annotated[User, Depends(caller)]) -> dict:
    """The one model this server offers, for clients that pick from a list."""
    return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "organisation"}]}


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={
        200: {
            "description": "A `chat.completion`; with `stream: true`, server-sent `chat.completion.chunk` events "
            "ending with `data: [DONE]`",
            "content": {"text/event-stream": {"schema": ChatCompletionChunk.model_json_schema()}},
        },
        **error_responses(403, 413, 422, 503),
    },
)
async def chat_completions(
    request: ChatCompletionRequest,
    user: Annotated[User, Depends(caller)],
    api: Annotated[ApiState, Depends(api_state)],
):
    question, history = conversation(request.messages)
    if request.stream:
        return await _streamed(api, user, question, history, request.model)
    answer = await run_in_threadpool(api.assistant.ask, question, user, history=history)
    api.metrics.observe_answer(answer, "ask")
    return {
        "id": _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text}, "finish_reason": "stop"}],
        **_extensions(answer),
    }


def conversation(messages: list[ChatMessage]) -> tuple[str, list[Turn]]:
    """The question (the last user message) and the turns before it (each user message with the answer after it)."""
    said = [(message.role, message.text()) for message in messages if message.role in ("user", "assistant")]
    if not said or said[-1][0] != "user":
        raise InvalidRequest("the last user or assistant message must be the user's question (role 'user')")
    question = said[-1][1]
    if not question.strip():
        raise InvalidRequest("the question (the last user message) is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise InvalidRequest(f"the question (the last user message) is longer than {MAX_QUESTION_CHARS} characters")
    turns, asked = [], None
    for role, text in said[:-1]:
        if role == "user":
            asked = text
        elif asked is not None:
            turns.append(Turn(asked, text))
            asked = None
    return question, turns


async def _streamed(api: ApiState, user: User, question: str, history: list[Turn], model: str) -> StreamingResponse:
    pieces = api.assistant.stream(question, user, history=history)
    # The first step runs before the response starts: the audit check, an adapter's refusal or a store failure then
    # answer with their own status (503, 403) rather than as an error inside a 200 stream.
    first = await run_in_threadpool(next, pieces, _END)
    completion_id, created = _completion_id(), int(time.time())

    def event(delta: dict, finish_reason: str | None = None, **extra) -> str:
        chunk = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            **extra,
        }
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    async def events() -> AsyncIterator[str]:
        item, finished = first, False
        try:
            yield event({"role": "assistant", "content": ""})
            while item is not _END:
                if isinstance(item, Answer):
                    api.metrics.observe_answer(item, "ask")
                    yield event({}, "stop", **_extensions(item))
                else:
                    yield event({"content": item})
                item = await run_in_threadpool(next, pieces, _END)
            finished = True
            yield "data: [DONE]\n\n"
        except Exception as exc:  # the status is sent; what is left is to say so in the stream, as OpenAI does
            finished = True
            log.error("a streamed answer failed: %s", exc, exc_info=exc)
            message = "the answer could not be finished: try again; the operator will find the cause in the log"
            yield f"data: {json.dumps({'error': {'message': message, 'type': 'server_error'}})}\n\n"
        finally:
            if not finished:
                # The client went away mid-answer. What it was shown must still reach the audit log, which
                # Assistant.stream writes at its end: the rest is produced, unsent, in a thread of its own.
                threading.Thread(target=_drain, args=(pieces,), name="drain-answer", daemon=True).start()

    # no-store as on every other answer (an answer quotes documents: no cache on the way may keep it); and
    # X-Accel-Buffering: a proxy (nginx) must pass each piece on as it comes, not hold the stream.
    headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _drain(pieces: Iterator) -> None:
    try:
        for _ in pieces:
            pass
    except Exception:
        log.exception("finishing an answer whose client left failed")


def _extensions(answer: Answer) -> dict:
    return {
        "sources": [source.to_dict() for source in answer.sources],
        "answer_model": answer.model,
        "adapter": answer.adapter,
        "timings": answer.timings,
        "search_question": answer.search_question,
    }


def _completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex
