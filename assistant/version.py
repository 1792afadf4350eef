"""The installed assistant's version: what the API's document states and what an evaluation run records."""

from importlib.metadata import PackageNotFoundError, version


def installed_version() -> str:
    try:
        return version("onprem-assistant")
    except PackageNotFoundError:  # run from a source tree that was not installed
        return "0"
