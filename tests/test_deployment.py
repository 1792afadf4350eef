"""The shipped compose file keeps data services off the network, and every component's telemetry is off, each
told its own way: Streamlit by its config file, Qdrant by compose, the Hugging Face libraries by the packages that
use them and by the image."""

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_compose_pins_images_disables_telemetry_and_isolates_the_network():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    qdrant = compose["services"]["qdrant"]
    assert ":" in qdrant["image"] and not qdrant["image"].endswith(":latest")
    assert qdrant["environment"]["QDRANT__TELEMETRY_DISABLED"] == "true"
    assert "healthcheck" in qdrant
    assert compose["networks"]["internal"]["internal"] is True
    for service in compose["services"].values():
        assert service["networks"] == ["internal"]
        assert "ports" not in service
    assert compose["services"]["assistant"]["environment"]["ASSISTANT_QDRANT_URL"] == "http://qdrant:6333"


def test_the_image_installs_torch_through_the_constraints_and_runs_as_a_user():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-c constraints.txt torch==2.13.0" in dockerfile
    assert "\nUSER assistant\n" in dockerfile
    assert "torch==2.13.0" in (ROOT / "constraints.txt").read_text()


HUB_OFF = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def test_streamlit_gathers_no_usage_statistics():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["browser"]["gatherUsageStats"] is False


def test_the_image_keeps_the_hub_offline_and_every_tool_quiet():
    # ENV lines, their continuations joined: NAME=value pairs.
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(re.findall(r"^ENV (.*)$", dockerfile, flags=re.MULTILINE))))
    assert {name: env.get(name) for name in HUB_OFF} == HUB_OFF
    assert env.get("STREAMLIT_BROWSER_GATHER_USAGE_STATS") == "false"  # the image carries no .streamlit/config.toml
    assert env.get("DO_NOT_TRACK") == "1"


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
