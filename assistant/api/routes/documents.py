"""GET /v1/documents, POST /v1/ingest (upload), DELETE /v1/documents/{doc_id}: what the portal's Documents page does;
GET /v1/documents/{doc_id}/original and /pages/{page}: a source's file and its page with the passage marked.

The rules are the Assistant's (assistant/policy.py), as for the portal: anyone lists the documents they may read; a
user uploads for groups they belong to, and must name at least one; administrators upload for any group and delete.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Form, Path, Query, Response, UploadFile

from assistant.api.auth import caller
from assistant.api.schemas import DocumentModel, DocumentsResponse, GroupName, IngestResponse, error_responses
from assistant.api.state import ApiState, api_state
from assistant.types import User
from assistant.uploads import Upload

router = APIRouter(prefix="/v1", tags=["documents"], responses=error_responses(400, 401, 429, 503))

DOCUMENT_ID = r"^[0-9a-f]{32}$"  # retrieval.ingest.document_id: 32 hex digits of the path's SHA-256
MAX_FILES = 100


@router.get("/documents", response_model=DocumentsResponse)
def documents(user: Annotated[User, Depends(caller)], api: Annotated[ApiState, Depends(api_state)]) -> dict:
    """The documents the caller may read."""
    return {"documents": [document.to_dict() for document in api.assistant.documents(user)]}


@router.post("/ingest", response_model=IngestResponse, responses=error_responses(403, 413, 422))
def ingest(
    files: Annotated[list[UploadFile], File(description="The files to index", min_length=1, max_length=MAX_FILES)],
    user: Annotated[User, Depends(caller)],
    api: Annotated[ApiState, Depends(api_state)],
    groups: Annotated[list[GroupName] | None, Form(description="Who may read them (repeat the field)")] = None,
) -> dict:
    """Saves the files under the caller's upload folder and indexes them for `groups`; one outcome per file."""
    uploads = [Upload(file.filename or "", file.size or 0, file.file) for file in files]
    with api.ingest_lock:
        result = api.assistant.upload(uploads, groups or [], user)
    api.metrics.observe_ingest((row["outcome"] for row in result.files), result.report.chunks if result.report else 0)
    return result.to_dict()


@router.delete("/documents/{doc_id}", response_model=DocumentModel, responses=error_responses(403, 404, 422))
def delete(
    doc_id: Annotated[str, Path(pattern=DOCUMENT_ID, description="A document's id, from GET /v1/documents")],
    user: Annotated[User, Depends(caller)],
    api: Annotated[ApiState, Depends(api_state)],
) -> dict:
    """Removes a document and all its passages from the index (administrators only); an uploaded file goes with it."""
    return api.assistant.delete(doc_id, user=user).to_dict()


# An original or a page quotes a document: no cache on the way may keep it, and a browser must not guess its type.
_PRIVATE = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@router.get("/documents/{doc_id}/original", responses={**error_responses(403, 404, 422), 200: {"content": {}}})
def original(
    doc_id: Annotated[
        str, Path(pattern=DOCUMENT_ID, description="A document's id, from a source or GET /v1/documents")
    ],
    user: Annotated[User, Depends(caller)],
    api: Annotated[ApiState, Depends(api_state)],
) -> Response:
    """The file the document was indexed from, as a download; 404 for a document the caller may not read."""
    found = api.assistant.original(doc_id, user)
    # The name goes out percent-encoded (RFC 6266 filename*): a header cannot carry it raw.
    disposition = f"attachment; filename*=UTF-8''{quote(found.name)}"
    return Response(found.data, media_type=found.media_type, headers={**_PRIVATE, "Content-Disposition": disposition})


@router.get(
    "/documents/{doc_id}/pages/{page}",
    responses={**error_responses(403, 404, 422), 200: {"content": {"image/png": {}}}},
)
def page(
    doc_id: Annotated[str, Path(pattern=DOCUMENT_ID, description="A PDF document's id")],
    page: Annotated[int, Path(ge=1, le=100_000, description="The page, from 1")],
    user: Annotated[User, Depends(caller)],
    api: Annotated[ApiState, Depends(api_state)],
    chunk: Annotated[int | None, Query(ge=0, description="A source's chunk: its passage is marked on the page")] = None,
) -> Response:
    """A PDF page as a PNG image, with the passage `chunk` marked; 404 for a document the caller may not read."""
    return Response(api.assistant.page_image(doc_id, page, user, chunk), media_type="image/png", headers=_PRIVATE)
