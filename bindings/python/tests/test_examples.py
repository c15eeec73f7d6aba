"""The package's examples (the seeds' examples in Python) print the
seeds' lines and end by themselves."""
import os
import pathlib
import subprocess
import sys

EXAMPLES = pathlib.Path(__file__).parent.parent / "examples"


def run_example(name, tmp_path, *args):
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout
    return proc.stdout.splitlines()


def test_inter_process_ping_pong(bus_dir):
    lines = run_example("inter_process_ping_pong.py", bus_dir, "--rounds", "3",
                        "--interval", "0.05")
    for text, n in [("Hello from proc1", 3), ("Hello from proc2", 3),
                    ("Received via SUBSCRIBE API in proc1: Hit from proc2", 3),
                    ("Received via SUBSCRIBE API in proc2: Hit from proc1", 3),
                    ("Received via STREAM API in proc2: Hit from proc1", 3)]:
        assert sum(line.startswith("INFO ") and line.endswith(text) for line in lines) == n, \
            (text, lines)


def test_request_api(bus_dir):
    lines = run_example("request_api.py", bus_dir, "--rounds", "4", "--interval", "0.01")
    assert lines == ["Requesting", "Got answer: Yay"] * 4
