"""Schemathesis generates requests from the API's own OpenAPI document (valid ones and broken ones) and checks each
answer: never a server error, and every answer in a documented status, content type and schema.

Each operation gets its own test through `operation.as_strategy()` and hypothesis: schemathesis' lazy pytest loader
(`schemathesis.pytest.from_fixture`, needed because the app is built around a fixture's Assistant) writes pytest's
private `node._nodeid`, which pytest 9 no longer has.
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from assistant.api.app import create_app
from assistant.api.keys import ApiKeyStore

OPERATIONS = [
    ("POST", "/v1/ask"),
    ("POST", "/v1/search"),
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/documents"),
    ("POST", "/v1/ingest"),
    ("DELETE", "/v1/documents/{doc_id}"),
    ("GET", "/v1/documents/{doc_id}/original"),
    ("GET", "/v1/documents/{doc_id}/pages/{page}"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]
EXAMPLES = 25  # per operation, valid and invalid together (about 200 requests in all, 15 s on 2 cores)

# 413 is a refusal as good as 422: a request may be valid by the schema and still larger than the body limit (fifty
# turns of history at their longest are), and it is answered 413 as documented. Schemathesis' default lists omit it.
CONFIG = SchemathesisConfig.from_dict(
    {
        "checks": {
            "negative_data_rejection": {
                "expected-statuses": [
                    "400",
                    "401",
                    "403",
                    "404",
                    "405",
                    "406",
                    "409",
                    "413",
                    "415",
                    "422",
                    "428",
                    "429",
                    "5xx",
                ]
            },
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "413", "429", "5xx"]
            },
        }
    }
)


@pytest.fixture
def served(make_assistant, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "leave.md").write_text("# Leave\n\nEvery employee gets 27 days of annual leave.\n")
    (docs / "salary.md").write_text("# Salaries\n\nSalaries are reviewed every April.\n")
    # The rate limit is lifted: schemathesis sends requests as fast as it can, and 429 is tested in test_api.py.
    assistant = make_assistant(api_rate_limit="100000/minute")
    assistant.ingest([docs / "leave.md"], groups=["staff"])
    assistant.ingest([docs / "salary.md"], groups=["hr"])
    keys = ApiKeyStore(assistant.settings.api_keys_file)
    # An administrator reaches the most code: uploads for any group, deletions that look the document up, metrics.
    key = keys.add("fuzzer", ["admin"])
    app = create_app(assistant, keys, assistant.settings)
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=CONFIG), key


def test_the_list_below_is_every_operation_of_the_document(served):
    schema, _ = served
    listed = [(result.ok().method.upper(), result.ok().path) for result in schema.get_all_operations()]
    assert sorted(listed) == sorted(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_request_from_the_openapi_document_gets_a_server_error(served, method, path):
    schema, key = served
    operation = schema[path][method]
    requests = st.one_of(operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE))

    excluded = {
        # One rule of chat completions is beyond JSON Schema: the conversation must end with the user's question
        # (OpenAI would continue an assistant's message; retrieval has nothing to answer then). Such a request is
        # answered 422 with that reason (test_api.py), which this check would count as a valid request refused.
        "/v1/chat/completions": [positive_data_acceptance],
        # A multipart form has no types on the wire: a group "712" generated as an integer, or a file's bytes as one,
        # are the same bytes as the valid string, so this check would count a valid upload as invalid data accepted.
        "/v1/ingest": [negative_data_rejection],
    }.get(path, [])

    @given(requests)
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def answers_as_documented(case):
        case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, excluded_checks=excluded)

    answers_as_documented()
