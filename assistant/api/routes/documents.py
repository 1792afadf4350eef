"""GET /v1/documents, POST /v1/ingest (upload), DELETE /v1/documents/{doc_id}: what the portal's Documents page does.

The same rules as the portal (ui/views/documents.py): anyone lists the documents they may read; a user uploads for
groups they belong to, and must name at least one (a document with none is for administrators only); administrators
upload for any group and delete.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, UploadFile

from assistant.api.auth import caller
from assistant.api.schemas import DocumentModel, DocumentsResponse, GroupName, IngestResponse, error_responses
from assistant.api.state import ApiState, api_state
from assistant.types import User
from assistant.uploads import Upload, outcome_rows, save_uploads, user_folder
from retrieval import validate_groups

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
    groups = validate_groups(groups or [])
    # Checked before anything is written, as the portal does; Assistant.ingest checks the groups again.
    if not user.is_admin and not groups:
        raise ValueError(
            "choose at least one group that may read the files (a `groups` field): a document with no group can only "
            "be read by administrators"
        )
    if not user.is_admin and not set(groups) <= set(user.groups):
        outside = ", ".join(sorted(set(groups) - set(user.groups)))
        raise PermissionError(f"{user.name} may share documents only with their own groups, not with {outside}")
    settings = api.settings
    uploads = [Upload(file.filename or "", file.size or 0, file.file) for file in files]
    with api.ingest_lock:
        saved = save_uploads(uploads, user_folder(settings.data_dir, user.name), settings.upload_max_mb)
        report = api.assistant.ingest(saved.paths, groups=groups, user=user) if saved.paths else None
    rows = outcome_rows(saved, report)
    api.metrics.observe_ingest((row["outcome"] for row in rows), report.chunks if report else 0)
    return {
        "summary": report.summary() if report else "no file could be saved: see each file's reason",
        "files": rows,
        "report": report.to_dict() if report else None,
    }


@router.delete("/documents/{doc_id}", response_model=DocumentModel, responses=error_responses(403, 404, 422))
def delete(
    doc_id: Annotated[str, Path(pattern=DOCUMENT_ID, description="A document's id, from GET /v1/documents")],
    user: Annotated[User, Depends(caller)],
    api: Annotated[ApiState, Depends(api_state)],
) -> dict:
    """Removes a document and all its passages from the index (administrators only); the file is not touched."""
    if not user.is_admin:
        # Checked before the document is looked up: a refusal says nothing about whether the id exists.
        raise PermissionError("only administrators delete documents: ask one, or re-upload the file to replace it")
    return api.assistant.delete(doc_id, user=user).to_dict()
