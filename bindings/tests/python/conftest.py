"""Fixtures for the Python binding tests.

The generated module (bindings/python/karmyq_ffi.py) loads
libkarmyq_ffi.so from its own folder, so a session folder gets a copy of
the module beside a link to the debug library that `cargo test` built.
KARMYQ_TARGET: the cargo target folder (default: target/debug), holding
sync-test-server; KARMYQ_LIB: the library (default: the one in KARMYQ_TARGET).
"""

import os
import pathlib
import queue
import shutil
import subprocess
import sys
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
TARGET = pathlib.Path(os.environ.get("KARMYQ_TARGET", ROOT / "target" / "debug"))
LIB = "libkarmyq_ffi.dylib" if sys.platform == "darwin" else "libkarmyq_ffi.so"

# How long any wait for another device or the server may take.
PATIENCE = 20.0


def _load_module(folder: pathlib.Path):
    shutil.copy(ROOT / "bindings" / "python" / "karmyq_ffi.py", folder / "karmyq_ffi.py")
    lib = pathlib.Path(os.environ.get("KARMYQ_LIB", TARGET / LIB))
    if not lib.exists():
        raise RuntimeError(f"{lib} is missing: run cargo test --workspace (or cargo build -p karmyq-ffi) first")
    os.symlink(lib, folder / LIB)
    sys.path.insert(0, str(folder))
    import karmyq_ffi

    return karmyq_ffi


@pytest.fixture(scope="session")
def karmyq(tmp_path_factory):
    """The generated module, loaded with the debug library."""
    return _load_module(tmp_path_factory.mktemp("module"))


@pytest.fixture
def server(tmp_path):
    """A real sync server (target/debug/sync-test-server); yields its sync URL."""
    exe = TARGET / "sync-test-server"
    if not exe.exists():
        raise RuntimeError(f"{exe} is missing: run cargo test --workspace first")
    proc = subprocess.Popen(
        [str(exe), str(tmp_path / "server")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        line = lines.get(timeout=PATIENCE)
        assert line.startswith("listening "), f"sync-test-server said {line!r}"
        yield f"ws://{line.split()[1]}/v1/sync"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def device(karmyq, tmp_path):
    """Opens a fresh client in its own folder; closes them all at the end."""
    opened = []

    def open_device(name: str):
        folder = tmp_path / name
        folder.mkdir()
        client = karmyq.KarmyqClient.open(str(folder))
        opened.append(client)
        return client

    yield open_device
    for client in opened:
        client.close()


def wait_until(what: str, cond, patience: float = PATIENCE):
    """Polls `cond` until it is true, or fails after `patience` seconds."""
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")
