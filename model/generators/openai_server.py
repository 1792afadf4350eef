"""An on-prem OpenAI-compatible server (vLLM, SGLang, TGI), streamed: /chat/completions for a model with a chat
template, /completions with the plain prompt for a base model (Grok-1 is released as one).

Which one is a setting; "auto" asks for a chat completion and, when the server answers that the model has no chat
template (vLLM: 400 "... you must provide a chat template if the tokenizer does not define one"), uses completions
from then on.

HTTP goes through httpx, a well-kept HTTP library with streaming responses and separate connect / read timeouts.
The client connects only to the configured base URL's host, by construction: every request goes to one URL built
from it, redirects are refused rather than followed (one could point anywhere), and proxy variables from the
environment are ignored (a proxy is another host that would see the documents).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx

from model.generators import GeneratorError
from model.prompt import PLAIN_STOPS, Prompt

DEFAULT_RETRIES = 2
APIS = ("auto", "chat", "completions")


class _NoChatTemplate(GeneratorError):
    """The server cannot render chat messages for this model: it has no chat template."""


class OpenAICompatibleGenerator:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        adapter: str | None = None,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        stop=(),
        timeout: float = 60.0,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = 0.5,
        api: str = "auto",
    ):
        if not base_url or not model:
            raise ValueError("an OpenAI-compatible server needs its base URL and the model it serves")
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}, not {api!r}")
        self.name = model
        # vLLM serves each LoRA adapter under a name of its own (--lora-modules NAME=PATH): asking for that name as
        # the request's model is how an adapter is chosen.
        self.adapter = adapter
        self.base_url = base_url.rstrip("/")
        self.api = api
        # Completions with the plain prompt: set, or found out by "auto" when the server says there is no chat template.
        self._plain = api == "completions"
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.stop = tuple(stop)
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        headers = {"Accept": "text/event-stream"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        # Connecting is quick on a LAN; a server that is busy prefilling may take the whole timeout to answer.
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=False,
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    @property
    def url(self) -> str:
        return self.base_url + ("/completions" if self._plain else "/chat/completions")

    def request_body(self, prompt: Prompt) -> dict:
        body = {"model": self.adapter or self.name, "stream": True}
        if self._plain:
            # A base model continues the text after "Answer:"; the server stops it where it would write the next
            # question, as the local generator does.
            body["prompt"] = prompt.plain()
            stops = [*PLAIN_STOPS, *self.stop]
        else:
            body["messages"] = prompt.messages()
            stops = list(self.stop)
        body.update(max_tokens=self.max_new_tokens, temperature=self.temperature)
        if stops:
            body["stop"] = stops
        return body

    def stream(self, prompt: Prompt) -> Iterator[str]:
        try:
            yield from self._stream(prompt)
        except _NoChatTemplate as error:
            if self.api != "auto":
                raise GeneratorError(
                    f"{error}: the served model has no chat template (a base model such as Grok-1): set the "
                    "generator's API to completions or auto"
                ) from error
            self._plain = True
            yield from self._stream(prompt)

    def _stream(self, prompt: Prompt) -> Iterator[str]:
        body = self.request_body(prompt)
        attempt = 0
        while True:
            started = False  # once text has reached the user, a retry would repeat it: errors end the answer
            try:
                with self._client.stream("POST", self.url, json=body) as response:
                    if response.status_code >= 500 and attempt < self.retries:
                        attempt += 1
                        time.sleep(self.backoff_s * attempt)
                        continue
                    self._check(response)
                    for piece in _sse_text(response, self.url):
                        started = True
                        yield piece
                return
            except (httpx.ConnectError, httpx.ConnectTimeout) as error:
                if attempt < self.retries:
                    attempt += 1
                    time.sleep(self.backoff_s * attempt)
                    continue
                raise GeneratorError(
                    f"cannot reach the model server at {self.url} ({type(error).__name__}) after {attempt + 1} tries: "
                    "check that it runs and that the base URL is right"
                ) from error
            except httpx.TimeoutException as error:
                where = "in the middle of its answer" if started else "before answering"
                raise GeneratorError(
                    f"the model server at {self.url} went silent {where} for more than {self.timeout:g} s: "
                    "it may be overloaded; raise the timeout or ask again"
                ) from error
            except httpx.HTTPError as error:
                raise GeneratorError(
                    f"the connection to the model server at {self.url} failed: {type(error).__name__}: {error}"
                ) from error

    def _check(self, response: httpx.Response) -> None:
        if response.status_code == 200:
            return
        if response.is_redirect:
            raise GeneratorError(
                f"the model server at {self.url} redirected to {response.headers.get('location')!r}; redirects are "
                "not followed (the documents go only to the configured host): configure the final URL instead"
            )
        response.read()
        detail = response.text.strip()[:500]
        if response.status_code == 400 and not self._plain and "chat template" in detail.lower():
            raise _NoChatTemplate(f"the model server at {self.url} answered 400: {detail}")
        hint = {
            401: "check the API key",
            403: "check the API key",
            404: f"check the base URL, and that the server serves a model or adapter named {self.adapter or self.name!r}",
        }.get(response.status_code, "")
        raise GeneratorError(
            f"the model server at {self.url} answered {response.status_code} {response.reason_phrase}: {detail}"
            + (f" ({hint})" if hint else "")
        )


def _sse_text(response: httpx.Response, url: str) -> Iterator[str]:
    """The text pieces of a streamed (chat) completion: server-sent events, one JSON chunk per `data:` event."""
    for data in _sse_events(response.iter_lines()):
        if data == "[DONE]":
            return
        try:
            chunk = json.loads(data)
        except ValueError as error:
            raise GeneratorError(f"the model server at {url} sent an event that is not JSON: {data[:200]!r}") from error
        if "error" in chunk:  # vLLM reports a failure mid-stream as an event
            error = chunk["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise GeneratorError(f"the model server at {url} failed while answering: {message}")
        for choice in chunk.get("choices") or ():
            # A chat chunk carries its text in delta.content, a completion chunk in text.
            text = (choice.get("delta") or {}).get("content") if "delta" in choice else choice.get("text")
            if text:
                yield text


def _sse_events(lines: Iterator[str]) -> Iterator[str]:
    """The data of each server-sent event: `data:` lines joined by newlines, an event ending at a blank line."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))  # one space after the colon is part of the syntax
        # other fields (event:, id:, retry:) and comments (":" keep-alives) carry nothing for us
    if data:
        yield "\n".join(data)
