"""Documents: upload files for chosen groups, see what the user may read; admins delete and re-index."""

from pathlib import Path

import streamlit as st

from assistant import Assistant, DocumentInfo, User
from assistant.uploads import Saved, Upload, outcome_rows
from ui.components import assistant_or_stop, failures_shown, human_size, require_user, short_time
from ui.safe_text import md

RESULT_KEY = "documents:result"  # the last upload's or re-index's outcome, shown until the next one
UPLOADER_KEY = "documents:uploader"


def upload_form(assistant: Assistant, user: User, documents: list[DocumentInfo]) -> None:
    settings = assistant.settings
    own = list(user.own_groups)
    # A user shares only with groups they are in; an administrator with any group, existing or new.
    options = sorted(set(own) | {g for d in documents for g in d.groups}) if user.is_admin else own
    if not options and not user.is_admin:
        st.info("You belong to no group, so nobody could read what you upload: ask an administrator to add you to one.")
        return
    # Not a form: the button stays disabled until files and groups are chosen, rather than refuse a submit and
    # drop the chosen files. A new key empties the uploader once its files are indexed.
    generation = st.session_state.setdefault(UPLOADER_KEY, 0)
    files = st.file_uploader(
        "Files", accept_multiple_files=True, max_upload_size=settings.upload_max_mb, key=f"upload:{generation}"
    )
    groups = st.multiselect(
        "Who may read them",
        options,
        accept_new_options=user.is_admin,
        help="Members of these groups see the files in answers and in this list."
        + (" With no group, only administrators do." if user.is_admin else ""),
    )
    ready = bool(files) and (bool(groups) or user.is_admin)
    if st.button("Upload and index", type="primary", disabled=not ready) and upload(assistant, user, files, groups):
        st.session_state[UPLOADER_KEY] = generation + 1
        st.rerun()  # with an empty uploader, and the new documents in the list


def upload(assistant: Assistant, user: User, files: list, groups: list[str]) -> bool:
    # The Assistant decides (own groups only, at least one, the quota); a refusal is shown in its own words.
    # Streamlit's UploadedFile is itself the file's bytes (a BytesIO).
    uploads = [Upload(file.name, file.size, file) for file in files]
    result = None
    with failures_shown(stop=False), st.spinner(f"Indexing {len(uploads)} file(s)..."):
        result = assistant.upload(uploads, groups, user)
    if result is None:
        return False
    st.session_state[RESULT_KEY] = (result.summary if result.report else "", result.files)
    return result.report is not None


def show_result() -> None:
    summary, rows = st.session_state.get(RESULT_KEY, ("", []))
    if summary:
        st.caption(md(summary))  # it may name uploaded files, whose names are anyone's
    if rows:
        st.dataframe(rows, hide_index=True, column_config={"reason": st.column_config.TextColumn(width="large")})


def document_table(documents: list[DocumentInfo]) -> None:
    if not documents:
        st.info("No document you may read has been indexed yet.")
        return
    rows = [
        {
            "document": Path(d.path).name,
            "groups": ", ".join(d.groups) or "(administrators only)",
            "size": human_size(d.size),
            "modified": short_time(d.modified),
            "indexed": short_time(d.ingested_at),
            "passages": d.chunks,
            "path": d.path,
        }
        for d in documents
    ]
    st.dataframe(rows, hide_index=True)


def admin_actions(assistant: Assistant, user: User, documents: list[DocumentInfo]) -> None:
    if not documents:
        return
    st.subheader("Manage a document")
    by_id = {d.doc_id: d for d in documents}
    doc_id = st.selectbox(
        "Document", list(by_id), format_func=lambda i: f"{Path(by_id[i].path).name}  ({by_id[i].path})"
    )
    document = by_id[doc_id]
    reindex, delete = st.columns(2)
    if reindex.button("Re-index from its file", icon=":material/refresh:"):
        with failures_shown():
            report = assistant.ingest([document.path], groups=document.groups, user=user)
            st.session_state[RESULT_KEY] = (report.summary(), outcome_rows(Saved([Path(document.path)]), report))
            st.rerun()
    if delete.button("Delete", icon=":material/delete:"):
        st.session_state["documents:confirm"] = doc_id
    if st.session_state.get("documents:confirm") == doc_id:
        st.warning(
            f"Remove **{md(Path(document.path).name)}** and all its passages from the index? Nobody will get answers "
            "from it any more. The file itself is not touched."
        )
        yes, no = st.columns(2)
        if yes.button("Yes, delete it", type="primary"):
            st.session_state.pop("documents:confirm")
            with failures_shown():
                assistant.delete(document.doc_id, user=user)
                st.session_state[RESULT_KEY] = (f"Deleted {Path(document.path).name}.", [])
                st.rerun()
        if no.button("Cancel"):
            st.session_state.pop("documents:confirm")
            st.rerun()


user = require_user()
assistant = assistant_or_stop()
st.title("Documents")

with failures_shown():
    documents = assistant.documents(user)
    upload_form(assistant, user, documents)
show_result()

st.subheader("Documents you may read")
document_table(documents)
if user.is_admin:
    admin_actions(assistant, user, documents)
