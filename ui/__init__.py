"""The staff portal (Streamlit) over the assistant's Python API."""
