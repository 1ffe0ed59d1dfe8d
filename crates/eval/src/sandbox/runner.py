# The marlhf sandbox's entry point. It runs as `python3 -I -S runner.py MODE
# NONCE [FN_NAME]` in a fresh directory that holds `solution.py`. Lines it
# prints for the host carry a per-run nonce, so a solution cannot forge them.
import builtins
import sys


def _refuse_network():
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


_refuse_network()
# `python3 -S` skips the site module, which is what defines exit() and quit();
# solutions call them freely.
builtins.exit = sys.exit
builtins.quit = sys.exit

# What the APPS harness makes available to every solution without an import.
PRELUDE = """
import sys, time, itertools, collections, math, fractions, random, heapq, bisect, string, re, functools, operator
from itertools import accumulate, product, permutations, combinations
from collections import Counter, OrderedDict, deque, defaultdict, ChainMap
from functools import lru_cache, reduce
from math import sqrt, sin, cos, tan, ceil, fabs, floor, gcd, exp, log, log2
from heapq import *
from typing import List, Tuple, Dict, Optional, Set
"""

mode, nonce = sys.argv[1], sys.argv[2]
with open("solution.py", encoding="utf-8", errors="replace") as handle:
    source = handle.read()
try:
    code = compile(source, "solution.py", "exec")
except (SyntaxError, ValueError) as error:
    sys.stderr.write("MARLHF-COMPILE-ERROR %s %s: %s\n" % (nonce, type(error).__name__, error))
    sys.exit(3)

namespace = {"__name__": "__main__" if mode == "stdio" else "solution", "__builtins__": builtins}
exec(PRELUDE, namespace)

if mode == "stdio":
    exec(code, namespace)
else:
    import io
    import json

    fn_name = sys.argv[3]
    arguments = json.loads(sys.stdin.read())
    host_stdout = sys.stdout
    # The solution's own prints must not be mistaken for its return value.
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

    sys.stdout = host_stdout
    try:
        line = json.dumps(plain(result), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError("the return value cannot be written as JSON: %s" % error)
    host_stdout.write("MARLHF-RESULT %s %s\n" % (nonce, line))
    host_stdout.flush()
