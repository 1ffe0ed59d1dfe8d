# The marlhf sandbox, Python side. Run as
#
#     python3 -I -S -c <this file> CONFIG
#
# with CONFIG a JSON object, in a fresh directory holding the solution, with
# file descriptor 3 open for writing: the report channel to the host.
#
# Two processes. This one, the supervisor, runs as the host's user (root when
# the host is root) and never executes untrusted code: it forks the program's
# process, waits for it with the wall-clock limit, kills every process the
# program left behind, and writes one JSON line on fd 3 saying how the
# program ended and what it returned. The program's process closes fd 3,
# joins the test's control groups (its memory and process budget), drops to
# CONFIG["uid"] (unless null), and only then runs the solution: in this
# process, or, when CONFIG["exec"] is given, by executing that command (the
# bubblewrap sandbox, with this file's "program" role inside it). It hands
# its return value (call-based problems) or a compile error to the
# supervisor through a pipe of its own; what it prints is only its output.
#
# Why it holds: the program cannot reach fd 3 (closed before any of its code
# runs; the supervisor runs as another user, or outside the program's PID
# namespace, so /proc/<supervisor>/fd, signals and ptrace are closed to
# it), so the exit status, signal, timeout and the labelling of the return
# value are the supervisor's, never the program's. The host makes this
# process a child subreaper, so every descendant the program starts - also
# one that calls setsid() or double-forks - becomes this process's child
# when its parent dies, and is killed here.
import os
import sys

REPORT_FD = 3
# Where the program's process finds its result pipe inside the bubblewrap
# sandbox.
RESULT_FD = 4
# The first byte on the result pipe, written by this runner just before the
# solution's code runs: the wall-clock limit counts from it, so the time
# bubblewrap and the interpreter take to start (long on a loaded machine)
# is not the program's. The program cannot hold it back: none of its code
# has run yet.
STARTED = b"\x01"


def main(config):
    import json
    import select
    import signal
    import time

    timeout = config["timeout_ms"] / 1000.0
    setup = config["setup_ms"] / 1000.0
    cap = config["cap"]
    if config.get("exec") is None:
        # Loaded here once so the program's process starts with them.
        load_prelude()

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        program(config, write_end)  # never returns
    os.close(write_end)

    # Until the program's code starts, the setup allowance too.
    deadline = time.monotonic() + setup + timeout
    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    received = {"chunks": [], "size": 0, "truncated": False, "started": False}

    def take(data):
        """Keeps what the program's process handed over, up to `cap`
        bytes; the start marker sets the deadline."""
        nonlocal deadline
        if not received["started"]:
            received["started"] = True
            if data.startswith(STARTED):
                deadline = time.monotonic() + timeout
                data = data[len(STARTED) :]
        size = received["size"]
        if size < cap:
            received["chunks"].append(data[: cap - size])
        received["truncated"] = received["truncated"] or size + len(data) > cap
        received["size"] = size + len(data)

    status, timed_out = None, False
    reading = True
    while status is None:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            os.kill(pid, signal.SIGKILL)
            status = os.waitpid(pid, 0)[1]
            break
        watch = [read_end] if reading else []
        if pidfd is not None:
            watch.append(pidfd)
        ready, _, _ = select.select(watch, [], [], left if pidfd is not None else min(left, 0.005))
        if reading and read_end in ready:
            data = os.read(read_end, 65536)
            if data:
                take(data)
            else:
                reading = False
        done, status_value = os.waitpid(pid, os.WNOHANG)
        if done:
            status = status_value
    kill_descendants()
    # Every writer is gone now: what is left in the pipe is all there is.
    while reading:
        data = os.read(read_end, 65536)
        if not data:
            break
        take(data)
    chunks, truncated = received["chunks"], received["truncated"]

    report = {"result": b"".join(chunks).decode("utf-8", "replace"), "result_truncated": truncated}
    if timed_out:
        report["status"] = "timeout"
    elif os.WIFSIGNALED(status):
        report["status"] = "signaled"
        report["signal"] = os.WTERMSIG(status)
    else:
        report["status"] = "exited"
        report["code"] = os.WEXITSTATUS(status)
    os.write(REPORT_FD, (json.dumps(report) + "\n").encode())


def children(parent):
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry, "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The fields after the command name, which is in parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[1]) == parent:
            found.append(int(entry))
    return found


def kill_descendants():
    # Orphans are re-parented to this process (a child subreaper), so
    # killing its children until none is left reaches every descendant.
    import signal

    me = os.getpid()
    while True:
        kids = children(me)
        if not kids:
            return
        for kid in kids:
            try:
                os.kill(kid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for kid in kids:
            try:
                os.waitpid(kid, 0)
            except ChildProcessError:
                pass


# What the APPS harness makes available to every solution without an import.
PRELUDE_MODULES = (
    "io", "json", "traceback", "time", "itertools", "collections", "math", "fractions",
    "random", "heapq", "bisect", "string", "re", "functools", "operator", "typing",
    "socket", "_socket", "builtins",
)
PRELUDE = """
import sys, time, itertools, collections, math, fractions, random, heapq, bisect, string, re, functools, operator
from itertools import accumulate, product, permutations, combinations
from collections import Counter, OrderedDict, deque, defaultdict, ChainMap
from functools import lru_cache, reduce
from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2
from heapq import *
from typing import List, Tuple, Dict, Optional, Set
"""
EXIT_COMPILE_ERROR = 3
EXIT_SETUP_FAILED = 70


def load_prelude():
    for name in PRELUDE_MODULES:
        __import__(name)
    refuse_network()


def program(config, result_fd):
    """The program's process: give up the report channel, join the test's
    control groups, give up the user, then run the solution (here, or in
    the command CONFIG["exec"] names). Never returns."""
    try:
        os.close(REPORT_FD)
        # Before dropping root: the groups' files are root's.
        for procs in config.get("cgroups", []):
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
        uid = config.get("uid")
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            if os.getuid() != uid or os.geteuid() != uid:
                raise PermissionError("still uid %d after setuid(%d)" % (os.getuid(), uid))
        command = config.get("exec")
        if command is not None:
            # The result pipe at the number the command's runner expects;
            # every other descriptor of this process closes on exec.
            if result_fd != RESULT_FD:
                os.dup2(result_fd, RESULT_FD)
                os.close(result_fd)
            os.execv(command[0], command)
    except BaseException as error:
        sys.stderr.write("marlhf sandbox setup failed: %s: %s\n" % (type(error).__name__, error))
        sys.stderr.flush()
        os._exit(EXIT_SETUP_FAILED)
    os.write(result_fd, STARTED)
    run_then_exit(lambda: run_solution(config["mode"], config.get("fn_name"), result_fd, config["solution"]))


def program_role(config):
    """Inside the bubblewrap sandbox: run the solution, with the result pipe
    on RESULT_FD. Never returns."""

    def run():
        import resource

        # bubblewrap's --chdir sets PWD; the program gets PATH only.
        os.environ.pop("PWD", None)
        # In this user namespace RLIMIT_NPROC counts this program's
        # processes alone (Linux >= 5.14): its budget, whoever else runs
        # as the same user.
        limit = config["max_processes"]
        resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
        load_prelude()
        os.write(RESULT_FD, STARTED)
        return run_solution(config["mode"], config.get("fn_name"), RESULT_FD, config["solution"])

    run_then_exit(run)


def run_then_exit(run):
    """Runs the solution through `run` and exits with its status: a
    SystemExit's code, 1 after an uncaught exception (its traceback on
    stderr). Never returns."""
    status = EXIT_SETUP_FAILED
    try:
        status = run()
    except SystemExit as done:
        status = exit_code(done.code)
    except BaseException:
        import traceback

        traceback.print_exc()
        status = 1
    finally:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(status)


def exit_code(code):
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    sys.stderr.write("%s\n" % (code,))
    return 1


def run_solution(mode, fn_name, result_fd, solution):
    import builtins
    import io
    import json

    # `python3 -S` skips the site module, which is what defines exit() and
    # quit(); solutions call them freely.
    builtins.exit = sys.exit
    builtins.quit = sys.exit
    with open(solution, encoding="utf-8", errors="replace") as handle:
        source = handle.read()
    try:
        code = compile(source, "solution.py", "exec")
    except (SyntaxError, ValueError) as error:
        message = "%s: %s" % (type(error).__name__, error)
        os.write(result_fd, json.dumps({"compile_error": message}).encode())
        return EXIT_COMPILE_ERROR

    namespace = {"__name__": "__main__" if mode == "stdio" else "solution", "__builtins__": builtins}
    exec(PRELUDE, namespace)
    if mode == "stdio":
        exec(code, namespace)
        return 0

    arguments = json.loads(sys.stdin.read())
    # The solution's own prints are not its return value.
    host_stdout = sys.stdout
    sys.stdout = io.StringIO()
    exec(code, namespace)
    target = None
    solution_class = namespace.get("Solution")
    if isinstance(solution_class, type) and hasattr(solution_class, fn_name):
        target = getattr(solution_class(), fn_name)
    elif callable(namespace.get(fn_name)):
        target = namespace[fn_name]
    if target is None:
        raise NameError("the solution defines neither %s() nor Solution.%s()" % (fn_name, fn_name))
    if isinstance(arguments, list):
        result = target(*arguments)
    else:
        result = target(arguments)
    sys.stdout = host_stdout
    try:
        line = json.dumps({"value": plain(result)}, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError("the return value cannot be written as JSON: %s" % error)
    data = line.encode()
    while data:
        data = data[os.write(result_fd, data) :]
    return 0


def plain(value):
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, (set, frozenset)):
        items = [plain(item) for item in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    return value


def refuse_network():
    # A guard, not a wall: it stops ordinary socket use. The host adds a
    # network namespace when it can (see NetworkIsolation).
    import _socket
    import socket

    message = "network access is disabled in the marlhf sandbox"

    def refuse(*args, **kwargs):
        raise PermissionError(message)

    class RefusedSocket:
        def __new__(cls, *args, **kwargs):
            raise PermissionError(message)

    for module in (socket, _socket):
        for name in ("socket", "SocketType"):
            if hasattr(module, name):
                setattr(module, name, RefusedSocket)
        for name in (
            "socketpair",
            "fromfd",
            "create_connection",
            "create_server",
            "getaddrinfo",
            "gethostbyname",
            "gethostbyname_ex",
            "gethostbyaddr",
        ):
            if hasattr(module, name):
                setattr(module, name, refuse)


def start():
    import json

    config = json.loads(sys.argv[1])
    if config.get("role") == "program":
        program_role(config)
    try:
        main(config)
    except BaseException as error:  # a fault of the sandbox itself, never the program's
        try:
            kill_descendants()
        except BaseException:
            pass
        os.write(REPORT_FD, (json.dumps({"harness_error": "%s: %s" % (type(error).__name__, error)}) + "\n").encode())
        os._exit(EXIT_SETUP_FAILED)


start()
