"""The archive gcloud uploads holds the function's source and nothing else.

The archive is built by gcloud's own code, `source_util.CreateSourcesZipFile`, the function
`gcloud functions deploy --source=.` calls, run on the SDK's own Python. (`gcloud meta
list-files-for-upload` walks files by another path and can list the right files while the real
archive is empty.) tests/test_deploy.py checks the archive the real CLI uploads as well.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from conftest import ROOT, function_source
from real_gcloud import GCLOUD, sdk

pytestmark = pytest.mark.skipif(GCLOUD is None, reason="gcloud is not installed")

# Paths that must never ship, whether or not they exist in this checkout yet.
NEVER_UPLOADED = [
    "tests/test_x.py",
    "tests/conftest.py",
    "scripts/emulator.py",
    "scripts/smoke.sh",
    "web/counter.js",
    "bench/run.py",
    "bench/results/results.md",
    "docs/demo.png",
    ".venv/lib/x.py",
    "venv/lib/x.py",
    ".git/HEAD",
    ".ci/run",
    ".gcloudignore",
    ".gitignore",
    ".env",
    "counter/__pycache__/x.cpython-311.pyc",
    "counter/.hidden",
    "counter/store.py~",
    "test-artifacts/emulator.log",
    ".pytest_cache/README.md",
    ".ruff_cache/x",
    "README.md",
    "Makefile",
    "deploy.sh",
    "openapi.yaml",
    "pyproject.toml",
    "requirements-dev.txt",
    # Whatever is added at the top later stays out until .gcloudignore lets it in.
    "new-folder/module.py",
    "new-file.txt",
]
# Builds the archive exactly as `gcloud functions deploy --source=.` does, from the current folder.
ARCHIVE_SCRIPT = """
import json, sys, tempfile, zipfile
from googlecloudsdk.command_lib.functions import source_util
with tempfile.TemporaryDirectory() as folder:
    print(json.dumps(zipfile.ZipFile(source_util.CreateSourcesZipFile(folder, ".")).namelist()))
"""


def gcloud_archive(source: Path) -> list[str]:
    """The names in the zip gcloud would upload for source, as the SDK's own code builds it."""
    return json.loads(sdk().run_python(ARCHIVE_SCRIPT, cwd=source))


@pytest.fixture(scope="module")
def archive() -> list[str]:
    """What a deploy from this checkout would upload."""
    return gcloud_archive(ROOT)


def test_archive_of_this_checkout_is_the_function_source(archive: list[str]) -> None:
    assert sorted(archive) == function_source(ROOT)


def test_archive_leaves_out_everything_else(tmp_path: Path) -> None:
    # A checkout holding every kind of file a developer's machine has, and new ones.
    shutil.copy(ROOT / ".gcloudignore", tmp_path)
    for path in [*function_source(ROOT), *NEVER_UPLOADED]:
        if not path.endswith("/"):
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / path).touch()

    assert sorted(gcloud_archive(tmp_path)) == function_source(tmp_path)


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


def test_every_module_the_function_imports_is_in_the_archive(archive: list[str]) -> None:
    # Follow imports from main.py through the package: a module left out breaks the deploy.
    pending, seen = ["main.py"], set()
    while pending:
        source = pending.pop()
        seen.add(source)
        for name in local_imports(ROOT / source):
            path = module_file(name)
            assert path in archive, f"{source} imports {name}, which is not uploaded"
            if path not in seen:
                pending.append(path)

    assert "counter/instance.py" in seen  # the walk did follow the package
