"""The warm stage runner: stages fork from a process that has already imported torch and Prefect.

`python -m runtime.server start` starts it (`python -m runtime.warm`, detached, in the project
root).
It imports every stage's flow module (torch and Prefect with them), checks that it still has one
thread (a fork must copy no torch thread pool and no Prefect background thread: numpy's OpenBLAS
is loaded with OPENBLAS_NUM_THREADS=1, and each child gets back the BLAS threads a cold stage
process has, as a cold interpreter reports them at the runner's start) and listens on
.prefect/warm.sock. For each caller (runtime/handoff.py) it checks the caller and itself: the same
user, interpreter, sys.path and environment (but for variables read only at run time, and
Prefect's, which the stage re-reads) and no imported module's file changed since it started. A
stale runner refuses, and restarts itself once no stage of its runs. Otherwise it forks a child
that takes the caller's stdin, stdout, stderr, cwd, umask, environment and arguments, re-reads
Prefect's settings and runs the stage as `python -m flows.run` would in-process; the runner
relays the child's exit status (the child reports its own too, should the runner die) and kills
it when the caller goes away.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from deepcompression.numerics import pin_environment
from runtime.environment import env_digest, import_time_env
from runtime.handoff import (
    ANSWER_TIMEOUT_S,
    HEADER,
    SOCKET,
    STDIO,
    Lines,
    Request,
    send_message,
)

PROJECT = str(Path(__file__).resolve().parents[1])
"""The project root: its files are watched while the runner is idle."""
LOCK = SOCKET.with_suffix(".lock")
"""Held for the runner's lifetime: one runner per project."""
MAX_REQUEST = 1 << 22
CHECK_EVERY_S = 2.0
"""How often an idle runner checks that its socket is still its own (and restarts if stale)."""
BLAS_THREADS_ENV = "OPENBLAS_NUM_THREADS"
"""Set to 1 while the runner imports: OpenBLAS starts its thread pool when it is loaded."""
COLD_BLAS_PROBE = """
import ctypes, json, os, sys
for path in sys.argv[1:]:
    ctypes.CDLL(path)
from threadpoolctl import threadpool_info
blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
print(json.dumps({os.path.realpath(i["filepath"]): i["num_threads"] for i in blas}))
"""
"""Run in a fresh interpreter: loads the given BLAS libraries as a cold stage's imports would
(each sizes its thread pool from the environment and the CPUs) and prints {path: threads}."""
PROBE_TIMEOUT_S = 60.0


STAGE_ENTRY = "flows.run"
"""The module `python -m STAGE_ENTRY` runs a stage with; named, not imported, so that the
runtime imports no stage code (stages depend on the runtime, never the reverse)."""
WARM_STAGES = ("data", "train", "prune", "quantize", "encode", "evaluate", "plots")
"""The pipeline's stages, whose flow modules the runner imports (others import in the child)."""


def warm_imports() -> list[str]:
    """What a pipeline stage process imports: flows.run's dependencies, the flow modules and
    torch._dynamo (which torch imports at the first optimizer step: 1-3 s of training work)."""
    STAGES = importlib.import_module(STAGE_ENTRY).STAGES
    stage_modules = [STAGES[stage].split(":")[0] for stage in WARM_STAGES if stage in STAGES]
    modules = ["torch", "torch._dynamo", "prefect", STAGE_ENTRY]
    modules += ["runtime.guard", "runtime.stageflow"]
    return modules + stage_modules


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """OpenBLAS libraries loaded inside start no thread pool; the environment is as it was
    after (the refusal logic and the children see the caller's own)."""
    before = os.environ.get(BLAS_THREADS_ENV)
    os.environ[BLAS_THREADS_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(BLAS_THREADS_ENV, None)
        else:
            os.environ[BLAS_THREADS_ENV] = before


class BlasThreads:
    """The BLAS libraries this process loaded and the thread count each has in a cold process
    of `env` (asked once, of a fresh interpreter: OpenBLAS's choice from OPENBLAS_NUM_THREADS,
    GOTO_NUM_THREADS, OMP_NUM_THREADS and the CPUs is its own); `restore` sets them so."""

    def __init__(self, env: dict[str, str]) -> None:
        from threadpoolctl import ThreadpoolController

        self.libraries = ThreadpoolController().select(user_api="blas").lib_controllers
        self.cold = cold_blas_threads([lib.filepath for lib in self.libraries], env)

    def restore(self) -> None:
        """In a forked child: each library's thread count as in a cold stage process; no
        thread holds threadpoolctl's control of them afterwards, as in a cold one."""
        for lib in self.libraries:
            lib.set_num_threads(self.cold[os.path.realpath(lib.filepath)])
            if (release := getattr(lib, "clear_controlling_thread", None)) is not None:
                release()


def cold_blas_threads(paths: list[str], env: dict[str, str]) -> dict[str, int]:
    """{real path: threads} of the BLAS libraries at `paths` in a fresh interpreter run in
    `env`; ValueError when it cannot tell for each of them."""
    if not paths:
        return {}
    try:
        probe = subprocess.run(
            [sys.executable, "-c", COLD_BLAS_PROBE, *paths],
            env=env,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=True,
        )
        threads = json.loads(probe.stdout)
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError) as err:
        raise ValueError(f"no answer from a cold interpreter: {err}") from err
    missing = [p for p in paths if not isinstance(threads.get(os.path.realpath(p)), int)]
    if missing:
        raise ValueError(f"a cold interpreter did not report {', '.join(missing)}")
    return threads


def thread_count() -> int:
    """Threads of this process (/proc, which also sees threads Python did not start)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def file_stamps() -> dict[str, tuple[int, int]]:
    """(mtime in ns, size) of every imported module's file and of the interpreter."""
    paths = {getattr(module, "__file__", None) for module in list(sys.modules.values())}
    paths |= {sys.executable, os.path.realpath(sys.executable)}
    stamps = {}
    for path in filter(None, paths):
        try:
            stat = os.stat(path)
        except OSError:
            continue
        stamps[path] = (stat.st_mtime_ns, stat.st_size)
    return stamps


def in_project(path: str) -> bool:
    """Whether `path` is one of the project's files (not the interpreter's, nor its venv's)."""
    real = os.path.realpath(path)
    venv = os.path.realpath(sys.prefix) + os.sep
    return real.startswith(PROJECT + os.sep) and not real.startswith(venv)


def changed_file(stamps: dict[str, tuple[int, int]]) -> str | None:
    """The first file whose stamp changed (or that is gone), if any."""
    for path, stamp in stamps.items():
        try:
            stat = os.stat(path)
        except OSError:
            return path
        if (stat.st_mtime_ns, stat.st_size) != stamp:
            return path
    return None


class Runner:
    """The listening runner: one request at a time is checked and forked; children run on."""

    def __init__(
        self, listener: socket.socket, path: Path, startup_env: dict[str, str], began_ns: int
    ) -> None:
        self.listener = listener
        self.path = path
        self.inode = path.stat().st_ino
        self.pid = os.getpid()
        self.stamps = file_stamps()
        self.project_stamps = {p: s for p, s in self.stamps.items() if in_project(p)}
        """Checked whenever the runner is idle: it restarts soon after a project file changes."""
        self.startup_env = startup_env
        self.env = import_time_env(startup_env)
        self.imports_set = {k: v for k, v in os.environ.items() if startup_env.get(k) != v}
        """What the imports put in the environment (torch: TORCHINDUCTOR_CACHE_DIR): a cold
        stage's imports would put it in its own."""
        self.stale = next(
            (
                f"stale: {p} changed while the runner imported it"
                for p, (mtime_ns, _) in self.project_stamps.items()
                if mtime_ns >= began_ns
            ),
            None,
        )
        self.children: dict[int, socket.socket] = {}
        self.selector = selectors.DefaultSelector()
        self.wake_read, self.wake_write = socket.socketpair()
        self.wake_write.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ)
        self.selector.register(self.wake_read, selectors.EVENT_READ)

    @classmethod
    def bind(cls, startup_env: dict[str, str], began_ns: int, path: Path = SOCKET) -> Runner:
        """Listen at `path` (mode 0600: only this user's processes may hand off); `startup_env`:
        the environment before the imports, which began at `began_ns` (epoch ns)."""
        path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        mask = os.umask(0o177)
        try:
            listener.bind(str(path))
        finally:
            os.umask(mask)
        listener.listen(16)
        path.with_suffix(".env").write_text(env_digest(startup_env))
        return cls(listener, path, startup_env, began_ns)

    def serve(self) -> tuple[Request, socket.socket] | None:
        """Serve until told to stop (None); in a forked child, return its request."""
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_write.fileno())
        try:
            while self.owns_socket():
                for key, _ in self.selector.select(timeout=CHECK_EVERY_S):
                    if key.fileobj is self.listener:
                        if (forked := self.accept()) is not None:
                            return forked
                    elif key.fileobj is self.wake_read:
                        self.wake_read.recv(4096)
                    else:
                        self.caller_event(key.fileobj, key.data)
                self.reap()
                if not self.children and self.is_stale():
                    self.restart()
            return None
        finally:
            if os.getpid() == self.pid:
                self.close()

    def is_stale(self) -> bool:
        """Whether a project file changed since the runner imported it (checked when idle)."""
        if self.stale is None and (path := changed_file(self.project_stamps)) is not None:
            self.stale = f"stale: {path} changed since the runner started"
        return self.stale is not None

    def owns_socket(self) -> bool:
        """Whether the socket file is still the one this runner listens on."""
        try:
            return self.path.stat().st_ino == self.inode
        except OSError:
            return False

    def close(self) -> None:
        """Stop listening; remove the socket file if it is still ours."""
        if self.owns_socket():
            self.path.unlink(missing_ok=True)
        self.listener.close()

    def restart(self) -> None:
        """Start afresh (same pid): the imports are read again from the files as they are now."""
        log(f"restarting: {self.stale}")
        self.close()
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(sys.executable, [sys.executable, "-m", "runtime.warm"], self.startup_env)

    def accept(self) -> tuple[Request, socket.socket] | None:
        """Check one caller's request and fork its stage (returns in the child only)."""
        conn, _ = self.listener.accept()
        conn.settimeout(ANSWER_TIMEOUT_S)
        fds: list[int] = []
        try:
            request, fds = receive(conn)
            if refusal := self.refusal(conn, request, fds):
                send_message(conn, {"refused": refusal})
                raise ConnectionAbortedError(refusal)
            send_message(conn, {"ready": True})
            go = Lines(conn).next()
            if not go or not go.get("go"):
                raise ConnectionAbortedError("the caller did not confirm")
            return self.fork(conn, request, fds)
        except (OSError, ValueError, TypeError) as err:
            if str(err):
                log(f"caller not served: {err}")
            for fd in fds:
                os.close(fd)
            conn.close()
            return None

    def refusal(self, conn: socket.socket, request: Request, fds: list[int]) -> str | None:
        """Why this caller must run its stage in-process, if it must."""
        _, uid, _ = peer_credentials(conn)
        if uid != os.getuid():
            return "another user"
        if len(fds) != len(STDIO):
            return "stdin, stdout and stderr were not passed"
        if request.executable != sys.executable or request.path != sys.path:
            return "another interpreter or sys.path"
        caller_env = import_time_env(request.env)
        if caller_env != self.env:
            names = sorted(
                k
                for k in caller_env.keys() | self.env.keys()
                if caller_env.get(k) != self.env.get(k)
            )
            return f"environment differs: {', '.join(names[:5])}"
        if self.stale is None and (path := changed_file(self.stamps)) is not None:
            self.stale = f"stale: {path} changed since the runner started"
        if self.stale is None and thread_count() != 1:
            self.stale = "stale: the runner has more than one thread"
        return self.stale

    def fork(
        self, conn: socket.socket, request: Request, fds: list[int]
    ) -> tuple[Request, socket.socket] | None:
        """Fork the stage; the child returns its request, the runner follows the child."""
        sys.stdout.flush()
        sys.stderr.flush()
        blocked = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        pid = os.fork()
        if pid == 0:
            self.become_child(request, fds, conn, previous)
            return request, conn
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        for fd in fds:
            os.close(fd)
        self.children[pid] = conn
        self.selector.register(conn, selectors.EVENT_READ, pid)
        with contextlib.suppress(OSError):  # a caller that is gone: its hang-up kills the child
            send_message(conn, {"pid": pid})
        return None

    def become_child(
        self, request: Request, fds: list[int], conn: socket.socket, mask: set[Any]
    ) -> None:
        """In the forked child: the caller's process group role, signals, stdio, cwd, umask,
        environment and arguments; none of the runner's sockets."""
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        for other in self.children.values():
            other.close()
        self.selector.close()
        for sock in (self.listener, self.wake_read, self.wake_write):
            sock.close()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in request.ignored:
            signal.signal(sig, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for target, fd in zip(STDIO, fds, strict=True):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdout.reconfigure(line_buffering=os.isatty(1))
        os.chdir(request.cwd)
        os.umask(request.umask)
        os.environ.clear()
        os.environ.update(request.env)
        os.environ.update(self.imports_set)
        sys.argv = [request.program, *request.arguments]
        conn.settimeout(None)

    def caller_event(self, conn: Any, pid: int) -> None:
        """A caller's socket is readable: if it hung up, its stage is killed."""
        try:
            data = conn.recv(4096)
        except OSError:
            data = b""
        if data:
            return
        self.selector.unregister(conn)
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
                break
            except ProcessLookupError:
                continue
        log(f"caller of stage {pid} went away: stage killed")

    def reap(self) -> None:
        """Send each ended child's exit status to its caller."""
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.children.pop(pid, None)
            if conn is None:
                continue
            if self.selector.get_map() and conn in self.selector.get_map():
                self.selector.unregister(conn)
            code = os.waitstatus_to_exitcode(status)
            with contextlib.suppress(OSError):
                send_message(conn, {"signal": -code} if code < 0 else {"exit": code})
            conn.close()


def receive(conn: socket.socket) -> tuple[Request, list[int]]:
    """The caller's request and its three file descriptors."""
    header, fds, _, _ = socket.recv_fds(conn, HEADER.size, len(STDIO))
    try:
        if not header:
            raise ConnectionAbortedError()  # a probe (runtime.server.warm_answers): no request
        if len(header) != HEADER.size:
            raise ValueError("no request")
        (size,) = HEADER.unpack(header)
        if size > MAX_REQUEST:
            raise ValueError(f"request of {size} bytes")
        data = b""
        while len(data) < size:
            chunk = conn.recv(size - len(data))
            if not chunk:
                raise ValueError("request cut short")
            data += chunk
        return Request.decode(data), fds
    except (OSError, ValueError, TypeError):
        for fd in fds:
            os.close(fd)
        raise


def peer_credentials(conn: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end."""
    import struct

    creds = struct.Struct("3i")
    return creds.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, creds.size))


def log(message: str) -> None:
    """A line in the runner's log (its stderr: .prefect/warm.log)."""
    print(
        f"{time.strftime('%Y-%m-%d %H:%M:%S')} warm runner {os.getpid()}: {message}",
        file=sys.stderr,
        flush=True,
    )


def run_child(request: Request, conn: socket.socket) -> NoReturn:
    """Run the stage as `python -m flows.run` would (runtime.guard.connect re-reads Prefect's
    settings from the caller's environment); report its end on `conn` at exit."""
    from runtime.timing import StageClock

    run = importlib.import_module(STAGE_ENTRY)

    ended: dict[str, int] = {"child_exit": 1}
    atexit.register(report_end, conn, ended)
    clock = StageClock.since(request.started_at, runner="warm")
    clock.mark("imports", at=clock.origin + request.imports)
    clock.mark("handoff")
    try:
        ended["child_exit"] = exit_code(
            run.run_command, request.arguments, clock, request.parent_pid
        )
    except KeyboardInterrupt:
        ended.pop("child_exit")
        ended["child_signal"] = int(signal.SIGINT)
        raise
    finally:
        gc.freeze()  # as flows.run's exit does
    exit_shared(ended["child_exit"])


def exit_shared(code: int) -> NoReturn:
    """Exit as the interpreter does (non-daemon threads joined, exit handlers run, output
    flushed) but without tearing down the modules: the child shares their memory with the
    runner, and freeing them all would copy every page first (about 0.5 s)."""
    threading._shutdown()  # what the interpreter's own exit does first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code & 0xFF)


def exit_code(call: Any, *args: Any) -> int:
    """`call(*args)`'s exit code as the interpreter would make it (traceback printed)."""
    try:
        code = call(*args)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        raise
    except BaseException:
        sys.excepthook(*sys.exc_info())
        return 1
    return 0 if code is None else code


def report_end(conn: socket.socket, ended: dict[str, int]) -> None:
    """At the child's exit: flush its output, then tell the caller how it ended."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    with contextlib.suppress(OSError):
        send_message(conn, ended)


def main() -> int:
    """Take the lock, import, listen, serve; in a forked child, run its stage."""
    SOCKET.parent.mkdir(parents=True, exist_ok=True)
    lock = open(LOCK, "w")  # noqa: SIM115 (held until the process ends)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log("another warm runner holds the lock; exiting")
        return 0
    started = time.perf_counter()
    began_ns = time.time_ns()
    pin_environment(os.environ)  # as flows.run does, before torch is imported
    startup_env = dict(os.environ)
    with single_threaded_blas():
        for module in warm_imports():
            try:
                importlib.import_module(module)
            except Exception as err:  # a broken module is imported (and fails) in the stage
                log(f"not imported: {module}: {err}")
    try:
        blas = BlasThreads(startup_env)
    except (ImportError, ValueError) as err:
        log(f"the BLAS threads of a cold stage are unknown ({err}); exiting")
        return 1
    if (threads := thread_count()) != 1:
        log(f"{threads} threads after the imports: forking is not safe; exiting")
        return 1
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    runner = Runner.bind(startup_env, began_ns)
    cold = ", ".join(f"{Path(path).name}: {n}" for path, n in blas.cold.items())
    log(f"ready in {time.perf_counter() - started:.1f} s at {SOCKET}; stages' BLAS threads: {cold}")
    handed = runner.serve()
    if handed is None:
        return 0
    lock.close()
    request, conn = handed
    blas.restore()
    return run_child(request, conn)


if __name__ == "__main__":
    sys.exit(main())
