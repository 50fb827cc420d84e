"""Process discovery of ``executors.ray_orphans`` (psutil): real child processes, found by the
mark in their environment and by a file they hold open under a session directory."""

from __future__ import annotations

import os
import subprocess
import sys

from granary_pipe.executors import ray_orphans

HOLD = "import sys, time; f = open(sys.argv[1], 'w'); print('ready', flush=True); time.sleep(60)"


def test_marked_and_session_processes_are_found_and_others_are_not(tmp_path):
    session = tmp_path / "session_2026-01-01_00-00-00_1"
    (session / "logs").mkdir(parents=True)
    other = tmp_path / "session_other"
    other.mkdir()
    env = {**os.environ, ray_orphans.MARK_ENV: "mark-1"}
    procs = [subprocess.Popen([sys.executable, "-c", HOLD, str(path)], env=e, stdout=subprocess.PIPE, text=True)
             for path, e in ((session / "logs" / "raylet.out", env), (other / "x.log", dict(os.environ)))]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        marked, holder = procs
        assert ray_orphans.marked_processes("mark-1") == [marked.pid]
        assert ray_orphans.marked_processes("mark-2") == []
        assert ray_orphans.session_processes(str(session)) == [marked.pid]
        assert ray_orphans.session_processes(str(other)) == [holder.pid]
        assert os.getpid() not in ray_orphans.session_processes(str(tmp_path))
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert ray_orphans.marked_processes("mark-1") == []
