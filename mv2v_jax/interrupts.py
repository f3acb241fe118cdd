"""Ctrl-C that ends a tool with one line and exit 130 wherever it lands, never a crash.

Python turns SIGINT into a KeyboardInterrupt raised in the main thread at whatever bytecode runs
next. Four places of this project's stack do not survive that (`bench/interrupts.py` finds them):

- orbax runs its tensorstore reads and writes in an asyncio loop of the main thread. Cut there, the
  loop is closed while tensorstore's threads still finish the reads, and each one then calls into the
  closed loop: `RuntimeError: Event loop is closed` tracebacks from native threads, sometimes a
  restore reported as a damaged file (exit 1), and native threads calling into Python while the
  interpreter shuts down. `deferred_interrupt` holds Ctrl-C until such a call returns.
- an import cut in its middle (JAX, orbax, PyAV and TensorBoard are imported where first used) can
  turn into an ImportError or lose the KeyboardInterrupt: `whole_imports` finishes each import first.
- jax's gc callback (`_xla_gc_callback`), `__del__` methods and weakref callbacks cannot raise: a
  KeyboardInterrupt landing in one is printed as "Exception ignored in ..." and lost, and the tool
  carries on (jax-ml/jax#18246). `redeliver_lost_interrupts` raises it again in the main thread.
- the interpreter's shutdown after `sys.exit`, with native threads (XLA's, tensorstore's, orbax's
  writers, TensorBoard's) still running and calling back into a half-torn-down interpreter, the way
  to "Fatal Python error: Segmentation fault" (jax-ml/jax#15810, python/cpython#102397).
  `exit_now` ends an interrupted tool without it, once the `finally` blocks have run.
"""

from __future__ import annotations

import _thread
import builtins
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

RESEND_AFTER_S = 0.01  # a Ctrl-C a gc callback swallowed is sent again this much later
INTERRUPTED = 130  # a process ended by Ctrl-C (SIGINT) exits 128 + 2 in a shell


@contextlib.contextmanager
def deferred_interrupt(what: str | None = None) -> Iterator[None]:
    """Ctrl-C inside the block raises KeyboardInterrupt when the block ends, not in its middle: for
    calls that leave native threads calling back into Python when cut (orbax's reads and writes). The
    first Ctrl-C says what it waits for (`what`: "the weights are read"; None: a wait too short to
    mention). Only the main thread gets KeyboardInterrupt, and a SIGINT that is ignored or has another
    handler (an enclosing block's) is left as it is."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    pressed = []

    def hold(signum: int, frame: Any) -> None:
        if not pressed and what:
            print(f"\nnote: Ctrl-C: stopping once {what}", file=sys.stderr)
        pressed.append(signum)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if pressed:
        raise KeyboardInterrupt


@contextlib.contextmanager
def whole_imports() -> Iterator[None]:
    """Every import statement in the block finishes before a Ctrl-C takes effect. The tools import JAX,
    orbax, PyAV and TensorBoard where they are first used (so that `--help` answers at once), and an
    import cut in its middle goes wrong: an extension module's initialisation turns the KeyboardInterrupt
    into an ImportError, a half-initialised module stays behind ("cannot load module more than once per
    process"), or the KeyboardInterrupt is lost (`import torch`, which tensorboardX does when it is
    installed)."""
    original = builtins.__import__

    def import_whole(*args: Any, **kwargs: Any) -> Any:
        with deferred_interrupt():
            return original(*args, **kwargs)

    builtins.__import__ = import_whole
    try:
        yield
    finally:
        builtins.__import__ = original


def redeliver_lost_interrupts(hook: Callable[[Any], None]) -> Callable[[Any], None]:
    """`sys.unraisablehook` that has a KeyboardInterrupt a gc callback or `__del__` swallowed raised
    again in the main thread, outside the callback, instead of printing it and going on; everything else
    goes to `hook`."""

    def unraisable(info: Any) -> None:
        if issubclass(info.exc_type, KeyboardInterrupt) and threading.current_thread() is threading.main_thread():
            # Sent again from another thread a moment later: the main thread runs a signal's handler at
            # its next instruction, which here is still inside this hook, where it would be lost again
            # (and if the resent one lands in a callback too, it comes back here).
            resend = threading.Timer(RESEND_AFTER_S, _thread.interrupt_main, (signal.SIGINT,))
            resend.daemon = True
            resend.start()
            return
        hook(info)

    return unraisable


def exit_now(status: int) -> NoReturn:
    """Ends the process with `status` once stdout and stderr are flushed, without the interpreter's
    shutdown (module teardown, atexit handlers, joining threads): an interrupted tool may still have
    native threads running, which crash a shutting-down interpreter when they call back. Whatever
    must be written is written by the `finally` blocks the KeyboardInterrupt ran on its way out."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more can be said
            stream.flush()
    os._exit(status)


def exit_interrupted() -> NoReturn:
    """Ends an interrupted tool with its one line, on a line of its own whatever the interrupt cut short
    (a progress bar mid-refresh, the terminal's "^C"), and exit 130 (`exit_now`)."""
    print("\nerror: interrupted (Ctrl-C)", file=sys.stderr)
    exit_now(INTERRUPTED)


def _interrupted_while_starting(signum: int, frame: Any) -> None:
    exit_interrupted()


def guard_start() -> None:
    """From now until `end_start_guard`, Ctrl-C ends the process at once with `exit_interrupted`. For a
    tool's module-level imports (JAX, flax, torch: seconds), which run before `config.run_app` answers
    Ctrl-C, and where a KeyboardInterrupt is a traceback from inside an import. The tool has written
    nothing yet, so there is nothing to finish. An ignored SIGINT stays ignored (see `run_app`)."""
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        signal.signal(signal.SIGINT, _interrupted_while_starting)


def end_start_guard() -> None:
    """Ctrl-C raises KeyboardInterrupt again, if `guard_start` had it end the process."""
    if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
        signal.signal(signal.SIGINT, signal.default_int_handler)
