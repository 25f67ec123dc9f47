"""Test helpers: run the review app with ``streamlit run`` and drive a headless Debian Chromium.

Chromium is driven over the DevTools protocol with the ``websockets`` client Streamlit already
depends on (no browser download, no extra package).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medfusion.review.launch import streamlit_command
from medfusion.review.settings import ReviewSettings

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1000",
]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def _stop(proc: subprocess.Popen) -> None:
    """Terminate a child process; kill it if it has not exited within 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def running_server(settings: ReviewSettings, log_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """``streamlit run`` of the packaged review page on a free loopback port; yields its URL and its process.

    The server runs with Python's faulthandler on, so a crash leaves the threads' stacks in the log.
    """
    port = free_port()
    env = {**os.environ, **settings.to_env(), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(streamlit_command(port), env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_http(f"http://127.0.0.1:{port}/_stcore/health", 60, proc)
            yield f"http://127.0.0.1:{port}/", proc
        finally:
            _stop(proc)


@contextmanager
def running_app(settings: ReviewSettings, log_path: Path) -> Iterator[str]:
    """``streamlit run`` of the packaged review page on a free loopback port; yields its URL."""
    with running_server(settings, log_path) as (url, _proc):
        yield url


def health(url: str, timeout: float = 10.0) -> str:
    """The body of the server's ``/_stcore/health`` answer (``ok`` when up); raises when it does not answer."""
    with urllib.request.urlopen(url.rstrip("/") + "/_stcore/health", timeout=timeout) as response:
        return response.read().decode()


class Page:
    """One Chromium tab over the DevTools protocol (commands only; events are skipped)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    def send(self, method: str, **params: Any) -> dict:
        """Send a command and return its result."""
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self.ws.recv(timeout=120))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def eval(self, expression: str) -> Any:
        """Evaluate JavaScript in the page; returns its (JSON) value."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JS error in {expression[:80]!r}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0) -> None:
        """Wait until a JavaScript expression is truthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.eval(f"!!({expression})"):
                return
            time.sleep(0.25)
        raise TimeoutError(f"page never satisfied {expression!r}; text: {self.text()[:500]!r}")

    def wait_idle(self, timeout: float = 90.0) -> None:
        """Wait until Streamlit has finished the script run and every image has loaded."""
        time.sleep(0.5)
        self.wait_for("!document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout)
        self.wait_for("[...document.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)", timeout)
        time.sleep(1.0)

    def scroll_main(self, y: int) -> None:
        """Scroll Streamlit's main area (its own scroll container) to ``y`` pixels."""
        self.eval(
            "(() => { const m = document.querySelector('[data-testid=\"stMain\"]') || document.scrollingElement;"
            f" m.scrollTo(0, {y}); window.scrollTo(0, {y}); }})()"
        )
        time.sleep(0.5)

    def type_into(self, selector: str, text: str) -> None:
        """Focus an input and type into it (real key input, so React sees it)."""
        self.eval(f"document.querySelector({json.dumps(selector)}).focus()")
        self.send("Input.insertText", text=text)

    def click_button(self, label: str) -> None:
        """Click the first button whose text is ``label``."""
        found = self.eval(
            "(() => { const b = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === "
            f"{json.dumps(label)}); if (b) b.click(); return !!b; }})()"
        )
        if not found:
            raise RuntimeError(f"no button {label!r}; text: {self.text()[:500]!r}")

    def press(self, key: str) -> None:
        """Press and release one printable key (as typed on the keyboard) where the focus is."""
        code = f"Key{key.upper()}" if key.isalpha() else ""
        vk = ord(key.upper())
        self.send("Input.dispatchKeyEvent", type="keyDown", key=key, code=code, text=key, windowsVirtualKeyCode=vk)
        self.send("Input.dispatchKeyEvent", type="keyUp", key=key, code=code, windowsVirtualKeyCode=vk)

    def url(self) -> str:
        """The tab's current URL."""
        return self.eval("location.href") or ""

    def text(self) -> str:
        """The page's visible text."""
        return self.eval("document.body ? document.body.innerText : ''") or ""

    def html(self) -> str:
        """The page's DOM as HTML."""
        return self.eval("document.documentElement.outerHTML") or ""

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the viewport."""
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path


@contextmanager
def chromium_page(user_data_dir: Path) -> Iterator[Page]:
    """A headless Debian Chromium with one tab, driven over DevTools on a loopback port."""
    from websockets.sync.client import connect

    proc = subprocess.Popen(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={user_data_dir}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = user_data_dir / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        targets = json.loads(_wait_http(f"http://127.0.0.1:{port}/json/list", 10))
        ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        with connect(ws_url, max_size=64 * 2**20, open_timeout=30) as ws:
            page = Page(ws)
            page.send("Emulation.setDeviceMetricsOverride", width=1400, height=1000, deviceScaleFactor=1, mobile=False)
            yield page
    finally:
        _stop(proc)
