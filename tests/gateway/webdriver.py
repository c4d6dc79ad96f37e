"""A minimal W3C WebDriver client for Debian's chromium + chromium-driver, over chromedriver's HTTP
API with urllib (no selenium): headless Chromium for the dashboard and extension page tests."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from streamsight.natsd import free_port

CHROME_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage",
               "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1400"]


def browser_missing() -> str:
    """Why the page tests cannot run here ('' when they can)."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    return f"needs Debian's chromium and chromium-driver ({', '.join(missing)} not found); apt-get install chromium chromium-driver" if missing else ""


class Browser:
    def __init__(self, base: str, session: str):
        self.base, self.session = base, session

    def _call(self, method: str, path: str, body: dict | None = None):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}/session/{self.session}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as r:
                return json.loads(r.read())["value"]
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"webdriver {method} {path}: {err.read()[:500]!r}") from None

    def get(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def js(self, script: str, *args):
        """Run `script` (a function body: `return ...`) in the page."""
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def js_async(self, script: str, *args):
        """Run `script`, which calls arguments[arguments.length - 1](value) when done."""
        return self._call("POST", "/execute/async", {"script": script, "args": list(args)})

    def cdp(self, command: str, params: dict):
        return self._call("POST", "/goog/cdp/execute", {"cmd": command, "params": params})

    def screenshot_png(self) -> bytes:
        import base64

        return base64.b64decode(self._call("GET", "/screenshot"))

    def wait_for(self, script: str, what: str, timeout_s: float = 60.0):
        """Poll `script` until it returns something truthy (the deadline only stops a hang)."""
        deadline = time.monotonic() + timeout_s
        while True:
            value = self.js(script)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"never reached in the page: {what}")
            time.sleep(0.2)


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    port = free_port()
    driver = subprocess.Popen([shutil.which("chromedriver"), f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/status", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or driver.poll() is not None:
                    raise RuntimeError("chromedriver did not start") from None
                time.sleep(0.1)
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "pageLoadStrategy": "normal",
                                                 "goog:chromeOptions": {"binary": shutil.which("chromium"), "args": CHROME_ARGS},
                                                 "goog:loggingPrefs": {"browser": "ALL"}}}}
        request = urllib.request.Request(f"{base}/session", data=json.dumps(caps).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as r:
            session = json.loads(r.read())["value"]["sessionId"]
        browser = Browser(base, session)
        try:
            yield browser
        finally:
            with contextlib.suppress(Exception):
                urllib.request.urlopen(urllib.request.Request(f"{base}/session/{session}", method="DELETE"), timeout=30).read()
    finally:
        driver.terminate()
        try:
            driver.wait(10)
        except subprocess.TimeoutExpired:
            driver.kill()
