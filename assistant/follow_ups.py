"""In a conversation, what a question is searched with.

A question that stands on its own is searched alone: joining the previous question to every search answered a change
of topic ("What should I do if I lose my laptop?" after a question on annual leave) about the old topic. The
conversation helps only when the question depends on it:

- it refers back: a third-person pronoun or a demonstrative ("is it paid?", "does this apply to contractors?");
- it continues the previous one: an ellipsis ("and for part-time staff?", "what about contractors?");
- it is too short to say what it is about ("why?", "how much?");
- or, searched alone, it finds no passage the embedder scores as an answer (below the model's own answer
  similarity, the cut the extractive answer uses), which is how a follow-up without such words shows itself
  ("How many files were downloaded?").

A question that depends on the conversation is searched as the model's standalone rewrite of it where a generator is
configured (the rewrite is shown with the answer), else as the previous question followed by it.
"""

from __future__ import annotations

import re

from llama_index.core.utils import globals_helper

# Words that point back at something named earlier. "that" only at the edges of a question ("does that apply...",
# "what is that?"), where it is not a relative pronoun ("claims that exceed EUR 2,000").
_REFERRING = frozenset({"it", "its", "itself", "they", "them", "their", "theirs", "this", "these", "those"})
_REFERRING |= {"he", "him", "his", "she", "her", "hers"}
_OPENERS = re.compile(r"^\s*(and|or|but|also|so|then|what about|how about|what if|same)\b", re.IGNORECASE)
_WORD = re.compile(r"[a-z0-9][a-z0-9'_-]*")
# A question of fewer than MIN_TOPIC_WORDS words other than function words cannot say what it is about. The function
# words are NLTK's English stopwords (the copy llama-index ships, read offline) and a few that ask for an amount.
MIN_TOPIC_WORDS = 2
_ASKING = frozenset({"much", "many", "long", "often", "please", "thanks", "ok"})
# The longest a model's rewrite may be; a longer reply is not a question but an answer, and is not used.
MAX_REWRITE_CHARS = 300


def refers_back(question: str) -> bool:
    """Whether the question's own words tie it to the conversation (a pronoun, an ellipsis, too few words)."""
    if _OPENERS.match(question):
        return True
    words = _WORD.findall(question.lower())
    if any(word in _REFERRING for word in words):
        return True
    if words and "that" in (words[0], words[-1]) or words[:2] == ["does", "that"] or words[:2] == ["is", "that"]:
        return True
    function_words = _ASKING.union(globals_helper.stopwords)
    return sum(word not in function_words for word in words) < MIN_TOPIC_WORDS


def joined(question: str, previous: str) -> str:
    """What a follow-up is searched as without a model: the previous question names the topic. Not its answer,
    whose wording would pull in whatever it happened to cite."""
    return f"{previous}\n{question}"


def standalone_rewrite(reply: str, question: str) -> str | None:
    """The question a model's reply rewrote, or None where the reply is not one (empty, an answer, too long)."""
    lines = [line.strip() for line in reply.strip().splitlines() if line.strip()]
    if not lines:
        return None
    text = re.sub(r"^(standalone question|question|rewritten question)\s*:\s*", "", lines[0], flags=re.IGNORECASE)
    text = text.strip().strip("\"'“”‘’`").strip()
    if len(text) > MAX_REWRITE_CHARS or text.casefold() == question.strip().casefold():
        return None
    # A reply that still points back, or says too little to search ("ok", "Sure."), did not do the job.
    return None if refers_back(text) else text
