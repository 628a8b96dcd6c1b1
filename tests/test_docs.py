"""Docs that cannot go stale: every endpoint, command and setting is documented."""

from __future__ import annotations

import re
import types
from pathlib import Path

import pytest

from metrocloud.api.app import create_app
from metrocloud.cli import app as cli_app
from metrocloud.services.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
API_DOC = (ROOT / "docs" / "api.md").read_text()
OPS_DOC = (ROOT / "docs" / "operations.md").read_text()
README = (ROOT / "README.md").read_text()


def _operations() -> list[tuple[str, str]]:
    schema = create_app(types.SimpleNamespace()).openapi()  # type: ignore[arg-type]
    return sorted((m.upper(), p) for p, ops in schema["paths"].items() for m in ops)


@pytest.mark.parametrize(("method", "path"), _operations())
def test_endpoint_is_documented(method: str, path: str) -> None:
    assert f"`{method} {path}" in API_DOC, f"{method} {path} is missing from docs/api.md"


def _commands() -> list[str]:
    names = [c.name or c.callback.__name__ for c in cli_app.registered_commands]
    for group in cli_app.registered_groups:
        names += [f"{group.name} {c.name}" for c in group.typer_instance.registered_commands]
    return sorted(names)


@pytest.mark.parametrize("command", _commands())
def test_command_is_documented(command: str) -> None:
    assert f"`metrocloud {command}" in OPS_DOC, f"metrocloud {command} missing in operations.md"


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_setting_is_documented(field: str) -> None:
    if field in ("host", "port", "public_base_url", "db_schema", "data_dir", "db"):
        # command options (--host, --port, --data-dir, --db) or documented with them
        assert (
            f"--{field.replace('_', '-')}" in OPS_DOC
            or f"METROCLOUD_{field.upper()}" in (OPS_DOC)
            or field == "public_base_url"
        )
        return
    assert f"METROCLOUD_{field.upper()}" in OPS_DOC, f"setting {field} missing in operations.md"


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    blocks = re.findall(r"```bash\n(.*?)```", README, re.S)
    setup = [b.strip() for b in blocks[:2]]
    assert setup[0].endswith("metrocloud demo") and "pip install" in setup[0]
    assert setup[1] == "./scripts/test"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "exec ./scripts/test" in ci
