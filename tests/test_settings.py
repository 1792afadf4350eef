import os
from pathlib import Path

import pytest

from assistant import Settings


def test_environment_and_yaml_file(tmp_path, monkeypatch):
    config = tmp_path / "assistant.yaml"
    config.write_text("data_dir: /srv/assistant\nchunk_size: 200\ncollection: handbooks\n")
    monkeypatch.setenv("ASSISTANT_CONFIG", str(config))
    monkeypatch.setenv("ASSISTANT_CHUNK_SIZE", "128")
    monkeypatch.setenv("ASSISTANT_QDRANT_URL", "http://qdrant.internal:6333")

    settings = Settings()

    assert settings.chunk_size == 128  # the environment wins over the file
    assert settings.data_dir == Path("/srv/assistant") and settings.collection == "handbooks"
    assert settings.qdrant_url == "http://qdrant.internal:6333" and settings.qdrant_path is None


def test_defaults_keep_everything_under_the_data_directory(monkeypatch):
    for key in list(os.environ):
        if key.startswith("ASSISTANT_"):
            monkeypatch.delenv(key)
    settings = Settings()
    assert settings.data_dir == Path(".assistant")
    assert settings.qdrant_path == str(Path(".assistant") / "qdrant")
    assert settings.users_file == Path(".assistant") / "users.yaml"
    assert settings.audit_log == Path(".assistant") / "audit.jsonl"
    assert settings.runs_dir == Path(".assistant") / "runs"
    assert (settings.auth, settings.portal_address, settings.portal_port, settings.upload_max_mb) == (
        "local",
        "127.0.0.1",
        8501,
        50,
    )


def test_portal_settings_are_checked(monkeypatch):
    monkeypatch.setenv("ASSISTANT_AUTH", "oidc")
    monkeypatch.setenv("ASSISTANT_USERS_FILE", "/etc/assistant/users.yaml")
    settings = Settings(data_dir=Path("/srv/assistant"))
    assert settings.auth == "oidc" and settings.users_file == Path("/etc/assistant/users.yaml")
    assert settings.audit_log == Path("/srv/assistant/audit.jsonl")
    for bad in ({"auth": "ldap"}, {"portal_port": 0}, {"portal_port": 65536}, {"upload_max_mb": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            Settings(**bad)


def test_unknown_keys_and_missing_config_file_are_errors(tmp_path, monkeypatch):
    config = tmp_path / "a.yaml"
    config.write_text("chunk_sise: 100\n")
    monkeypatch.setenv("ASSISTANT_CONFIG", str(config))
    with pytest.raises(ValueError, match="chunk_sise"):
        Settings()
    monkeypatch.setenv("ASSISTANT_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        Settings()


def test_the_packages_force_offline_mode():
    import assistant  # noqa: F401

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_a_missing_embedding_model_names_the_path(tmp_path):
    from retrieval.embedding import LocalEmbedding, ModelNotFound

    with pytest.raises(ModelNotFound, match=str(tmp_path / "minilm") + ".*never downloaded"):
        LocalEmbedding(tmp_path / "minilm")
