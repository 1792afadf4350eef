"""The shipped compose file keeps data services off the network and telemetry off."""

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
