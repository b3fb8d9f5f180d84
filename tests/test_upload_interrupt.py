"""Ctrl-C during an upload ends the process at once, even with requests still on the wire.

The proxy holds every Put Page answer for several seconds; a SIGINT while they are in flight must
end the CLI in well under that time (exit 130, the one line), not after the held requests return,
and ``--resume`` must then finish the blob exactly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from azurite import Azurite, RecordingProxy, Rule, running_azurite
from test_upload import ROOT, Place, assert_same_fixed_vhd, fixed_vhd, make_raw

MiB = 1024 * 1024
HOLD = 8.0  # seconds the proxy holds each Put Page


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    with running_azurite() as service:
        yield service


@pytest.fixture(scope="module")
def proxy(azurite: Azurite) -> Iterator[RecordingProxy]:
    p = RecordingProxy(azurite.port)
    yield p
    p.close()


def test_ctrl_c_with_requests_in_flight_exits_at_once(tmp_path: Path, azurite: Azurite,
                                                      proxy: RecordingProxy) -> None:
    proxy.clear()
    place = Place(azurite, proxy)
    image = make_raw(tmp_path / "disk.raw", 32 * MiB, seed=5)
    expected = fixed_vhd(image, tmp_path)
    proxy.add_rule(Rule(lambda r: r.is_put_page, "delay", times=4, seconds=HOLD))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AZURE_STORAGE_CONNECTION_STRING": place.proxy_connection_string}
    command = [sys.executable, "-m", "vhdtool", "upload", str(image), f"{place.container}/{place.blob}",
               "--threads", "4"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(proxy.put_pages()) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert len(proxy.put_pages()) >= 4, "the upload never had four Put Page requests in flight"
    signalled = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - signalled
    assert proc.returncode == 130 and stderr == "vhdtool: interrupted\n", stderr
    assert took < HOLD / 2, f"exit took {took:.1f} s: it waited for the requests on the wire"

    assert proxy.wait_idle(timeout=60)  # the held requests land, as a service would apply them
    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_fixed_vhd(place.download(), expected)
