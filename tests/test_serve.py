"""`make run`'s server: the function on PORT, and the demo pages calling it there."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import requests

from conftest import PROJECT, ROOT
from scripts.emulator import free_port
from user_agents import BROWSER


def test_on_another_port_the_demo_pages_call_the_function_there(emulator_host: str) -> None:
    port, web_port = free_port(), free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "WEB_PORT": str(web_port),
        "DATASTORE_EMULATOR_HOST": emulator_host,  # the suite's: no second emulator
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "DATASTORE_NAMESPACE": f"serve-{port}",
    }
    env.pop("ALLOWED_ORIGINS", None)
    server = subprocess.Popen(
        [sys.executable, "-m", "scripts.serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.options(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "the function did not start"
                time.sleep(0.2)
        pages = [
            requests.get(f"http://127.0.0.1:{web_port}/{name}", timeout=5).text
            for name in ("", "index.html", "stats.html")
        ]
        visit = requests.post(
            f"http://127.0.0.1:{port}/",
            params={"page": "/"},
            headers={"Origin": f"http://localhost:{web_port}", "User-Agent": BROWSER},
            timeout=10,
        )
    finally:
        server.terminate()
        server.wait(timeout=20)

    for page in pages:
        assert f'data-endpoint="http://localhost:{port}/"' in page
        assert "localhost:8080" not in page
    assert visit.json() == {"count": 1, "counted": True}
