"""A headless Chromium driven through the DevTools protocol, for tests that look at a page as a user sees it (the
app's screenshot test). Standard library only: no WebSocket client, no debugging port."""

import base64
import fcntl
import io
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

from PIL import Image

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chromium-headless-shell")


def find_browser() -> str | None:
    """The first Chromium on PATH, or None."""
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


class Chromium:
    """Headless Chromium driven through the DevTools protocol on a pipe (`--remote-debugging-pipe`: commands in on
    fd 3, replies out on fd 4, each a NUL-terminated JSON message), so that neither a WebSocket client nor a debugging
    port is needed."""

    def __init__(self, browser: str, flags: list[str]):
        commands_out, commands_in = self._high(os.pipe())  # we write commands_in, the browser reads fd 3
        replies_out, replies_in = self._high(os.pipe())  # the browser writes fd 4, we read replies_out

        def browser_fds():
            os.dup2(commands_out, 3)
            os.dup2(replies_in, 4)

        self.process = subprocess.Popen(
            [browser, *flags, "--remote-debugging-pipe", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=browser_fds,
            pass_fds=(3, 4),
        )
        os.close(commands_out)
        os.close(replies_in)
        self.commands, self.replies = commands_in, replies_out
        self.buffer, self.next_id, self.session = b"", 0, None

    @staticmethod
    def _high(fds: tuple[int, int]) -> tuple[int, int]:
        """The pipe's ends moved to fds >= 10, so that moving them to 3 and 4 in the child cannot clobber each other."""
        moved = tuple(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in fds)
        for fd in fds:
            os.close(fd)
        return moved

    def send(self, method: str, timeout: float = 60, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if self.session is not None:
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            while b"\0" not in self.buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([self.replies], [], [], left)[0]:
                    raise TimeoutError(f"no reply to {method} within {timeout} s")
                chunk = os.read(self.replies, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"the browser closed the pipe (exit code {self.process.poll()})")
                self.buffer += chunk
            raw, self.buffer = self.buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self.next_id:  # anything else is an event, which these tests do not need
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str, width: int, height: int) -> None:
        """Open a page of our own, size its viewport and load `url`."""
        page = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=page, flatten=True)["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str):
        reply = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 120):
        """Evaluate `expression` until it is true; errors while the page is still loading count as false."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if value := self.evaluate(expression):
                    return value
            except RuntimeError as error:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"still failing after {timeout} s: {expression}") from error
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}")
            time.sleep(0.25)

    def upload(self, selector: str, path: Path) -> None:
        """Choose `path` in the file input `selector`, as a user's file dialog would (input and change events)."""
        element = self.send("Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})")
        self.send("DOM.setFileInputFiles", files=[str(path)], objectId=element["result"]["objectId"])

    def screenshot(self) -> Image.Image:
        data = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        return Image.open(io.BytesIO(data)).convert("RGB")

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)
        os.close(self.commands)
        os.close(self.replies)
