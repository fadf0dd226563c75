"""docker-compose.yml and the Dockerfile name only things the project has.

No Docker engine runs here, so the deployment files are checked against the code: every command,
sub-command, option, environment variable, port and health-check route they name must exist.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from thisme_stac.cli import _register, app
from thisme_stac.settings import ThismeSettings
from thisme_stac.store.sqlite import SQLiteStore
from thisme_stac_api.app import instantiate_api
from thisme_stac_api.config import ApiSettings

ROOT = Path(__file__).parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SERVICES: dict[str, Any] = COMPOSE["services"]


def _expand(value: str) -> str:
    """Compose's ``${VAR:-default}`` and ``${VAR:?message}`` -> the default (or VAR)."""
    return re.sub(
        r"\$\{(\w+)(?::?[-?]([^}]*))?\}",
        lambda m: m.group(2) if m.group(0).find(":-") > 0 else m.group(1),
        value,
    )


def _cli_command(name: str) -> Any:
    _register()
    commands = getattr(typer.main.get_command(app), "commands", {})
    assert name in commands, f"thisme-stac has no command {name!r}"
    return commands[name]


def _check_thisme_stac(argv: list[str]) -> None:
    assert "thisme-stac" in PYPROJECT["project"]["scripts"]
    command = _cli_command(argv[1])
    options = {opt for param in command.params for opt in getattr(param, "opts", [])}
    for arg in argv[2:]:
        if arg.startswith("--"):
            assert arg.split("=")[0] in options, f"thisme-stac {argv[1]} has no option {arg}"


def _check_uvicorn(argv: list[str]) -> None:
    module, _, attribute = argv[1].partition(":")
    factory = getattr(importlib.import_module(module), attribute)
    assert callable(factory)
    assert "--factory" in argv
    assert argv[argv.index("--port") + 1] == "8080"


def _check_pypgstac(argv: list[str]) -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert any(dep.startswith("pypgstac") for dep in extras["pgstac"]), "pgstac extra"
    assert argv[1] == "migrate"


CHECKS = {"thisme-stac": _check_thisme_stac, "uvicorn": _check_uvicorn, "pypgstac": _check_pypgstac}


@pytest.mark.parametrize("service", [s for s in SERVICES if "command" in SERVICES[s]])
def test_every_command_exists(service: str) -> None:
    argv = [_expand(a) for a in SERVICES[service]["command"]]
    assert argv[0] in CHECKS, f"unknown program {argv[0]!r} in service {service}"
    CHECKS[argv[0]](argv)
    assert SERVICES[service].get("build") == ".", "project services build the project's image"


def test_every_environment_variable_is_a_setting() -> None:
    known = {f"THISME_{name.upper()}" for name in ThismeSettings.model_fields}
    known |= {f"THISME_{name.upper()}" for name in ApiSettings.model_fields}
    seen = set()
    for service in SERVICES.values():
        env = service.get("environment", {})
        for name in env:
            if name.startswith("THISME_"):
                assert name in known, f"{name} is not a setting of thisme-stac"
                seen.add(name)
    assert {"THISME_STORE", "THISME_RESTO_URL", "THISME_API_KEY"} <= seen


def test_ports_and_health_checks_match_the_app(tmp_path: Path) -> None:
    api = SERVICES["api"]
    assert _expand(api["ports"][0]) == "8080:8080"
    assert "EXPOSE 8080" in DOCKERFILE
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.M)
    assert cmd is not None
    assert yaml.safe_load(cmd.group(1)) == api["command"]
    SQLiteStore(tmp_path / "s.sqlite").close()
    settings = ApiSettings(store=str(tmp_path / "s.sqlite"), api_key=None)
    routes = set(instantiate_api(settings).app.openapi()["paths"])
    for text in [*api["healthcheck"]["test"], DOCKERFILE]:
        for path in re.findall(r"127\.0\.0\.1:8080(/[\w/]+)", str(text)):
            assert path in routes, f"health check calls {path}, which the API does not serve"
    browser = SERVICES["browser"]
    assert _expand(browser["ports"][0]) == "8081:8080"
    assert browser["command"][browser["command"].index("--port") + 1] == "8080"
    assert browser["depends_on"]["api"]["condition"] == "service_healthy"
    # the image carries the stac-browser build and tells the API where it is
    assert "COPY --from=browser /stac_browser /opt/stac_browser" in DOCKERFILE
    assert "ENV THISME_BROWSER_DIR=/opt/stac_browser" in DOCKERFILE
    assert "bash scripts/build_browser.sh /stac_browser" in DOCKERFILE


def test_services_start_in_order() -> None:
    assert SERVICES["migrate"]["depends_on"]["database"]["condition"] == "service_healthy"
    for name in ("api", "harvester"):
        condition = SERVICES[name]["depends_on"]["migrate"]["condition"]
        assert condition == "service_completed_successfully"
    dsn = _expand(SERVICES["migrate"]["command"][-1])
    store = _expand(COMPOSE["x-store"]["THISME_STORE"])
    assert dsn == store == "postgresql://thisme:thisme@database:5432/thisme"
