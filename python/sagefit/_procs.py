"""Process helpers shared by the tools that run a job's workers as local
processes (mwms_compare, bench_allreduce)."""

import os
import signal


def kill_groups(procs):
    """SIGKILL the process group of every process still running (each was
    started with start_new_session=True, so a worker's own children go
    too), and reap it."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def read_all(f):
    """Everything a worker has written so far to f, a file of ours it
    writes through its own descriptor."""
    f.flush()
    f.seek(0)
    return f.read()
