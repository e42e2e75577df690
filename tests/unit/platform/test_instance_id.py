"""Replicas sharing a data dir (Compose's ``--scale`` over one volume) never share an
instance id, while a restarted replica takes back a dead one's id (and so recovers
the commands it was executing at once). Before, every replica read the same
``instance_id`` file: a restarting replica reset a live one's EXECUTING commands as
its own and they ran twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from cockpit.bootstrap import bootstrap
from cockpit.settings import load_settings

_HOLD = """
import sys, time
from cockpit.bootstrap import bootstrap
from cockpit.settings import load_settings
print(bootstrap(load_settings(data_dir=sys.argv[1])).instance_id, flush=True)
time.sleep(60)
"""


async def test_live_replicas_sharing_a_data_dir_get_their_own_ids_and_a_dead_ones_is_taken_back(
    tmp_path: Path,
) -> None:
    other = subprocess.Popen([sys.executable, "-c", _HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None
        theirs = other.stdout.readline().strip()
        mine = bootstrap(load_settings(data_dir=tmp_path))
        assert theirs and mine.instance_id != theirs
        os.kill(other.pid, signal.SIGKILL)  # dies without a word: its lock goes with it
        other.wait(10)
        restarted = bootstrap(load_settings(data_dir=tmp_path))
        assert restarted.instance_id == theirs
        await restarted.stop()
        again = bootstrap(load_settings(data_dir=tmp_path))  # a clean stop frees the id too
        assert again.instance_id == theirs
        await again.stop()
        await mine.stop()
    finally:
        if other.poll() is None:
            other.kill()


async def test_a_configured_instance_id_wins(tmp_path: Path) -> None:
    cockpit = bootstrap(load_settings(data_dir=tmp_path, instance_id="pod-7"))
    assert cockpit.instance_id == "pod-7"
    await cockpit.stop()
