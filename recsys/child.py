"""A child interpreter spoken to in JSON lines: one object per line on its stdin, one per line back.

The demo keeps two beside its own (``recsys.background.Worker``, ``steps.FreshReloads``). Both start
early, so their imports overlap the parent's work, and both may sit unread for minutes: the child's
stderr (TensorFlow's C++ notices and any traceback) goes to a temporary file, never a pipe that could
fill and stall it, and is read only to explain a failure.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from typing import Any, List, Optional


class JsonLinesChild:
    """``python -m <module> <args>`` with JSON lines on stdin and stdout."""

    def __init__(self, module: str, *args: str):
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._stderr, text=True, encoding="utf-8")

    def send(self, message: Any) -> None:
        """Writes one line. A child that died starting up is not an error here: the next ``read`` (or
        ``finish``) reports its exit status and stderr."""
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def read(self) -> Optional[Any]:
        """The next line, decoded; None once the child has exited (``failure()`` says how)."""
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            return None
        return json.loads(line)

    def finish(self, timeout: float) -> List[str]:
        """Closes stdin (the child exits after its last answer) and returns the non-empty lines not yet
        read, as text; raises ``subprocess.TimeoutExpired`` (after killing it) past ``timeout``."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.close(kill=True)
            raise
        return [line for line in out.splitlines() if line.strip()]

    def failure(self, limit: int = 3000) -> str:
        """Exit status and the end of stderr, for an error message."""
        self._stderr.seek(0)
        return f"exit status {self.proc.returncode}:\n{self._stderr.read()[-limit:]}"

    def close(self, kill: bool = False) -> None:
        """Ends the child: at once with ``kill``, else by closing its stdin and waiting."""
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                with contextlib.suppress(BrokenPipeError):
                    self.proc.stdin.close()
            with contextlib.suppress(ValueError):  # streams already closed by communicate()
                self.proc.communicate()
        self._stderr.close()
