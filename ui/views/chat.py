"""Chat: questions answered from the documents the user may read, streamed, each answer with its sources."""

import uuid
from dataclasses import dataclass

import streamlit as st

from assistant import Answer, Assistant, Turn, User
from assistant.conversations import TITLE_CHARS
from assistant.service import MAX_COMMENT_CHARS, MAX_QUESTION_CHARS
from ui.components import assistant_or_stop, failures_shown, require_user, show_sources
from ui.safe_text import md, show_text, stream_text

SOURCES_PER_ANSWER = 5


@dataclass
class ChatTurn:
    question: str
    answer: Answer
    id: str  # keys the turn's feedback widgets, stable when earlier turns are cleared
    feedback_sent: bool = False


def history(user: User) -> list[ChatTurn]:
    # Keyed by user: if someone else signs in at this browser, they never see the previous conversation.
    return st.session_state.setdefault(f"chat:{user.id}", [])


def current_key(user: User) -> str:
    """The session key of the id of the kept conversation on screen (None: a new one, not kept yet)."""
    return f"conversation:{user.id}"


def show(assistant: Assistant, user: User, conversation_id: str | None) -> None:
    """Puts a kept conversation (or a new, empty one) on screen."""
    turns = history(user)
    turns.clear()
    if conversation_id is not None:
        kept = assistant.conversation(user, conversation_id)
        turns += [ChatTurn(t.question, Answer.from_dict(t.answer), t.id, feedback_sent=True) for t in kept.turns]
    st.session_state[current_key(user)] = conversation_id


def show_conversations(assistant: Assistant, user: User) -> None:
    """The user's kept conversations, in the sidebar: resume, rename or delete one, or start a new one."""
    current = st.session_state.get(current_key(user))
    st.caption("Conversations")
    if st.button("New conversation", icon=":material/add:", key="conversation:new"):
        show(assistant, user, None)
        st.rerun()
    for conversation in assistant.conversations(user):
        # A title is what the user typed (or their first question): a label would render it as Markdown.
        label = md(conversation.title)
        kind = "primary" if conversation.id == current else "tertiary"
        if st.button(label, key=f"conversation:{conversation.id}", type=kind, width="stretch"):
            show(assistant, user, conversation.id)
            st.rerun()
        if conversation.id != current:
            continue
        title = st.text_input("Title", value=conversation.title, max_chars=TITLE_CHARS, key=f"title:{current}")
        if title != conversation.title:
            assistant.rename_conversation(user, current, title)
            st.rerun()
        if st.button("Delete this conversation", icon=":material/delete:", key=f"delete:{current}"):
            assistant.delete_conversation(user, current)
            show(assistant, user, None)
            st.rerun()


def show_feedback(assistant: Assistant, user: User, turn: ChatTurn) -> None:
    rating = st.feedback("thumbs", key=f"rating:{turn.id}", disabled=turn.feedback_sent)
    if turn.feedback_sent:
        st.caption("Thank you: your feedback was recorded.")
        return
    if rating is None:
        return
    # The rating and the comment are sent together, as one record, when the user presses Send.
    with st.form(f"feedback:{turn.id}", border=False):
        # The browser stops at the service's limit; the Assistant refuses more whatever sends it.
        comment = st.text_input("Comment (optional)", key=f"comment:{turn.id}", max_chars=MAX_COMMENT_CHARS)
        if st.form_submit_button("Send feedback"):
            with failures_shown(stop=False):
                assistant.feedback(user, turn.question, turn.answer.text, 1 if rating == 1 else -1, comment)
                turn.feedback_sent = True
                st.rerun()


def show_turn(assistant: Assistant, user: User, turn: ChatTurn) -> None:
    # Questions and answers are shown as their characters: an answer quotes documents (and a model may be talked
    # into writing a URL that carries other passages), so Markdown would turn them into images and links.
    with st.chat_message("user"):
        show_text(turn.question)
    with st.chat_message("assistant"):
        show_text(turn.answer.text)
        show_answer_details(assistant, user, turn)


def show_answer_details(assistant: Assistant, user: User, turn: ChatTurn) -> None:
    if turn.answer.search_question:
        # The model's words, like the answer's: shown as characters.
        st.caption(f"Searched as: {md(turn.answer.search_question)}")
    show_sources(turn.answer.sources, assistant, user, key=turn.id)
    model = turn.answer.model + (f" + {turn.answer.adapter}" if turn.answer.adapter else "")
    st.caption(f"{md(model)} · {turn.answer.timings.get('total_ms', 0) / 1000:.1f} s")
    show_feedback(assistant, user, turn)


def ask(assistant: Assistant, user: User, question: str, earlier: list[ChatTurn]) -> ChatTurn | None:
    """Streams the answer into the page; the turn, or None after showing what went wrong."""
    final: list[Answer] = []
    # The conversation so far makes follow-ups answerable; the assistant keeps only its last few turns.
    history = [Turn(turn.question, turn.answer.text) for turn in earlier]

    def pieces():
        for piece in assistant.stream(question, user, k=SOURCES_PER_ANSWER, history=history):
            if isinstance(piece, Answer):
                final.append(piece)
            else:
                yield piece

    with failures_shown(stop=False):
        stream_text(pieces())  # not st.write_stream: it renders Markdown
    return ChatTurn(question, final[0], uuid.uuid4().hex) if final else None


user = require_user()
assistant = assistant_or_stop()
turns = history(user)
with st.sidebar, failures_shown(stop=False):
    show_conversations(assistant, user)

st.title("Ask the documents")
st.caption("Answers come only from the documents you may read, and each one lists the passages it used.")

for turn in turns:
    show_turn(assistant, user, turn)

if question := st.chat_input("Ask a question about your documents", max_chars=MAX_QUESTION_CHARS):
    with st.chat_message("user"):
        show_text(question)
    with st.chat_message("assistant"):
        turn = ask(assistant, user, question, turns)
        if turn is not None:
            turns.append(turn)
            show_answer_details(assistant, user, turn)
    if turn is not None:
        # Kept on the server, under the user's own id: the conversation outlasts this browser tab.
        with failures_shown(stop=False):
            current = st.session_state.get(current_key(user))
            st.session_state[current_key(user)] = assistant.keep_turn(user, current, question, turn.answer).id
            if current is None:
                st.rerun()  # the sidebar lists the conversation it has just started
