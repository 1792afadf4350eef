"""Generators: the in-process one on a tiny Grok-1, the OpenAI-compatible one against a fake server on 127.0.0.1,
the Assistant answering through each, and SmolLM2 (a real small chat model from its GGUF file)."""

import json
import socket
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError
from test_model_loading import save_lora, save_tiny_grok, tiny_grok, word_tokenizer

from assistant import Answer, Settings, User
from assistant.extractive import NO_ANSWER
from assistant.policy import AdapterNotPermitted
from model.generators import Generator, GeneratorError
from model.generators.local import LocalGenerator, StopText
from model.generators.openai_server import OpenAICompatibleGenerator, _sse_events, _sse_text
from model.prompt import Passage, build_prompt
from model.settings import GeneratorSettings

PROMPT = build_prompt("How many days of leave do employees get?", [Passage("handbook.md (Leave)", "w1 w2 w3 w4")])


# --- the in-process generator ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grok():
    return tiny_grok(), word_tokenizer()


def _run(generator, prompt=PROMPT) -> list[str]:
    pieces = list(generator.stream(prompt))
    assert all(isinstance(p, str) and p for p in pieces)
    return pieces


def test_local_generator_streams_pieces_within_its_token_budget(grok):
    long = LocalGenerator(*grok, max_new_tokens=16)
    pieces = _run(long)
    assert isinstance(long, Generator) and long.adapter is None
    assert len(pieces) >= 4 and long.last_completion_tokens == 16
    short = LocalGenerator(*grok, max_new_tokens=4)
    short_text = "".join(_run(short))
    assert short.last_completion_tokens == 4
    assert short_text and "".join(pieces).startswith(short_text.rstrip()) and len(short_text) < len("".join(pieces))


def test_local_generator_cuts_at_a_stop_sequence_and_stops_generating(grok):
    full = "".join(_run(LocalGenerator(*grok, max_new_tokens=16)))
    # A stop sequence first seen half-way through the greedy answer: what comes before it is all that may come out.
    at = next(i for i in range(len(full) // 2, 0, -1) if full.find(full[i : i + 4]) == i and full[i] != " ")
    stop = full[at : at + 4]
    stopping = LocalGenerator(*grok, max_new_tokens=16, stop=[stop])

    assert "".join(_run(stopping)) == full[:at]
    assert stopping.last_completion_tokens < 16  # generation ended at the stop, not at the budget


def test_stop_text_never_lets_a_piece_of_a_stop_sequence_out():
    cutter = StopText(["\nQuestion:"])
    assert cutter.feed("Twenty-five days [1].\nQue") == "Twenty-five days [1]."
    assert cutter.feed("stion: and more") == "" and cutter.stopped
    assert cutter.feed("anything") == "" and cutter.flush() == ""

    cutter = StopText(["\nQuestion:"])
    assert cutter.feed("a\nQu") == "a" and cutter.feed("ick") == "\nQuick"
    assert cutter.feed("\nQ") == "" and cutter.flush() == "\nQ"  # the text ended: what was held back is text


def test_chat_models_get_their_template_and_base_models_the_plain_prompt(grok):
    model, tokenizer = grok
    assert PROMPT.plain().endswith("Question: How many days of leave do employees get?\n\nAnswer:")
    assert '<source n="1" from="handbook.md (Leave)">\nw1 w2 w3 w4' in PROMPT.plain()
    plain = LocalGenerator(model, tokenizer)
    ids = plain.encode(PROMPT)["input_ids"][0].tolist()
    assert not plain.uses_chat_template and len(ids) == len(PROMPT.plain().split())  # one word, one token

    chat_tokenizer = word_tokenizer()
    chat_tokenizer.chat_template = "{% for m in messages %}{{ m.role }} : {{ m.content }} </s> {% endfor %}assistant :"
    chat = LocalGenerator(model, chat_tokenizer)
    ids = chat.encode(PROMPT)["input_ids"][0].tolist()
    rendered = "".join(f"{m['role']} : {m['content']} </s> " for m in PROMPT.messages()) + "assistant :"
    assert chat.uses_chat_template and len(ids) == len(rendered.split()) and ids.count(chat_tokenizer.eos_token_id) == 2


def test_a_failing_model_is_an_error_in_the_readers_thread_not_a_hang():
    def generate(**kwargs):
        raise RuntimeError("CUDA out of memory")

    broken = types.SimpleNamespace(device="cpu", generate=generate, config=types.SimpleNamespace(model_type="grok-1"))
    generator = LocalGenerator(broken, word_tokenizer(), max_new_tokens=4)
    with pytest.raises(GeneratorError, match="grok-1 failed while generating: RuntimeError: CUDA out of memory"):
        list(generator.stream(PROMPT))


# --- a fake OpenAI-compatible server ----------------------------------------------------------------------------


class FakeServer(ThreadingHTTPServer):
    """Answers /v1/chat/completions from a script of replies (the last one repeats) and records every request."""

    daemon_threads = True
    block_on_close = False

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.script: list[tuple] = [("sse", ["Twenty-five ", "days ", "[1]."])]
        self.url = f"http://127.0.0.1:{self.server_address[1]}/v1"

    def next_reply(self) -> tuple:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # the connection closes after each reply, so a stream needs no length

    def log_message(self, *args):
        pass

    def do_GET(self):  # the model list, which the Assistant's health check asks for
        self.server.requests.append({"path": self.path, "headers": dict(self.headers)})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"object": "list", "data": [{"id": "org-model", "object": "model"}]}).encode())

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        kind, *args = self.server.next_reply()
        try:
            if kind == "sleep":
                time.sleep(args[0])
                kind, args = "sse", [["late"]]
            if kind == "status":
                self.send_response(args[0])
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(args[1].encode() if len(args) > 1 else b"{}")
            elif kind == "redirect":
                self.send_response(307)
                self.send_header("Location", args[0])
                self.end_headers()
            else:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()
                chat = self.path.endswith("/chat/completions")
                for piece in args[0]:
                    # vLLM's chunk shapes: chat deltas, or a completion's text
                    choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
                    chunk = {"object": "chat.completion.chunk" if chat else "text_completion", "choices": [choice]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.flush()
                self.wfile.write(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout test)


@pytest.fixture
def server():
    fake = FakeServer()
    thread = threading.Thread(target=fake.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield fake
    fake.shutdown()
    fake.server_close()


def test_openai_generator_streams_the_servers_pieces(server):
    generator = OpenAICompatibleGenerator(server.url, "org-model", api_key="secret-key", max_new_tokens=64)

    assert list(generator.stream(PROMPT)) == ["Twenty-five ", "days ", "[1]."]
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer secret-key"
    body = request["body"]
    assert body["model"] == "org-model" and body["stream"] is True and body["max_tokens"] == 64
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert '<source n="1" from="handbook.md (Leave)">\nw1 w2 w3 w4' in body["messages"][1]["content"]
    generator.close()


def test_an_adapter_is_chosen_by_its_served_name(server):
    generator = OpenAICompatibleGenerator(server.url, "org-model", adapter="hr-lora")
    list(generator.stream(PROMPT))
    assert server.requests[0]["body"]["model"] == "hr-lora"
    assert (generator.name, generator.adapter) == ("org-model", "hr-lora")


# vLLM's answer to a chat request for a model whose tokenizer has no chat template (Grok-1 as released).
NO_TEMPLATE = (
    '{"object": "error", "message": "As of transformers v4.44, default chat template is no longer allowed, so you '
    'must provide a chat template if the tokenizer does not define one.", "type": "BadRequestError", "code": 400}'
)


def test_a_base_model_is_asked_for_a_completion_of_the_plain_prompt(server):
    generator = OpenAICompatibleGenerator(server.url, "grok-1", adapter="hr-lora", max_new_tokens=32, api="completions")
    assert "".join(generator.stream(PROMPT)) == "Twenty-five days [1]."
    (request,) = server.requests
    assert request["path"] == "/v1/completions"
    body = request["body"]
    assert body["prompt"] == PROMPT.plain() and body["prompt"].endswith("Answer:") and "messages" not in body
    assert body["model"] == "hr-lora" and body["stream"] is True and body["max_tokens"] == 32
    assert body["stop"] == ["\nQuestion:", "\nSources:"]  # where a base model would go on to a next question


def test_auto_turns_to_completions_when_the_server_says_there_is_no_chat_template(server):
    server.script = [("status", 400, NO_TEMPLATE), ("sse", ["Twenty-five ", "days."])]
    generator = OpenAICompatibleGenerator(server.url, "grok-1")
    assert "".join(generator.stream(PROMPT)) == "Twenty-five days."
    assert [r["path"] for r in server.requests] == ["/v1/chat/completions", "/v1/completions"]
    assert "".join(generator.stream(PROMPT)) == "Twenty-five days."  # remembered: no second chat attempt
    assert [r["path"] for r in server.requests][2:] == ["/v1/completions"]


def test_chat_named_for_a_base_model_is_an_error_that_says_which_setting(server):
    server.script = [("status", 400, NO_TEMPLATE)]
    generator = OpenAICompatibleGenerator(server.url, "grok-1", api="chat")
    with pytest.raises(GeneratorError, match="no chat template .* set the generator's API to completions or auto"):
        list(generator.stream(PROMPT))
    assert len(server.requests) == 1
    server.script = [("status", 400, '{"message": "max_tokens is too large"}')]  # other 400s stay errors in auto
    with pytest.raises(GeneratorError, match="answered 400 Bad Request: .*max_tokens"):
        list(OpenAICompatibleGenerator(server.url, "grok-1").stream(PROMPT))


def test_a_503_before_the_first_token_is_retried(server):
    server.script = [("status", 503, '{"error": "loading"}'), ("sse", ["ok"])]
    generator = OpenAICompatibleGenerator(server.url, "m", backoff_s=0.01)
    assert list(generator.stream(PROMPT)) == ["ok"]
    assert len(server.requests) == 2


def test_5xx_until_the_retries_run_out_is_an_error(server):
    server.script = [("status", 500, "boom")]
    generator = OpenAICompatibleGenerator(server.url, "m", retries=1, backoff_s=0.01)
    with pytest.raises(GeneratorError, match="answered 500 Internal Server Error: boom"):
        list(generator.stream(PROMPT))
    assert len(server.requests) == 2


def test_a_4xx_is_an_error_with_the_servers_reason_and_no_retry(server):
    server.script = [("status", 404, '{"message": "The model `hr-lora` does not exist."}')]
    generator = OpenAICompatibleGenerator(server.url, "m", adapter="hr-lora", backoff_s=0.01)
    with pytest.raises(GeneratorError, match=r"answered 404 Not Found: .*does not exist.*named 'hr-lora'"):
        list(generator.stream(PROMPT))
    assert len(server.requests) == 1


def test_a_silent_server_times_out_with_a_clear_error(server):
    server.script = [("sleep", 2.0)]
    generator = OpenAICompatibleGenerator(server.url, "m", timeout=0.3)
    started = time.perf_counter()
    with pytest.raises(GeneratorError, match="went silent before answering for more than 0.3 s"):
        list(generator.stream(PROMPT))
    assert time.perf_counter() - started < 1.5


def test_an_unreachable_server_is_retried_then_named():
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    generator = OpenAICompatibleGenerator(f"http://127.0.0.1:{port}/v1", "m", retries=1, backoff_s=0.01)
    with pytest.raises(GeneratorError, match=f"cannot reach the model server at http://127.0.0.1:{port}.* 2 tries"):
        list(generator.stream(PROMPT))


def test_a_redirect_to_another_host_is_refused_not_followed(server):
    server.script = [("redirect", "http://203.0.113.9/v1/chat/completions")]
    generator = OpenAICompatibleGenerator(server.url, "m")
    with pytest.raises(GeneratorError, match="redirected to 'http://203.0.113.9.*not followed"):
        list(generator.stream(PROMPT))
    assert len(server.requests) == 1


def test_server_sent_events_parsing():
    lines = [": keep-alive", "event: message", "data: first", "data: second", "", "id: 3", "data:[DONE]", ""]
    assert list(_sse_events(iter(lines))) == ["first\nsecond", "[DONE]"]

    failing = types.SimpleNamespace(iter_lines=lambda: iter(['data: {"error": {"message": "context too long"}}', ""]))
    with pytest.raises(GeneratorError, match="failed while answering: context too long"):
        list(_sse_text(failing, "http://h/v1/chat/completions"))


# --- settings ---------------------------------------------------------------------------------------------------


def test_settings_name_the_variable_a_generator_lacks(monkeypatch):
    with pytest.raises(ValidationError, match="generator 'local' needs model_path"):
        GeneratorSettings(generator="local")
    with pytest.raises(ValidationError, match="needs ASSISTANT_OPENAI_BASE_URL and ASSISTANT_OPENAI_MODEL"):
        Settings(generator="openai")
    with pytest.raises(ValidationError, match="ASSISTANT_OPENAI_BASE_URL must be an http"):
        Settings(generator="openai", openai_base_url="vllm:8000", openai_model="m")

    monkeypatch.setenv("ASSISTANT_GENERATOR", "local")
    with pytest.raises(ValidationError, match="needs ASSISTANT_MODEL_PATH"):
        Settings()
    monkeypatch.setenv("ASSISTANT_MODEL_PATH", "/srv/models/grok-1")
    monkeypatch.setenv("ASSISTANT_MAX_NEW_TOKENS", "64")
    settings = Settings()
    assert settings.generator == "local" and str(settings.model_path) == "/srv/models/grok-1"
    assert settings.max_new_tokens == 64 and Settings(generator="extractive").generator == "extractive"


# --- the Assistant ----------------------------------------------------------------------------------------------


@pytest.fixture
def documents(tmp_path):
    public = tmp_path / "docs" / "public" / "leave.md"
    secret = tmp_path / "docs" / "hr" / "salaries.md"
    public.parent.mkdir(parents=True)
    secret.parent.mkdir(parents=True)
    public.write_text("# Annual leave\n\nEmployees get twenty-five days of annual leave per calendar year.\n")
    secret.write_text("# Salary bands\n\nAnnual leave days are bought back at band ZEBRA-7731 rates.\n")
    return public, secret


def _ingest(assistant, documents):
    public, secret = documents
    assert assistant.ingest([public], groups=["staff"]).ok
    assert assistant.ingest([secret], groups=["hr"]).ok


def test_the_assistant_answers_through_the_server_from_readable_sources_only(make_assistant, server, documents):
    assistant = make_assistant(generator="openai", openai_base_url=server.url, openai_model="org-model")
    _ingest(assistant, documents)

    *pieces, answer = assistant.stream("How many days of annual leave do employees get?", User("ana", ("staff",)))

    assert pieces == ["Twenty-five ", "days ", "[1]."]
    assert isinstance(answer, Answer) and answer.text == "Twenty-five days [1]." and answer.model == "org-model"
    assert [s.path for s in answer.sources] == [str(documents[0].resolve())]
    assert set(answer.to_dict()) == {"answer", "sources", "model", "timings"}
    assert {"retrieve_ms", "first_token_ms", "generate_ms", "total_ms"} <= set(answer.timings)
    (request,) = server.requests
    user_text = request["body"]["messages"][1]["content"]
    assert f'<source n="1" from="{documents[0].resolve()} (Annual leave)">\n' in user_text
    assert "twenty-five days of annual leave" in user_text
    assert "ZEBRA-7731" not in json.dumps(request["body"]) and 'n="2"' not in user_text


def test_no_readable_source_means_the_model_is_not_asked(make_assistant, server, documents):
    assistant = make_assistant(generator="openai", openai_base_url=server.url, openai_model="org-model")
    _ingest(assistant, documents)

    answer = assistant.ask("How many days of annual leave do employees get?", User("bo", ("finance",)))

    assert answer.text == NO_ANSWER and answer.sources == [] and answer.model == "extractive"
    assert server.requests == []


def test_the_answer_names_the_adapter_it_was_written_with(make_assistant, server, documents):
    assistant = make_assistant(
        generator="openai",
        openai_base_url=server.url,
        openai_model="org-model",
        adapter="hr-lora",
        adapter_groups=["staff"],
    )
    _ingest(assistant, documents)
    answer = assistant.ask("How many days of annual leave?", User("ana", ("staff",)))
    assert (answer.model, answer.adapter, answer.to_dict()["adapter"]) == ("org-model", "hr-lora", "hr-lora")
    assert server.requests[0]["body"]["model"] == "hr-lora"
    assert assistant.generator is assistant.generator  # built once


def test_a_served_adapter_answers_only_the_groups_it_was_trained_for(make_assistant, server, documents):
    assistant = make_assistant(generator="openai", openai_base_url=server.url, openai_model="m", adapter="hr-lora")
    _ingest(assistant, documents)
    # Unset ASSISTANT_ADAPTER_GROUPS: nobody said who may read what it learned, so only administrators.
    with pytest.raises(AdapterNotPermitted, match="documents you may not read") as refused:
        assistant.ask("How many days of annual leave?", User("ana", ("staff",)))
    # The user learns neither the adapter nor whose documents it learned; the operator's detail says both.
    assert "hr-lora" not in str(refused.value) and "administrators only" in refused.value.detail
    assert assistant.ask("How many days of annual leave?", User("root", ("admin",))).adapter == "hr-lora"
    assistant.settings.adapter_groups = ("hr",)
    with pytest.raises(AdapterNotPermitted) as refused:
        assistant.ask("How many days of annual leave?", User("ana", ("staff",)))
    assert "hr" not in str(refused.value).split() and "only hr may read" in refused.value.detail
    assert [e["event"] for e in assistant.audit.read(user="ana")] == ["refused", "refused"]
    assert len(server.requests) == 1  # the model never saw a refused question


def test_the_assistant_runs_a_local_model_directory_with_an_adapter(make_assistant, documents, tmp_path):
    from peft import PeftModel

    directory = save_tiny_grok(tmp_path / "tiny-grok")
    save_lora(tiny_grok(), tmp_path / "hr-lora")
    (tmp_path / "hr-lora" / "training.json").write_text(json.dumps({"serves": ["staff"]}))
    assistant = make_assistant(generator="local", model_path=directory, adapter=tmp_path / "hr-lora", max_new_tokens=6)
    _ingest(assistant, documents)

    *pieces, answer = assistant.stream("How many days of annual leave?", User("ana", ("staff",)))

    # Readers see the adapter's name, not where it lies on the server.
    assert (answer.model, answer.adapter) == ("tiny-grok", "hr-lora") and len(answer.sources) == 1
    assert isinstance(assistant.generator.model, PeftModel) and not assistant.generator.uses_chat_template
    assert answer.text == "".join(pieces).strip() and 0 < assistant.generator.last_completion_tokens <= 6


def test_smollm2_answers_a_question_from_its_gguf_file(make_assistant, documents):
    from model.loading import smollm2_gguf

    directory, filename = smollm2_gguf()  # `make install` installs it; missing, this fails saying how to install
    assistant = make_assistant(generator="local", model_path=directory, gguf_file=filename, max_new_tokens=16)
    _ingest(assistant, documents)

    answer = assistant.ask("How many days of annual leave do employees get?", User("ana", ("staff",)))

    assert answer.model == "SmolLM2-135M-Instruct.Q4_1" and answer.text.strip()
    assert assistant.generator.uses_chat_template  # the chat template comes from the GGUF file's metadata
    assert 0 < assistant.generator.last_completion_tokens <= 16


# --- health: whether each generator can answer, without loading a model -----------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_health_of_the_extractive_assistant_and_its_store(make_assistant):
    assistant = make_assistant()
    health = assistant.health()
    assert health.ok and health.store_ok and health.generator_ok
    assert "0 chunks" in health.store_message and "no model" in health.generator_message

    assistant.store.close()
    health = assistant.health()
    assert not health.ok and not health.store_ok and health.generator_ok
    assert "not reachable" in health.store_message and "ASSISTANT_QDRANT_PATH" in health.store_message


def test_health_of_a_local_model_checks_its_directory_without_loading_it(make_assistant, tmp_path):
    missing = make_assistant(generator="local", model_path=tmp_path / "no-such-model").health()
    assert not missing.ok and missing.store_ok and not missing.generator_ok
    assert "no-such-model does not exist" in missing.generator_message
    assert "ASSISTANT_MODEL_PATH" in missing.generator_message

    (tmp_path / "model").mkdir()
    assistant = make_assistant(generator="local", model_path=tmp_path / "model")
    assert assistant.health().ok and assistant._generator is None  # an empty directory: a load would have failed

    assistant.settings.adapter = tmp_path / "no-such-adapter"
    health = assistant.health()
    assert not health.generator_ok and "ASSISTANT_ADAPTER" in health.generator_message


def test_health_of_a_model_server_asks_for_its_model_list(make_assistant, server):
    assistant = make_assistant(
        generator="openai", openai_base_url=server.url + "/", openai_model="org-model", openai_api_key="secret-key"
    )
    health = assistant.health()
    assert health.ok and "answers" in health.generator_message
    (request,) = server.requests
    assert request["path"] == "/v1/models" and request["headers"]["Authorization"] == "Bearer secret-key"


def test_health_of_an_unreachable_model_server_says_what_to_check(make_assistant):
    url = f"http://127.0.0.1:{_closed_port()}/v1"
    started = time.perf_counter()
    health = make_assistant(generator="openai", openai_base_url=url, openai_model="org-model").health()
    assert time.perf_counter() - started < 5
    assert not health.ok and health.store_ok and not health.generator_ok
    assert f"{url}/models" in health.generator_message and "ASSISTANT_OPENAI_BASE_URL" in health.generator_message
