"""The shipped deployment: docker-compose.yml, the Dockerfile, .dockerignore and .env.example.

Docker's engine does not run where the tests run, so nothing here starts a container. The compose file is validated
against the Compose Specification's JSON schema (tests/data/README.md says where it comes from), then checked against
the rules the deployment promises: exact image versions, health checks, data services on a network with no route
out, ports published only by the portal and the API on an address the operator sets, no secret in the file,
telemetry off, a non-root image built from the pinned constraints. Where a piece of it is a command that runs
(vLLM's shell line, the health probes, the fine-tuning launch, the assistant's settings), it is run here against
stand-ins: a fake `vllm` executable, a loopback HTTP server, the real argument parsers and settings classes.

Every component's telemetry is off, each told its own way: Streamlit by its config file and the image, Qdrant and
vLLM by compose, the Hugging Face libraries by the packages that use them and by the image.
"""

import json
import os
import re
import stat
import subprocess
import sys
import threading
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
DOCKERFILE = (ROOT / "Dockerfile").read_text()
ENV_EXAMPLE = (ROOT / ".env.example").read_text()
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}; $${...} is a literal for the shell.
REFERENCE = re.compile(r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")
SECRET_NAME = re.compile(r"KEY|SECRET|PASSWORD|TOKEN")
ENV_LINE = re.compile(r"^(?P<commented>#\s*)?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")
APP_SERVICES = ("portal", "api", "assistant", "backup", "finetune")  # built from this repository's Dockerfile
DATA_SERVICES = ("qdrant", "vllm")


def compose() -> dict:
    return yaml.safe_load(COMPOSE_TEXT)


def env_example() -> dict[str, str]:
    """The variables .env.example sets (commented-out optional ones excluded), as Compose would read them."""
    found = {}
    for line in ENV_EXAMPLE.splitlines():
        match = ENV_LINE.match(line)
        if match and not match["commented"]:
            found[match["name"]] = match["value"]
    return found


# What an operator fills in after `cp .env.example .env`.
OPERATOR = {"QDRANT_API_KEY": "q" * 64, "VLLM_API_KEY": "v" * 64, "PORTAL_PUBLIC_HOST": "assistant.example.org"}


def interpolate(value, env: dict[str, str]):
    """Compose's interpolation of the whole file, as the specification defines it (enough of it for this file)."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match):
        name, op, arg = match["name"], match["op"], match["arg"]
        current = env.get(name)
        if op in (":?", "?") and (current is None or (op == ":?" and current == "")):
            raise KeyError(f"{name} is required: {arg}")
        if op == ":-" and not current:
            return arg
        if op == "-" and current is None:
            return arg
        return current or ""

    return REFERENCE.sub(substitute, value).replace("$$", "$")


def resolved(extra: dict[str, str] | None = None) -> dict:
    return interpolate(compose(), {**env_example(), **OPERATOR, **(extra or {})})


# --- the file itself -----------------------------------------------------------------------------------------------


def test_the_compose_file_is_valid_under_the_compose_specification():
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = [f"{error.json_path}: {error.message}" for error in validator.iter_errors(compose())]
    assert errors == []
    # The schema is strict where it matters: a misspelt key is an error, and profiles are part of the vocabulary.
    misspelt = compose()
    misspelt["services"]["qdrant"]["healtcheck"] = misspelt["services"]["qdrant"].pop("healthcheck")
    assert not validator.is_valid(misspelt)
    assert "profiles" in schema["$defs"]["service"]["properties"]


def test_every_image_is_an_exact_version():
    services = compose()["services"]
    exact = re.compile(r"^[a-z0-9][a-z0-9./_-]*:v?\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?$")
    for name, service in services.items():
        assert exact.match(service["image"]), f"{name}: {service['image']} is not an exact version"
    # The image built here is tagged with the project's version: an upgrade builds a new tag beside the old one.
    assert {services[name]["image"] for name in APP_SERVICES} == {f"onprem-assistant:{PROJECT['version']}"}
    assert all(services[name]["build"] == "." for name in APP_SERVICES)
    (base,) = re.findall(r"^FROM (\S+)$", DOCKERFILE, flags=re.MULTILINE)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base)


def test_long_running_services_have_health_checks_and_jobs_start_only_when_asked():
    services = compose()["services"]
    long_running = {name for name, service in services.items() if service.get("restart") == "unless-stopped"}
    assert long_running == {"qdrant", "portal", "api", "vllm"}
    for name in long_running:
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1 and not check.get("disable")
        assert {"interval", "timeout", "retries", "start_period"} <= set(check)
    for name in set(services) - long_running:
        # A one-shot: `docker compose up` does not start it, and it is not restarted when it ends.
        assert services[name]["restart"] == "no" and services[name]["profiles"], name
    assert services["vllm"]["profiles"] == ["gpu"] and services["finetune"]["profiles"] == ["finetune"]
    for name in ("portal", "api", "assistant", "backup"):
        assert services[name]["depends_on"] == {"qdrant": {"condition": "service_healthy"}}


def test_data_services_sit_only_on_a_network_with_no_route_out():
    document = compose()
    networks, services = document["networks"], document["services"]
    internal = {name for name, network in networks.items() if network.get("internal") is True}
    assert internal == {"internal"}
    for name in DATA_SERVICES:
        assert set(services[name]["networks"]) <= internal, name
    for name, service in services.items():
        assert "internal" in service["networks"], name
        assert "network_mode" not in service, name
    # The other network exists only for publishing: the two services users reach, and with no masquerading out.
    outside = {name for name, service in services.items() if set(service["networks"]) - internal}
    assert outside == {"portal", "api"}
    (published,) = set(networks) - internal
    assert resolved()["networks"][published]["driver_opts"] == {
        "com.docker.network.bridge.enable_ip_masquerade": "false"
    }
    assert env_example()["PUBLISHED_EGRESS"] == "false"


def test_only_the_portal_and_the_api_publish_ports_on_an_address_the_operator_sets_loopback_by_default():
    services = compose()["services"]
    assert {name for name, service in services.items() if "ports" in service} == {"portal", "api"}
    binding = re.compile(r"^\$\{(?P<bind>[A-Z]+_BIND):-127\.0\.0\.1\}:\$\{(?P<port>[A-Z]+_PORT):-(\d+)\}:(\d+)$")
    for name in ("portal", "api"):
        (port,) = services[name]["ports"]
        match = binding.match(port)
        assert match, f"{name}: {port}"
        assert env_example()[match["bind"]] == "127.0.0.1"
        assert "expose" not in services[name]
    # Nothing published is reachable before the operator says where: the defaults resolve to loopback.
    assert resolved()["services"]["portal"]["ports"] == ["127.0.0.1:8501:8501"]
    assert resolved()["services"]["api"]["ports"] == ["127.0.0.1:8000:8000"]


def _environments(document: dict):
    for name, service in document["services"].items():
        yield name, service.get("environment") or {}


def test_no_secret_is_written_in_the_file_or_the_example():
    secrets_seen = set()
    for service, environment in _environments(compose()):
        assert isinstance(environment, dict), f"{service}: environment as a mapping, so each value can be checked"
        for name, value in environment.items():
            if SECRET_NAME.search(name):
                secrets_seen.add(name)
                # Required where set at all: a missing key stops Compose instead of starting an open server.
                assert value is None or re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", value), f"{service}: {name}"
    assert {"QDRANT__SERVICE__API_KEY", "ASSISTANT_QDRANT_API_KEY", "API_KEY", "ASSISTANT_OPENAI_API_KEY"} <= (
        secrets_seen
    )
    # The one secret on a command line is left to the container's shell, which reads it from the environment.
    assert '--api-key "$${API_KEY}"' in compose()["services"]["vllm"]["command"][0]
    example = env_example()
    for name in ("QDRANT_API_KEY", "VLLM_API_KEY"):
        assert example[name] == ""
        with pytest.raises(KeyError, match=name):
            interpolate(compose(), {**example, **{k: v for k, v in OPERATOR.items() if k != name}})


def test_telemetry_is_off_in_every_service():
    services = compose()["services"]
    assert services["qdrant"]["environment"]["QDRANT__TELEMETRY_DISABLED"] == "true"
    vllm = services["vllm"]["environment"]
    assert {name: vllm.get(name) for name in ("VLLM_NO_USAGE_STATS", "DO_NOT_TRACK", *HUB_OFF)} == {
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        **HUB_OFF,
    }
    # The portal, the API and the jobs run the image, which turns Streamlit's statistics and the hub off (below),
    # and the portal reads the repository's Streamlit config, copied into the image.
    assert "COPY .streamlit/config.toml ./.streamlit/config.toml" in DOCKERFILE
    assert re.search(r"^WORKDIR /app$", DOCKERFILE, flags=re.MULTILINE)
    assert services["portal"]["entrypoint"][:3] == ["streamlit", "run", "ui/app.py"]
    # Named, so Streamlit never looks the host's public address up for a browser origin it does not know.
    assert services["portal"]["environment"]["STREAMLIT_BROWSER_SERVER_ADDRESS"].startswith("${PORTAL_PUBLIC_HOST:?")


def test_env_example_lists_exactly_the_variables_the_compose_file_reads_each_with_a_comment():
    referenced = {match["name"] for match in REFERENCE.finditer(COMPOSE_TEXT)}
    # Passed through by name (a null value): set in the container only when set in .env.
    for _, environment in _environments(compose()):
        referenced |= {name for name, value in environment.items() if value is None}
    lines = ENV_EXAMPLE.splitlines()
    listed = {}
    for number, line in enumerate(lines):
        match = ENV_LINE.match(line)
        if not match:
            continue
        listed[match["name"]] = match
        # Each variable, or the run of variables it belongs to, is explained by the comment above it.
        above = number - 1
        while above >= 0 and ENV_LINE.match(lines[above]):
            above -= 1
        assert above >= 0 and lines[above].startswith("# "), f"{match['name']} has no comment"
    assert set(listed) == referenced
    # The pass-through ones are commented out: an empty value is not the same as unset for them.
    for _, environment in _environments(compose()):
        for name, value in environment.items():
            if value is None:
                assert listed[name]["commented"], name


def test_the_services_settings_are_the_assistants_and_its_generator_is_vllm_when_asked():
    from assistant.settings import Settings

    services = resolved({"ASSISTANT_GENERATOR": "openai"})["services"]
    for name in APP_SERVICES:
        environment = services[name]["environment"]
        names = {key.removeprefix("ASSISTANT_").lower() for key in environment if key.startswith("ASSISTANT_")}
        assert names <= set(Settings.model_fields), f"{name}: {names - set(Settings.model_fields)}"
    environment = {key: value for key, value in services["api"]["environment"].items() if value is not None}
    variables = {key: value for key, value in environment.items() if key.startswith("ASSISTANT_")}
    script = "import json, sys; from assistant.settings import Settings; s = Settings(); print(json.dumps(" + (
        "[s.qdrant_url, s.qdrant_api_key.get_secret_value(), s.generator, s.openai_base_url, s.openai_model, "
        "s.openai_api_key.get_secret_value(), str(s.data_dir), s.api_address, s.api_port]))"
    )
    clean = {key: value for key, value in os.environ.items() if not key.startswith("ASSISTANT_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env={**clean, **variables}, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == [
        "http://qdrant:6333",
        OPERATOR["QDRANT_API_KEY"],
        "openai",
        "http://vllm:8000/v1",
        "grok-1",
        OPERATOR["VLLM_API_KEY"],
        "/data",
        "0.0.0.0",
        8000,
    ]
    # The same key opens Qdrant and is presented by the assistant; the same name is served by vLLM and asked for.
    assert services["qdrant"]["environment"]["QDRANT__SERVICE__API_KEY"] == OPERATOR["QDRANT_API_KEY"]
    assert services["vllm"]["environment"]["SERVED_MODEL_NAME"] == "grok-1"


def test_the_commands_the_services_run_exist():
    from assistant.cli import _parser as assistant_parser

    services = resolved()["services"]
    assert (ROOT / services["portal"]["entrypoint"][2]).is_file()
    assert "--server.address=0.0.0.0" in services["portal"]["entrypoint"]
    assert assistant_parser().parse_args(services["api"]["command"]).command == "serve"
    assert services["backup"]["entrypoint"] == ["python", "scripts/backup.py"]
    assert "COPY scripts/backup.py ./scripts/backup.py" in DOCKERFILE


# --- what runs inside the containers --------------------------------------------------------------------------------


def _fake_vllm(tmp_path: Path) -> Path:
    binary = tmp_path / "bin" / "vllm"
    binary.parent.mkdir()
    binary.write_text(f"#!{sys.executable}\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    return binary.parent


def _vllm_argv(tmp_path: Path, operator: dict, models: Path | None = None) -> list[str]:
    """The arguments the vllm service's command hands to `vllm` (a fake that prints them)."""
    vllm = resolved(operator)["services"]["vllm"]
    assert vllm["entrypoint"] == ["/bin/sh", "-c"]
    environment = {key: str(value) for key, value in vllm["environment"].items()}
    if models is not None:
        environment["MODELS"] = str(models)  # where /models is mounted in the container
    path = f"{_fake_vllm(tmp_path)}:{os.environ['PATH']}"
    done = subprocess.run(
        ["/bin/sh", "-c", vllm["command"][0]],
        env={"PATH": path, **environment},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("modules", "expected"),
    [
        ("", None),
        (
            "staff=/runs/grok1-staff/vllm hr=/runs/grok1-hr/vllm",
            ["staff=/runs/grok1-staff/vllm", "hr=/runs/grok1-hr/vllm"],
        ),
    ],
    ids=["base-model-only", "two-adapters"],
)
def test_vllm_serves_the_mounted_model_over_the_gpus_with_lora(tmp_path, modules, expected):
    vllm = resolved({"VLLM_LORA_MODULES": modules})["services"]["vllm"]  # for its mounts and devices
    argv = _vllm_argv(tmp_path, {"VLLM_LORA_MODULES": modules, "VLLM_EXTRA_ARGS": "--enforce-eager"})
    assert argv[:2] == ["serve", "/models/grok-1-vllm-int8"]  # the 8-bit serving directory: fits 8 x 80 GB
    flags = {
        flag: value
        for flag, value in zip(argv[2:], argv[3:] + [""], strict=True)
        if flag.startswith("--") and not value.startswith("--")
    }
    assert flags["--served-model-name"] == "grok-1" and flags["--api-key"] == OPERATOR["VLLM_API_KEY"]
    assert flags["--tensor-parallel-size"] == "8" and flags["--max-model-len"] == "8192"
    assert flags["--dtype"] == "bfloat16" and flags["--gpu-memory-utilization"] == "0.9"
    assert flags["--max-lora-rank"] == "16" and "--enforce-eager" in argv
    assert "--trust-remote-code" not in argv  # no such directory here: nothing is trusted by default
    assert "--enable-lora" in argv
    if expected is None:
        assert "--lora-modules" not in argv
    else:
        start = argv.index("--lora-modules") + 1
        assert argv[start : start + len(expected)] == expected
    assert "/models:ro" in " ".join(vllm["volumes"]) and "/runs:ro" in " ".join(vllm["volumes"])
    (device,) = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}


@pytest.mark.parametrize(("model_type", "trusted"), [("grok-1-serving", True), ("llama", False)])
def test_remote_code_is_trusted_only_for_the_projects_own_serving_directory(tmp_path, model_type, trusted):
    from model.grok1.serving import MODEL_TYPE

    directory = tmp_path / "models" / "grok-1-vllm-int8"
    directory.mkdir(parents=True)
    # Written as the export writes it (indented, keys sorted), which is what the command looks for.
    (directory / "config.json").write_text(json.dumps({"model_type": model_type, "vocab_size": 8}, indent=2))
    argv = _vllm_argv(tmp_path, {}, models=tmp_path / "models")
    assert argv[1] == str(directory)
    assert ("--trust-remote-code" in argv) is trusted
    assert MODEL_TYPE == "grok-1-serving"


def test_the_finetune_job_launches_the_real_train_command_on_the_mounted_paths():
    from finetune.cli import build_parser

    job = resolved()["services"]["finetune"]
    accelerate_config, command = job["entrypoint"][3], job["entrypoint"][6]
    assert job["entrypoint"][:3] == ["accelerate", "launch", "--config_file"]
    assert job["entrypoint"][4:] == ["-m", "finetune.cli", "train"]
    accelerate = yaml.safe_load((ROOT / accelerate_config).read_text())
    assert accelerate["distributed_type"] == "FSDP"
    args = build_parser().parse_args([command, *job["command"]])
    assert args.command == "train"
    run = yaml.safe_load((ROOT / args.config).read_text())
    mounts = {}
    for volume in job["volumes"]:
        target, _, mode = volume.split(":", 1)[1].partition(":")
        mounts[target] = mode
    # The shipped run config's paths are inside the job's mounts: models read-only, data and runs writable.
    for path, writable in ((run["model"]["path"], False), (run["data"], True), (run["output_dir"], True)):
        (mount,) = [target for target in mounts if path == target or path.startswith(target + "/")]
        assert (mounts[mount] != "ro") == writable, path
    assert job["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


class _Probe(BaseHTTPRequestHandler):
    # Each server gets a subclass with its own (start below).
    ready: ClassVar[dict[str, int]] = {}
    seen: ClassVar[list[str]] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.seen.append(self.path)
        status = self.ready.get(self.path, 404)
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@pytest.fixture
def probe_server():
    servers = []

    def start(ready):
        handler = type("Handler", (_Probe,), {"ready": ready, "seen": []})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.server_address[1], handler

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_the_health_probes_pass_on_ready_and_fail_otherwise(probe_server, monkeypatch):
    services = compose()["services"]
    port, handler = probe_server({"/readyz": 200, "/_stcore/health": 200, "/health": 200})
    down, down_handler = probe_server({"/readyz": 503, "/_stcore/health": 503, "/health": 503})
    elsewhere, elsewhere_handler = probe_server({})
    # A proxy injected into the container's environment must not carry the probe off to another host.
    clean = {key: value for key, value in os.environ.items() if key.lower() not in ("no_proxy",)}
    proxied = {**clean, "http_proxy": f"http://127.0.0.1:{elsewhere}", "HTTP_PROXY": f"http://127.0.0.1:{elsewhere}"}
    for name, internal_port in (("portal", 8501), ("api", 8000), ("vllm", 8000)):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] in ("python", "python3")
        for target, expected in ((port, 0), (down, 1)):
            argv = [sys.executable, *test[2:-1], test[-1].replace(f":{internal_port}/", f":{target}/")]
            done = subprocess.run(argv, env=proxied, capture_output=True, text=True, timeout=60, check=False)
            assert (done.returncode == 0) == (expected == 0), f"{name}: {done.stderr[-500:]}"
    assert elsewhere_handler.seen == []
    assert set(handler.seen) == {"/_stcore/health", "/readyz", "/health"}

    # Qdrant's image has bash and no curl: the probe is an HTTP request written by hand.
    test = services["qdrant"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "bash", "-c"]
    for target, expected in ((port, 0), (down, 1)):
        script = test[3].replace("/6333", f"/{target}")
        assert subprocess.run(["bash", "-c", script], timeout=30, check=False).returncode == expected
    assert "/readyz" in down_handler.seen


# --- the image ----------------------------------------------------------------------------------------------------


def test_the_image_installs_torch_through_the_constraints_and_runs_as_a_user():
    constraints = (ROOT / "constraints.txt").read_text()
    (pinned,) = re.findall(r"^torch==\S+$", constraints, flags=re.MULTILINE)
    assert pinned in PROJECT["dependencies"]
    torch_first = DOCKERFILE.index(f"pip install --no-cache-dir -c constraints.txt {pinned}")
    project = DOCKERFILE.index("pip install --no-cache-dir -c constraints.txt .")
    assert torch_first < project
    assert DOCKERFILE.index("COPY constraints.txt") < torch_first
    (user,) = re.findall(r"^USER (\S+)$", DOCKERFILE, flags=re.MULTILINE)
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) >= 1000 and gid.isdigit() and int(gid) != 0
    assert f"--uid {uid}" in DOCKERFILE
    # USER is the last word on who runs: nothing after it switches back.
    assert "USER" not in DOCKERFILE[DOCKERFILE.index(f"USER {user}") + 5 :]
    assert not re.search(r"^VOLUME", DOCKERFILE, flags=re.MULTILINE)


HUB_OFF = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def test_streamlit_gathers_no_usage_statistics():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["browser"]["gatherUsageStats"] is False


def test_the_image_keeps_the_hub_offline_and_every_tool_quiet():
    # ENV lines, their continuations joined: NAME=value pairs.
    dockerfile = DOCKERFILE.replace("\\\n", " ")
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(re.findall(r"^ENV (.*)$", dockerfile, flags=re.MULTILINE))))
    assert {name: env.get(name) for name in HUB_OFF} == HUB_OFF
    assert env.get("STREAMLIT_BROWSER_GATHER_USAGE_STATS") == "false"  # also for a portal started elsewhere
    assert env.get("DO_NOT_TRACK") == "1"


def _dockerignore_excludes(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: end + 1]) for end in range(len(parts))]
    excluded = False
    for exception, pattern in rules:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            excluded = not exception
    return excluded


def _dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = "".join(
            ".*" if token == "**" else "[^/]*" if token == "*" else "[^/]" if token == "?" else re.escape(token)
            for token in re.findall(r"\*\*|\*|\?|[^*?]+", pattern)
        )
        rules.append((exception, re.compile(regex.replace(".*/", "(.*/)?"))))
    return rules


def test_the_build_context_carries_the_code_and_nothing_else():
    rules = _dockerignore_rules()
    kept = ["constraints.txt", "pyproject.toml", "assistant/cli.py", "ui/app.py", "finetune/configs/smollm2-cpu.yaml"]
    kept += [".streamlit/config.toml", "scripts/backup.py"]
    left_out = [".venv/bin/python", ".assistant/qdrant/documents/wal/open-1", "tests/test_access.py", ".env"]
    left_out += ["samples/hr/salary-bands-and-reviews.pdf", ".streamlit/secrets.toml", "backups/x/manifest.json"]
    left_out += ["models/grok-1-hf/model-00001.safetensors", "runs/grok1-staff/adapter/adapter.bin", ".git/HEAD"]
    left_out += ["assistant/__pycache__/cli.cpython-311.pyc", "scripts/make_samples.py", "benchmarks/README.md"]
    assert [path for path in kept if _dockerignore_excludes(path, rules)] == []
    assert [path for path in left_out if not _dockerignore_excludes(path, rules)] == []
    # Every source the Dockerfile copies is in the context (else the build fails), and nothing copies it whole.
    for source in re.findall(r"^COPY (.+) \S+$", DOCKERFILE, flags=re.MULTILINE):
        for path in source.split():
            assert path != "." and not _dockerignore_excludes(path, rules), path
            assert (ROOT / path).exists(), path


def test_importing_retrieval_or_model_forces_the_hub_offline_whatever_the_environment_says():
    # A fresh interpreter whose environment turns every switch back on: each package forces them off as it is
    # imported, before any Hugging Face library reads them (they read them once, at their own import).
    script = """
import json, os, sys
names, seen = sys.argv[1:], {}
for package in ("retrieval", "model"):
    os.environ.update({name: "0" for name in names})
    __import__(package)
    seen[package] = {name: os.environ[name] for name in names}
from huggingface_hub import constants
seen["hub"] = [constants.HF_HUB_OFFLINE, constants.HF_HUB_DISABLE_TELEMETRY]
print(json.dumps(seen))
"""
    env = {**os.environ, **{name: "0" for name in HUB_OFF}}
    command = [sys.executable, "-c", script, *HUB_OFF]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"retrieval": HUB_OFF, "model": HUB_OFF, "hub": [True, True]}
