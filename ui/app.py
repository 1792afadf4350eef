"""The portal's entry point: `streamlit run ui/app.py` (or `make run`).

Sign-in comes first; until then the only page that exists is the sign-in page, so no URL reaches another one.
"""

import streamlit as st

from ui import auth
from ui.components import assistant_or_stop, failures_shown, get_settings, show_health
from ui.safe_text import md

# An emoji favicon, drawn by the browser itself. A Material icon (here or on a page) becomes a favicon fetched from
# fonts.gstatic.com, and the portal makes no request that leaves the site.
st.set_page_config(page_title="Assistant", page_icon="📄", layout="wide")

with failures_shown():  # a wrong ASSISTANT_* variable or config file: say which, before anything else
    settings = get_settings()

with failures_shown():  # a users file damaged since sign-in: nothing is shown until it is repaired
    user = auth.signed_in_user(settings)
if user is None:
    st.navigation([st.Page(auth.sign_in_page, title="Sign in", url_path="sign-in")], position="hidden").run()
    st.stop()

auth.hand_over_cookie(settings)
assistant = assistant_or_stop()

pages = {
    "Assistant": [
        st.Page("views/chat.py", title="Chat", default=True),
        st.Page("views/documents.py", title="Documents"),
        st.Page("views/models.py", title="Models"),
    ]
}
if user.is_admin:
    pages["Administration"] = [
        st.Page("views/finetuning.py", title="Fine-tuning"),
        st.Page("views/evaluation.py", title="Evaluation"),
        st.Page("views/audit.py", title="Audit"),
    ]

with st.sidebar:
    # Names and groups may come from an identity provider's claims: shown as written, never as Markdown.
    st.caption(f"Signed in as **{md(user.name)}** · groups: {md(', '.join(user.groups) or 'none')}")
    if st.session_state.get("ignored_groups"):
        st.caption("Ignored groups (not valid names): " + md(", ".join(st.session_state["ignored_groups"])))
    if st.button("Sign out"):
        auth.sign_out(settings)
    show_health(assistant, user)

st.navigation(pages).run()
