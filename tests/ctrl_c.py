"""Children the tests send Ctrl-C must take it even when the suite runs with SIGINT ignored (`nohup make
test &`, a background job, a CI launcher): a child inherits an ignored SIGINT, and Python then leaves it
ignored instead of raising KeyboardInterrupt."""

import signal


def take_ctrl_c() -> None:
    """A `preexec_fn`: the child's SIGINT back to its default, which Python turns into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
