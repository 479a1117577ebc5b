"""Find the processes of a running server: its model replicas (to kill one) and its Ray tree.

Ray names its worker processes by what they run (`ray::ServeReplica:APP:DEPLOYMENT`), so a
replica is found by its process title, scoped to the descendants of the process that started
the server when that is known.
"""

from __future__ import annotations

import psutil

from wattwise.serve.settings import APP_NAME, MODEL_DEPLOYMENT


def _title(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


def descendants(root_pid: int) -> list[psutil.Process]:
    """Every live process below `root_pid` (empty when it is gone)."""
    try:
        return psutil.Process(root_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def replica_processes(
    root_pid: int | None = None, deployment: str = MODEL_DEPLOYMENT, app: str = APP_NAME
) -> list[psutil.Process]:
    """Live replica processes of `deployment` (under `root_pid` when given)."""
    title = f"ray::ServeReplica:{app}:{deployment}"
    candidates = descendants(root_pid) if root_pid else list(psutil.process_iter())
    return [p for p in candidates if _title(p).startswith(title)]


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """Those of `processes` still running (zombies count as gone)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            continue
    return running
