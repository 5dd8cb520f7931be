"""Open a page in headless Chromium and report what it decoded and logged (stdlib only).

Chromium is driven over the DevTools protocol on ``--remote-debugging-pipe``: JSON
messages separated by NUL bytes on file descriptors 3 (commands in) and 4 (events and
replies out). That needs no websocket client, no free TCP port and no extra Python
package, and unlike ``--dump-dom`` it sees what the console reports: ``console.error``
calls, uncaught exceptions and the browser's own log entries (a missing or undecodable
image shows up there as a network or rendering error).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
# What Chromium needs as root in a container, and what keeps it off the network.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--mute-audio", "--remote-debugging-pipe"]

# Runs in the page after load: wait for every <img> to decode (img.decode() rejects on
# a broken image), then report each one's natural size.
_CHECK = """
(async () => {
  const images = Array.from(document.images);
  const results = await Promise.all(images.map(async img => {
    let error = null;
    try { await img.decode(); } catch (e) { error = String(e); }
    return {src: img.getAttribute('src'), naturalWidth: img.naturalWidth,
            naturalHeight: img.naturalHeight, error: error};
  }));
  return JSON.stringify({images: results, status: document.getElementById('status')
                         ? document.getElementById('status').textContent : null});
})()
"""


@dataclass
class PageReport:
    images: list[dict]
    status: str | None
    console_errors: list[str] = field(default_factory=list)


class _Pipe:
    def __init__(self, process: subprocess.Popen, write_fd: int, read_fd: int) -> None:
        self.process, self.write_fd, self.read_fd = process, write_fd, read_fd
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 60.0) -> dict:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self, deadline: float) -> dict:
        import select

        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self.read_fd], [], [], left)
            if ready:
                chunk = os.read(self.read_fd, 1 << 16)
                if not chunk:
                    raise RuntimeError(f"Chromium exited (code {self.process.poll()})")
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)


def _high_pipe() -> tuple[int, int]:
    """os.pipe() with both ends moved to descriptors >= 10 (close-on-exec)."""
    ends = []
    for fd in os.pipe():
        ends.append(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(fd)
    return ends[0], ends[1]


def open_page(page: Path, timeout: float = 90.0) -> PageReport:
    """Load ``page`` from file://, wait for its images, return sizes and console errors."""
    profile = tempfile.mkdtemp(prefix="itm-onnx-chromium-")
    log = open(Path(profile) / "stderr.log", "wb")  # closed in finally
    to_chrome_r, to_chrome_w = _high_pipe()
    from_chrome_r, from_chrome_w = _high_pipe()
    # Chromium reads commands on fd 3 and writes on fd 4; bash moves the pipe ends
    # there (they are >= 10 here, so moving one never overwrites the other).
    move = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-'
    process = subprocess.Popen(
        ["/bin/bash", "-c", move, str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}",
         "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
        pass_fds=(to_chrome_r, from_chrome_w),
    )
    os.close(to_chrome_r)
    os.close(from_chrome_w)
    pipe = _Pipe(process, to_chrome_w, from_chrome_r)
    try:
        target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
        session = pipe.send("Target.attachToTarget", {"targetId": target["targetId"],
                                                      "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            pipe.send(f"{domain}.enable", session=session)
        pipe.send("Page.navigate", {"url": Path(page).resolve().as_uri()}, session=session)
        pipe.wait_event("Page.loadEventFired", timeout=timeout)
        result = pipe.send("Runtime.evaluate", {"expression": _CHECK, "awaitPromise": True,
                                                "returnByValue": True}, session=session,
                           timeout=timeout)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page check failed: {result['exceptionDetails']}")
        checked = json.loads(result["result"]["value"])
        pipe.send("Browser.close")
        process.wait(timeout=30)
    except (RuntimeError, TimeoutError, KeyError) as exc:
        log.flush()
        tail = (Path(profile) / "stderr.log").read_text(errors="replace").splitlines()[-5:]
        raise RuntimeError(f"{exc}; Chromium's stderr ends: {' | '.join(tail)}") from None
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for fd in (to_chrome_w, from_chrome_r):
            os.close(fd)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
    return PageReport(checked["images"], checked["status"], _console_errors(pipe.events))


def _console_errors(events: list[dict]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description")))
                                                 for a in params.get("args", [])))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append("exception: " + str(details.get("exception", {}).get(
                "description", details.get("text"))))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"log ({entry.get('source')}): {entry.get('text')} "
                          f"{entry.get('url', '')}")
    return errors
