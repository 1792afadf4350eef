# The assistant's image: the same pinned install as `make run`, no model weights, no data.
FROM python:3.11-slim

# Nothing leaves the machine, each component told its own way: the Hugging Face libraries never reach for a hub and
# send no telemetry, Streamlit gathers no usage statistics (the image does not carry .streamlit/config.toml), and
# DO_NOT_TRACK=1 asks the same of any other tool that honours the convention.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    DO_NOT_TRACK=1 \
    ASSISTANT_DATA_DIR=/data

WORKDIR /app
COPY constraints.txt pyproject.toml README.md ./
COPY assistant ./assistant
COPY retrieval ./retrieval
COPY model ./model
COPY finetune ./finetune
COPY ui ./ui
# torch first, through the constraints file, so nothing else can pick its build.
RUN pip install --no-cache-dir -c constraints.txt torch==2.13.0 \
 && pip install --no-cache-dir -c constraints.txt .

RUN useradd --create-home --uid 10001 assistant && mkdir -p /data && chown assistant /data
USER assistant
VOLUME ["/data"]
ENTRYPOINT ["assistant"]
CMD ["--help"]
