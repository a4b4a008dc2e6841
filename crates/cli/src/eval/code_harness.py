# Runs /tmp/solution.py the way the reference scores code: `exec(code, {})` inside `try/except`, right
# iff exec returns. The verdict is a connection to the sandbox's init process (abstract unix socket
# `latentmas-verdict`, private to the sandbox's network namespace) made after exec returned; init counts
# it only when it comes from this process and the process then exits 0. An audit hook, which cannot be
# removed once added, refuses while the program runs every way it could make that connection itself or
# tamper with the check: unix-socket calls, replacing this process (exec), ctypes (but loading a library,
# which numpy's import does; a library's functions need a symbol look-up, which is refused), the garbage
# collector's object lists (the hook's own closure) and tracers (which could move this frame). It lets
# them through only once this frame stands on the line after the `try` (the program cannot set a frame's
# line without a tracer, and the `except` branch never gets there). Writing this process's memory
# through /proc/self/mem is stopped by the kernel: the sandbox's /proc is read-only.
import os
import socket
import sys
import traceback


def main():
    frame = sys._getframe()
    harness_pid = os.getpid()
    with open(sys.argv[1], encoding="utf-8") as f:
        code = compile(f.read(), "<string>", "exec")
    unix = socket.AF_UNIX
    getpid = os.getpid
    stream = socket.SOCK_STREAM
    raw_socket = socket.socket
    exit_now = os._exit
    flush = sys.stderr.flush
    with open(__file__, encoding="utf-8") as f:  # the line that reports, found by its text
        report_line = 1 + next(i for i, line in enumerate(f) if line.startswith("    sock = raw_socket("))

    def guard(event, args):
        if frame.f_lineno == report_line:
            return
        if event.startswith(("gc.get_", "sys.settrace", "sys.setprofile", "sys._settrace", "sys._setprofile",
                             "sys.monitoring")) or (event.startswith("ctypes.") and event != "ctypes.dlopen"):
            raise PermissionError(f"{event} is not allowed while scoring")
        if event.startswith("socket.") and getattr(args[0], "family", None) == unix and event != "socket.__new__":
            raise PermissionError("unix sockets are not allowed while scoring")
        if event == "os.exec" and getpid() == harness_pid:
            raise PermissionError("replacing the scored process is not allowed")

    sys.addaudithook(guard)
    del guard
    try:
        exec(code, {})
    except BaseException:
        traceback.print_exc()
        flush()
        exit_now(1)
    sock = raw_socket(unix, stream); sock.connect("\0latentmas-verdict"); sock.sendall(b"returned"); flush(); exit_now(0)  # noqa: E702


main()
