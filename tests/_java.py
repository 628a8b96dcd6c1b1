"""A Java runtime for the Spark tests: mandatory when CI=true, else skipped with the reason."""

from __future__ import annotations

import os
import shutil
import subprocess
from functools import cache

import pytest


@cache
def java_missing() -> str | None:
    """None if a Java 17+ runtime answers, else why not (Spark 4 needs Java 17)."""
    java = shutil.which("java") or (
        os.path.join(os.environ["JAVA_HOME"], "bin", "java")
        if os.environ.get("JAVA_HOME")
        else None
    )
    if java is None or not os.path.exists(java):
        return "no java on PATH and no JAVA_HOME"
    try:
        out = subprocess.run(
            [java, "-version"], check=False, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{java} -version failed: {exc}"
    text = out.stderr + out.stdout
    try:
        major = int(text.split('"')[1].split(".")[0])
    except (IndexError, ValueError):
        return f"cannot read the version of {java}: {text[:80]!r}"
    return None if major >= 17 else f"{java} is Java {major}; Spark 4 needs 17 or newer"


def require_java() -> None:
    reason = java_missing()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"Spark tests need Java 17+ ({reason}); they are mandatory when CI=true")
    pytest.skip(f"Spark tests need Java 17+ ({reason}); skipped outside CI only (CI != 'true')")
