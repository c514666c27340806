"""The function counts through google-cloud-datastore's GAPIC client, and holds no copy of it."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import PROJECT, ROOT, SITE

# Counts one POST through functions-framework's test client, in a fresh interpreter; with
# BLOCK set, the import of that module fails first, as if the package were not installed.
COUNT_ONE = textwrap.dedent(
    """
    import os, sys

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if os.environ.get("BLOCK") and name.startswith(os.environ["BLOCK"]):
                raise ModuleNotFoundError(f"blocked: {name}")
            return None

    sys.meta_path.insert(0, Blocker())
    try:
        import functions_framework
        app = functions_framework.create_app(target="visits", source="main.py")
        answer = app.test_client().post(
            "/", query_string={"page": sys.argv[1]},
            headers={"Origin": os.environ["ALLOWED_ORIGINS"], "User-Agent": "Mozilla/5.0"},
        )
    except ModuleNotFoundError as exc:
        print("RESULT not counted:", exc)
    else:
        print("RESULT", answer.status_code, answer.get_data(as_text=True))
    """
)


def count_one(emulator_host: str, page: str, *, block: str = "") -> str:
    """What a fresh process prints after trying to count one visit."""
    env = {
        **os.environ,
        "DATASTORE_EMULATOR_HOST": emulator_host,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "ALLOWED_ORIGINS": SITE,
        "BLOCK": block,
    }
    result = subprocess.run(
        [sys.executable, "-c", COUNT_ONE, page],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    # The function's own log line comes first; the result is the script's last line.
    return result.stdout.strip().splitlines()[-1].removeprefix("RESULT ")


@pytest.mark.parametrize(
    "module", ["google.cloud.datastore_v1", "google.api_core.retry", "google.auth"]
)
def test_without_the_library_nothing_can_be_counted(
    emulator_host: str, page: str, module: str
) -> None:
    assert count_one(emulator_host, page) == '200 {"count":1,"counted":true}'

    blocked = count_one(emulator_host, page, block=module)

    assert blocked.startswith(f"not counted: blocked: {module}")
    assert count_one(emulator_host, page) == '200 {"count":2,"counted":true}'


@pytest.mark.parametrize(
    "own_copy",
    [
        "descriptor_pool",  # a protobuf schema of its own
        "AddSerializedFile",
        "computeMetadata",  # a metadata-server fetch of its own
        "unary_unary(",  # RPCs on a raw channel
    ],
)
def test_the_product_holds_no_copy_of_the_library(own_copy: str) -> None:
    sources = [ROOT / "main.py", *sorted((ROOT / "counter").glob("*.py"))]
    holding = [path.name for path in sources if own_copy in path.read_text(encoding="utf-8")]
    assert holding == []
