"""Fixtures that run a real `tokenmill serve` on a free 127.0.0.1 port.

The binary comes from $TM_BIN (default build/tokenmill), the model is the default one
(scripts/fetch-model). Every wait has a timeout; servers are stopped with SIGTERM and,
if that does not work within 30 s, SIGKILL.
"""
import os
import re
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TM_BIN = os.environ.get("TM_BIN", str(ROOT / "build" / "tokenmill"))
DEFAULT_MODEL = Path.home() / ".cache/tokenmill/models/SmolLM2-135M-Instruct.Q4_1.gguf"
READY_RE = re.compile(r"serving (\S+) on http://127\.0\.0\.1:(\d+)")


class Server:
    """A running `tokenmill serve`; .url, .port, .name, .proc, .log_path."""

    def __init__(self, tmp_path, *args, startup_timeout=120):
        if not Path(TM_BIN).exists():
            pytest.skip(f"{TM_BIN} not built (set TM_BIN)")
        if not DEFAULT_MODEL.exists():
            pytest.skip("default model missing: run scripts/fetch-model")
        self.log_path = tmp_path / f"serve-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "wb")
        cmd = [TM_BIN, "serve", "--host", "127.0.0.1", "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log)
        deadline = time.monotonic() + startup_timeout
        line = b""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}: {self.log()}")
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()
                m = READY_RE.search(line.decode(errors="replace"))
                if m:
                    self.name, self.port = m.group(1), int(m.group(2))
                    self.url = f"http://127.0.0.1:{self.port}"
                    return
        self.stop(kill=True)
        raise RuntimeError(f"serve not ready after {startup_timeout}s: {line!r} {self.log()}")

    def log(self):
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, kill=False, timeout=30):
        """Stops the server; returns its exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("srv"), "--max-body-mib", "1", "--http-timeout", "2",
               "--max-num-seqs", "48", "--kv-cache-mem", "256")
    yield s
    rc = s.stop()
    assert rc == 0, f"server exited with {rc}: {s.log()}"


@pytest.fixture
def make_server(tmp_path):
    """Starts extra servers with other flags; all are stopped at the end of the test."""
    started = []

    def make(*args):
        s = Server(tmp_path, *args)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


# A tool with a bounded string and an enum, shared by the tool-call and gateway tests.
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}}


def parse_metrics(text):
    """Prometheus text -> {name_with_labels: float} and {name: [values]} (labels dropped)."""
    samples, by_name = {}, {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)", line)
        assert m, f"bad metrics line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        samples[name + labels] = value
        by_name.setdefault(name, []).append(value)
    return samples, by_name
