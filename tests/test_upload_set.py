""".gcloudignore uploads the function's source and nothing else."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import pathspec
import pytest

ROOT = Path(__file__).resolve().parent.parent
FUNCTION_SOURCE = ["main.py", "requirements.txt", "counter/__init__.py"]
# Paths that must never ship, whether or not they exist in this checkout yet.
NEVER_UPLOADED = [
    "tests/test_x.py",
    "tests/fakes/gcloud",
    "scripts/emulator.py",
    "scripts/smoke.sh",
    "web/counter.js",
    "bench/run.py",
    "docs/index.md",
    ".venv/lib/x.py",
    ".git/HEAD",
    ".ci/run",
    ".gcloudignore",
    ".gitignore",
    ".env",
    "counter/__pycache__/x.pyc",
    "counter/.hidden",
    "counter/store.py~",
    "test-artifacts/emulator.log",
    ".pytest_cache/README.md",
    "README.md",
    "Makefile",
    "deploy.sh",
    "openapi.yaml",
    "pyproject.toml",
    "requirements-dev.txt",
]


@pytest.fixture(scope="module")
def ignored() -> pathspec.GitIgnoreSpec:
    """.gcloudignore read with gitignore rules, as gcloud reads it."""
    lines = (ROOT / ".gcloudignore").read_text().splitlines()
    assert not [line for line in lines if line.startswith("#!include")], "follow includes here"
    return pathspec.GitIgnoreSpec.from_lines(lines)


@pytest.fixture(scope="module")
def upload_set(ignored: pathspec.GitIgnoreSpec) -> set[str]:
    """The files of this checkout that a deploy would upload."""
    files = set()
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = [name for name in subfolders if name != ".git"]  # checked on its own
        for name in names:
            path = (Path(folder) / name).relative_to(ROOT).as_posix()
            if not ignored.match_file(path):
                files.add(path)
    return files


@pytest.mark.parametrize("path", FUNCTION_SOURCE)
def test_function_source_is_uploaded(ignored: pathspec.GitIgnoreSpec, path: str) -> None:
    assert not ignored.match_file(path)


@pytest.mark.parametrize("path", NEVER_UPLOADED)
def test_everything_else_stays_out(ignored: pathspec.GitIgnoreSpec, path: str) -> None:
    assert ignored.match_file(path)


def test_upload_set_is_main_requirements_and_the_package(upload_set: set[str]) -> None:
    package = {path.relative_to(ROOT).as_posix() for path in (ROOT / "counter").glob("*.py")}

    assert upload_set == {"main.py", "requirements.txt"} | package


def local_imports(source: Path) -> set[str]:
    """Modules of this repository that a Python file imports, as dotted names."""
    names = set()
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from counter import config` imports the module counter.config.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if module_file(name)}


def module_file(name: str) -> str | None:
    """The repository file that defines a dotted module name, if any."""
    base = name.replace(".", "/")
    for candidate in (f"{base}.py", f"{base}/__init__.py"):
        if (ROOT / candidate).is_file():
            return candidate
    return None


def test_every_module_the_function_imports_is_uploaded(upload_set: set[str]) -> None:
    # Follow imports from main.py through the package: a module left out breaks the deploy.
    pending, seen = ["main.py"], set()
    while pending:
        source = pending.pop()
        seen.add(source)
        for name in local_imports(ROOT / source):
            path = module_file(name)
            assert path in upload_set, f"{source} imports {name}, which is not uploaded"
            if path not in seen:
                pending.append(path)

    assert "counter/store.py" in seen  # the walk did follow the package


@pytest.mark.skipif(shutil.which("gcloud") is None, reason="gcloud is not installed")
def test_gcloud_uploads_the_same_files(upload_set: set[str], tmp_path: Path) -> None:
    # `meta list-files-for-upload` reads .gcloudignore locally, without any network.
    result = subprocess.run(
        ["gcloud", "meta", "list-files-for-upload", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**os.environ, "CLOUDSDK_CONFIG": str(tmp_path), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
    )

    assert set(result.stdout.split()) == upload_set
