"""The console script leaves without the interpreter's teardown, yet loses nothing: status, output, exit handlers."""

import os
import subprocess
import sys

import pytest

RUN = """
import atexit, sys, threading, time
from pathlib import Path
from dynamics.cli.app import entry
atexit.register(lambda: print("exit handler ran", flush=False))
if len(sys.argv) > 2 and sys.argv[1] == "--thread":
    mark = Path(sys.argv.pop(2)); sys.argv.pop(1)
    threading.Thread(target=lambda: (time.sleep(0.5), mark.write_text("done"))).start()
sys.argv = ["mdyn", *sys.argv[1:]]
entry()
"""


def mdyn(*args: str) -> subprocess.CompletedProcess:
    # Buffered streams, as for a user without PYTHONUNBUFFERED: what is not flushed is lost.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    return subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize(
    "args, status",
    [(["--version"], 0), (["fit", "--store", "/nonexistent/store"], 2), (["no-such-command"], 2)],
)
def test_the_status_the_output_and_the_exit_handlers_survive_the_fast_exit(args, status):
    done = mdyn(*args)
    assert done.returncode == status, done.stderr
    # An exit handler's print, buffered and never flushed by it, still reaches the pipe.
    assert done.stdout.splitlines()[-1] == "exit handler ran"
    if status == 0:
        assert done.stdout.startswith("mdyn ")
    else:
        assert done.stderr.strip() and "Traceback" not in done.stderr


def test_a_thread_still_running_is_waited_for(tmp_path):
    mark = tmp_path / "mark"
    done = mdyn("--thread", str(mark), "--version")
    assert done.returncode == 0 and mark.read_text() == "done"
    assert done.stdout.splitlines()[-1] == "exit handler ran"


def test_long_output_into_a_pipe_arrives_whole():
    done = mdyn("suite", "build", "--help")
    assert done.returncode == 0 and "--preset" in done.stdout
    assert done.stdout.rstrip().endswith("exit handler ran")
