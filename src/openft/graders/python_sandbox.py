"""The child process of a Python grader (run as `python -I -m openft.graders.python_sandbox`, empty environment,
its own temporary directory as working directory). Before any user code runs it:

1. leaves the network: a new network namespace with no interfaces (when the kernel allows it);
2. sets CPU-time, address-space, file-size, open-file and process limits;
3. installs an audit hook (which Python code cannot remove) that refuses sockets, subprocesses, ctypes, and
   any file access outside its directory except reading the Python installation's own files.

It reads {"source", "sample", "item"} as JSON on stdin and writes {"score"} or {"error"} as JSON on stdout;
what the user's code prints goes to stderr (capped by the file-size limit of the parent's capture file).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback

CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
BLOCKED_EVENTS = (
    "socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.fork", "os.forkpty", "os.kill",
    "os.killpg", "ctypes.", "pty.", "os.chroot", "os.setuid", "resource.setrlimit", "resource.prlimit",
    "sys._current_frames", "urllib.", "http.", "ftplib.", "smtplib.", "imaplib.", "poplib.", "telnetlib.",
    "webbrowser.", "shutil.rmtree", "os.link", "os.symlink", "os.truncate", "os.startfile",
)  # fmt: skip
PATH_EVENTS = ("open", "os.listdir", "os.scandir", "os.chdir", "os.remove", "os.rename", "os.rmdir", "os.mkdir",
               "os.chmod", "os.chown", "os.utime", "glob.glob", "shutil.copyfile", "os.walk")  # fmt: skip


def leave_network() -> str:
    """Enter an empty network namespace; 'namespace' if it worked, else 'audit-hook-only'."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        for flags in (CLONE_NEWNET, CLONE_NEWUSER | CLONE_NEWNET):
            if libc.unshare(flags) == 0:
                return "namespace"
    except OSError:
        pass
    finally:  # the user's code must import ctypes afresh, under the audit hook that refuses it
        for name in [m for m in sys.modules if m == "ctypes" or m.startswith(("ctypes.", "_ctypes"))]:
            del sys.modules[name]
    return "audit-hook-only"


def set_limits(cpu_s: int, memory_bytes: int, file_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def install_guard(workdir: str) -> None:
    readable = tuple(
        os.path.realpath(p) + os.sep
        for p in {sys.prefix, sys.base_prefix, sys.exec_prefix, *(p for p in sys.path if p)}
        if p and os.path.isdir(p)
    )
    own = os.path.realpath(workdir) + os.sep

    def allowed(path: object, write: bool) -> bool:
        if isinstance(path, int):  # an already-open descriptor (stdio)
            return path in (0, 1, 2)
        if not isinstance(path, str | bytes):
            return False
        text = os.fsdecode(path)
        real = os.path.realpath(os.path.join(own, text)) + os.sep
        if real.startswith(own):
            return True
        return not write and real.startswith(readable)

    def hook(event: str, args: tuple) -> None:
        if event.startswith("ctypes."):  # ImportError: libraries that try `import ctypes` carry on without it
            raise ImportError(f"{event} is not allowed in a Python grader")
        if event.startswith(BLOCKED_EVENTS):
            raise PermissionError(f"{event} is not allowed in a Python grader")
        if event in PATH_EVENTS and args:
            write = event not in ("open", "os.listdir", "os.scandir", "glob.glob", "os.walk")
            if event == "open":
                mode, flags = str(args[1] or "r"), args[2] if len(args) > 2 else 0
                write = any(c in mode for c in "wax+") or bool(
                    isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC)
                )
            if not allowed(args[0] if args[0] is not None else ".", write):
                raise PermissionError(f"{event} outside the grader's directory is not allowed: {args[0]!r}")

    sys.addaudithook(hook)


def main() -> None:
    request = json.loads(sys.stdin.read())
    limits = request["limits"]
    network = leave_network()
    set_limits(limits["cpu_s"], limits["memory_bytes"], limits["output_bytes"])
    result_stream = sys.stdout
    sys.stdout = sys.stderr  # the user's prints must not corrupt the result
    install_guard(os.getcwd())
    try:
        namespace: dict = {"__name__": "grader"}
        exec(compile(request["source"], "grader.py", "exec"), namespace)  # the sandboxed user code itself
        grade = namespace.get("grade")
        if not callable(grade):
            raise NameError("the source must define grade(sample, item)")
        score = grade(request["sample"], request["item"])
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise TypeError(f"grade() must return a number, got {type(score).__name__}")
        answer = {"score": float(score), "network": network}
    except MemoryError:
        answer = {"error": "MemoryError: the grader exceeded its memory limit", "kind": "MemoryError"}
    except BaseException as exc:  # noqa: BLE001 - every failure of user code is reported, never raised
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        answer = {"error": "".join(lines[-6:])[-4000:], "kind": type(exc).__name__}
    result_stream.write(json.dumps(answer))
    result_stream.flush()


if __name__ == "__main__":
    main()
