"""`make run`: the emulator, the function on http://localhost:8080 and the demo page on
http://localhost:8000 (another origin, as a real site would be), until Ctrl-C."""

from __future__ import annotations

import functools
import http.server
import io
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from scripts.emulator import Emulator, EmulatorError

ROOT = Path(__file__).resolve().parent.parent
PORT = int(os.environ.get("PORT", "8080"))
WEB_PORT = int(os.environ.get("WEB_PORT", "8000"))
DEMO_ENDPOINT = "http://localhost:8080/"
"""The function URL written in web/index.html and web/stats.html."""


def main() -> int:
    """Start all three, print how to try them, and stop them cleanly on Ctrl-C or SIGTERM."""
    env = dict(os.environ)
    env.setdefault("GOOGLE_CLOUD_PROJECT", "local-project")
    # Only the demo page may call it from a browser, as in production; curl sends no Origin.
    env.setdefault("ALLOWED_ORIGINS", f"http://localhost:{WEB_PORT},http://127.0.0.1:{WEB_PORT}")
    try:
        web = _web_server()
    except OSError as exc:
        print(f"error: cannot serve web/ on port {WEB_PORT} ({exc}); set WEB_PORT", file=sys.stderr)
        return 1
    emulator = None
    if "DATASTORE_EMULATOR_HOST" not in env:
        emulator = Emulator()
        log = ROOT / ".emulator.log"
        print(f"Starting Google's Firestore emulator (Datastore mode); log in {log.name} ...")
        try:
            env["DATASTORE_EMULATOR_HOST"] = emulator.start(log)
        except EmulatorError as exc:
            print(f"error: {exc}", file=sys.stderr)
            web.server_close()
            return 1
    host = env["DATASTORE_EMULATOR_HOST"]
    function = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "functions_framework",
            "--target=visits",
            f"--source={ROOT / 'main.py'}",
            f"--port={PORT}",
        ],
        cwd=ROOT,
        env=env,
    )
    threading.Thread(target=web.serve_forever, daemon=True).start()
    url = f"http://localhost:{PORT}/"
    print(
        f"\nThe counter is on {url} (Datastore emulator at {host}; counts live in memory"
        " and end with it).\n"
        f"  count a visit:  curl -X POST -A 'Mozilla/5.0' '{url}?page=/'\n"
        f"  read it:        curl '{url}?page=/'\n"
        f"  demo page:      http://localhost:{WEB_PORT}/\n"
        f"  visits per day: http://localhost:{WEB_PORT}/stats.html?page=/\n"
        f"Browsers may call it from: {env['ALLOWED_ORIGINS']}\n"
        "Press Ctrl-C to stop.\n",
        flush=True,
    )
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return function.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        web.shutdown()
        web.server_close()
        function.terminate()
        function.wait(timeout=10)
        if emulator is not None:
            emulator.stop()
        print("Stopped the demo page, the function and the emulator.")


class _DemoPages(http.server.SimpleHTTPRequestHandler):
    """web/ as files, the demo pages with the function's URL on this PORT in place of 8080's."""

    def send_head(self) -> object:
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if path.suffix != ".html" or not path.is_file() or PORT == 8080:
            return super().send_head()
        page = path.read_text(encoding="utf-8").replace(DEMO_ENDPOINT, f"http://localhost:{PORT}/")
        body = page.encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)


def _web_server() -> http.server.ThreadingHTTPServer:
    """A static server for web/ on loopback, bound now so a busy port fails before the rest."""
    handler = functools.partial(_DemoPages, directory=ROOT / "web")
    return http.server.ThreadingHTTPServer(("127.0.0.1", WEB_PORT), handler)


def _interrupt(_signum: int, _frame: object) -> None:
    """Treat SIGTERM like Ctrl-C, so both children are stopped either way."""
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
