"""Handing a stage to the warm runner (runtime/warm.py): the caller's half, standard library only.

`python -m flows.run STAGE` calls `hand_off` before it imports torch or Prefect. It connects to
the runner's socket in the project's .prefect folder, sends its request (arguments, cwd,
environment, umask, interpreter, sys.path, when it started) with its stdin, stdout and stderr
(SCM_RIGHTS), forwards SIGINT, SIGTERM and SIGHUP to the forked stage while it runs and returns
the stage's exit status. Whatever goes wrong before the runner has forked the stage (no runner, a
refusal, no answer within seconds) returns the reason instead, and the stage runs in-process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

SOCKET = Path(".prefect") / "warm.sock"
"""Relative: the runner and its callers run in the project root (which keeps it short)."""
DISABLE_ENV = "DC_WARM_STAGES"
"""`DC_WARM_STAGES=0` runs every stage in-process."""
ANSWER_TIMEOUT_S = 5.0
"""How long a caller waits for the runner's answer before running the stage itself."""
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
STDIO = (0, 1, 2)
HEADER = struct.Struct("!I")
"""The request's length, sent with the three file descriptors."""


@dataclass(frozen=True)
class Request:
    """What the forked stage needs to run as its caller would have run it."""

    program: str
    """The caller's sys.argv[0]."""
    arguments: list[str]
    cwd: str
    env: dict[str, str]
    umask: int
    executable: str
    path: list[str]
    """The caller's sys.path: the same modules must resolve to the same files."""
    started_at: float
    """Epoch seconds when the caller's process started: the stage's clock counts from there."""
    imports: float
    """The caller's `imports` mark (seconds since it started)."""
    parent_pid: int
    """The caller's parent (the `dvc` process whose run tag the stage carries)."""
    ignored: list[int] = field(default_factory=list)
    """Signals the caller ignores; the stage ignores them too."""

    @classmethod
    def from_caller(cls, arguments: list[str], started_at: float, imports: float) -> Request:
        """This process's request."""
        return cls(
            program=sys.argv[0],
            arguments=list(arguments),
            cwd=os.getcwd(),
            env=dict(os.environ),
            umask=current_umask(),
            executable=sys.executable,
            path=list(sys.path),
            started_at=started_at,
            imports=imports,
            parent_pid=os.getppid(),
            ignored=[int(s) for s in FORWARDED if signal.getsignal(s) == signal.SIG_IGN],
        )

    def encode(self) -> bytes:
        """JSON bytes."""
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> Request:
        """From `encode`'s bytes; ValueError or TypeError when they are not a request."""
        return cls(**json.loads(data))


@dataclass(frozen=True)
class Outcome:
    """How a handed-off stage ended (an exit code or a signal), or why it was not handed off."""

    code: int | None = None
    signal: int | None = None
    reason: str | None = None
    """Set when the stage did not run warm: it runs in-process."""

    @property
    def ran(self) -> bool:
        """Whether the runner ran the stage."""
        return self.reason is None

    def exit_status(self) -> int:
        """The exit code to return; a stage killed by a signal kills this process with it."""
        if self.signal is not None:
            signal.signal(self.signal, signal.SIG_DFL)
            os.kill(os.getpid(), self.signal)
            return 128 + self.signal
        return 1 if self.code is None else self.code


def current_umask() -> int:
    """This process's umask (read by setting it and back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    """One JSON line."""
    sock.sendall(json.dumps(message).encode() + b"\n")


class Lines:
    """JSON lines read from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def next(self) -> dict[str, Any] | None:
        """The next message; None at the end of the stream."""
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(4096)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return json.loads(line)


class Forwarding:
    """While the stage runs: SIGINT, SIGTERM and SIGHUP go to its process group (those caught
    before its pid is known are sent when it is)."""

    def __init__(self, ignored: list[int]) -> None:
        self.signals = [s for s in FORWARDED if int(s) not in ignored]
        self.pid: int | None = None
        self.pending: list[int] = []
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> Forwarding:
        for sig in self.signals:
            self.previous[sig] = signal.signal(sig, self.forward)
        return self

    def __exit__(
        self, kind: type | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def forward(self, sig: int, frame: FrameType | None = None) -> None:
        """Send `sig` to the stage (or keep it until the stage's pid is known)."""
        if self.pid is None:
            self.pending.append(sig)
            return
        for kill in (os.killpg, os.kill):  # the child may not lead its group yet
            try:
                kill(self.pid, sig)
                return
            except ProcessLookupError:
                continue

    def target(self, pid: int) -> None:
        """The stage's pid is known: send what was caught so far."""
        self.pid = pid
        for sig in self.pending:
            self.forward(sig)
        self.pending.clear()


def stdio_open() -> bool:
    """Whether stdin, stdout and stderr are open (they are passed to the stage)."""
    try:
        for fd in STDIO:
            os.fstat(fd)
    except OSError:
        return False
    return True


def hand_off(request: Request, path: Path = SOCKET, timeout_s: float = ANSWER_TIMEOUT_S) -> Outcome:
    """Run the stage in the warm runner listening at `path`; its outcome, or why it did not
    (no answer within `timeout_s` included)."""
    if os.environ.get(DISABLE_ENV) == "0":
        return Outcome(reason=f"disabled ({DISABLE_ENV}=0)")
    if not path.exists():
        return Outcome(reason="no warm runner")
    if not stdio_open():
        return Outcome(reason="stdin, stdout or stderr is closed")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
            payload = request.encode()
            socket.send_fds(sock, [HEADER.pack(len(payload))], list(STDIO))
            sock.sendall(payload)
            lines = Lines(sock)
            answer = lines.next()
        except (OSError, ValueError) as err:
            return Outcome(reason=f"the warm runner did not answer ({err or type(err).__name__})")
        if answer is None or not answer.get("ready"):
            refused = answer.get("refused") if answer else None
            return Outcome(reason=f"refused: {refused}" if refused else "the warm runner hung up")
        with Forwarding(request.ignored) as forwarding:
            try:
                send_message(sock, {"go": True})
                sock.settimeout(None)
                outcome = wait(lines, forwarding)
            except OSError as err:
                outcome = Outcome(reason=f"the warm runner went away ({err})")
    for sig in forwarding.pending:  # caught while no stage ran: this process gets them now
        os.kill(os.getpid(), sig)
    return outcome


def wait(lines: Lines, forwarding: Forwarding) -> Outcome:
    """Follow the forked stage to its end: the runner's exit status, else the stage's own."""
    own: dict[str, Any] = {}
    while True:
        try:
            message = lines.next()
        except (OSError, ValueError):
            message = None
        if message is None:
            break
        if "pid" in message:
            forwarding.target(int(message["pid"]))
        elif "exit" in message or "signal" in message:
            return Outcome(code=message.get("exit"), signal=message.get("signal"))
        elif "child_exit" in message or "child_signal" in message:
            own = message
    if own:  # the runner died; the stage reported its own end
        return Outcome(code=own.get("child_exit"), signal=own.get("child_signal"))
    if forwarding.pid is None:
        return Outcome(reason="the warm runner ended before it started the stage")
    print("error: the warm runner and its stage ended without an exit status", file=sys.stderr)
    return Outcome(code=1)
