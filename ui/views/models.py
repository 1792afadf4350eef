"""Models: which model answers, with which adapter; administrators switch adapters for the whole portal."""

from pathlib import Path

import streamlit as st

from assistant import Assistant
from ui.components import assistant_or_stop, failures_shown, require_user

NONE = "none (the base model)"


def describe(assistant: Assistant) -> list[dict]:
    settings = assistant.settings
    rows = [{"setting": "generator", "value": settings.generator}]
    if settings.generator == "local":
        rows.append({"setting": "model", "value": str(settings.model_path)})
        if settings.gguf_file:
            rows.append({"setting": "GGUF file", "value": settings.gguf_file})
    elif settings.generator == "openai":
        rows.append({"setting": "model", "value": f"{settings.openai_model} at {settings.openai_base_url}"})
    if settings.generator != "extractive":
        rows.append({"setting": "adapter", "value": str(settings.adapter) if settings.adapter else "none"})
    return rows


def adapter_picker(assistant: Assistant) -> None:
    st.subheader("Adapter")
    if assistant.settings.generator == "extractive":
        st.info(
            "Answers are extractive (sentences quoted from the sources, no model): adapters apply only to a model "
            "(ASSISTANT_GENERATOR=local)."
        )
        return
    if assistant.settings.generator == "openai":
        # The server loads adapters itself (vLLM --lora-modules NAME=PATH); here an adapter is only a served name.
        st.info(
            "The model server decides which adapters it serves: to answer with one, set ASSISTANT_ADAPTER to the "
            "name it is served under and restart the portal."
        )
        return
    with failures_shown():
        adapters = assistant.adapters()
    current = assistant.settings.adapter
    choices = [NONE, *map(str, adapters)]
    if current is not None and str(current) not in choices:
        choices.append(str(current))
    choice = st.selectbox("Answer with", choices, index=choices.index(str(current)) if current else 0)
    st.caption("The change applies at once to every user's answers, until the portal restarts.")
    if st.button("Use this adapter", type="primary"):
        with failures_shown(), st.spinner("Switching the adapter..."):
            assistant.use_adapter(None if choice == NONE else Path(choice))
            st.rerun()


user = require_user()
assistant = assistant_or_stop()
st.title("Models")
st.dataframe(describe(assistant), hide_index=True)
if user.is_admin:
    adapter_picker(assistant)
