"""Kill the primary at random moments and check what survived: the tests' and the bench's harness.

Real processes: `wattwise train --role primary` and `--role standby` with the same config. Each
round waits until a standby is warm, waits until the primary passes a random step, SIGKILLs it,
starts a replacement standby, and watches the promoted one resume. The run's journal
(`events.jsonl`) says what each process acknowledged, so the losses are counted from facts the
processes wrote, not from guesses:

- lost acknowledged steps = newest checkpoint step the killed primary acknowledged − the step the
  next primary resumed from (must be 0 with sync replication);
- promotion time = first resumed step's time − kill time.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattwise.train.config import load_settings
from wattwise.train.journal import JournalReader
from wattwise.train.lease import make_lease

CLI = "from wattwise.cli import main; main()"


def tiny_settings(root: Path, **overrides) -> dict[str, Any]:
    """A from-scratch digits-cnn small enough that a step takes milliseconds on one thread,
    with two local replicas and a 1.5 s lease: the model of the chaos tests and bench."""
    settings: dict[str, Any] = {
        "model": "digits-cnn",
        "from_scratch": True,
        "digits_cnn": {"channels": [4, 8], "hidden": 16},
        "steps": 40,
        "batch_size": 16,
        "learning_rate": 0.003,
        "threads": 1,
        "checkpoint": {"every_steps": 10, "keep_last": 3},
        "replicas": [str(root / "replica-a"), str(root / "replica-b")],
        "run_dir": str(root / "run"),
        "lease": {"ttl_s": 1.5, "poll_s": 0.05},
    }
    settings.update(overrides)
    return settings


def write_config(root: Path, **overrides) -> Path:
    """`tiny_settings` as `root/train.yaml`."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    path = root / "train.yaml"
    path.write_text(yaml.safe_dump(tiny_settings(root, **overrides)))
    return path


@dataclass
class KillRecord:
    """One SIGKILL of a primary and what the next primary found.

    Attributes:
        killed_pid: the primary that was killed.
        last_trained_step: its last step in the journal before the kill.
        acknowledged_step: the newest checkpoint step acknowledged before the kill by any primary
            (committed on every replica for sync; enqueued for async).
        lag_steps_reported: the replication lag the killed primary last logged (async window).
        bound_steps: the configured bound (queue size + 1) × interval.
        resumed_step: the step the next primary resumed from (0: fresh start).
        promotion_s: seconds from the kill to the next primary's first resumed step.
    """

    killed_pid: int
    last_trained_step: int
    acknowledged_step: int
    lag_steps_reported: int
    bound_steps: int
    resumed_step: int = 0
    promotion_s: float = float("nan")

    @property
    def lost_acknowledged_steps(self) -> int:
        """Acknowledged checkpoint steps that did not survive (0 is the sync promise)."""
        return max(0, self.acknowledged_step - self.resumed_step)


@dataclass
class ChaosReport:
    """What a chaos run did."""

    kills: list[KillRecord] = field(default_factory=list)
    finished: bool = False
    wall_s: float = 0.0

    def promotion_percentiles(self) -> dict[str, float]:
        """p50 and p95 of promotion seconds over the kills."""
        values = sorted(k.promotion_s for k in self.kills if k.promotion_s == k.promotion_s)
        if not values:
            return {"p50": float("nan"), "p95": float("nan")}
        p95_index = min(len(values) - 1, round(0.95 * (len(values) - 1)))
        return {"p50": statistics.median(values), "p95": values[p95_index]}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "kills": len(self.kills),
            "finished": self.finished,
            "wall_s": self.wall_s,
            "lost_acknowledged_steps": [k.lost_acknowledged_steps for k in self.kills],
            "lag_steps_reported": [k.lag_steps_reported for k in self.kills],
            "promotion_s": [k.promotion_s for k in self.kills],
            **{f"promotion_s_{k}": v for k, v in self.promotion_percentiles().items()},
        }


def start_train(
    config: Path, role: str, log_dir: Path, env: dict | None = None
) -> subprocess.Popen:
    """Start `wattwise train --config CONFIG --role ROLE --json` in its own process group."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stamp = f"{role}-{time.monotonic_ns()}"
    with open(log_dir / f"{stamp}.out", "wb") as out, open(log_dir / f"{stamp}.err", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-c", CLI, "train", "--config", str(config), "--role", role, "--json"],
            stdout=out,
            stderr=err,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )


_READERS: dict[Path, JournalReader] = {}


def journal_events(journal: Path) -> list[dict]:
    """The journal's events so far, parsing only what was appended since the last call (the
    harness polls every 20 ms and must not steal the CPU the processes it times need)."""
    reader = _READERS.setdefault(Path(journal), JournalReader(journal))
    return reader.events()


def wait_for(journal: Path, predicate, timeout_s: float, poll_s: float = 0.02) -> dict | None:
    """The first journal event matching `predicate`, waiting up to `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for event in journal_events(journal):
            if predicate(event):
                return event
        time.sleep(poll_s)
    return None


def _events_of(journal: Path, pid: int) -> list[dict]:
    return [e for e in journal_events(journal) if e.get("pid") == pid]


def _current_holder(journal: Path, pool: list, fenced):
    """The process that acquired the lease last (taken out of `pool`); `fenced` if none is
    known yet."""
    for event in reversed(journal_events(journal)):
        if event["event"] == "lease_acquired":
            holder = next((p for p in pool if p.pid == event["pid"]), None)
            if holder is not None:
                pool.remove(holder)
                return holder
            break
    return fenced


def kill_record(journal: Path, pid: int, kill_unix: float) -> KillRecord:
    """What was acknowledged before the kill (by any primary) and what `pid` last reported."""
    events = [e for e in journal_events(journal) if e["unix"] <= kill_unix]
    mine = [e for e in events if e.get("pid") == pid and e["event"] in ("step", "checkpoint")]
    checkpoints = [e for e in events if e["event"] == "checkpoint"]
    last = max(mine, key=lambda e: e["unix"], default={})
    return KillRecord(
        killed_pid=pid,
        last_trained_step=max((e["step"] for e in mine), default=0),
        acknowledged_step=max((e["step"] for e in checkpoints), default=0),
        lag_steps_reported=int(last.get("lag_steps", 0)),
        bound_steps=int(checkpoints[-1]["bound_steps"]) if checkpoints else 0,
    )


def _ready(journal: Path, pid: int) -> bool:
    return any(e["event"] == "standby_waiting" for e in _events_of(journal, pid))


def run_chaos(
    config: Path,
    run_dir: Path,
    kills: int,
    total_steps: int,
    seed: int = 0,
    standbys: int = 3,
    timeout_s: float = 300.0,
) -> ChaosReport:
    """SIGKILL the primary `kills` times at random steps; returns what each kill lost.

    `standbys` warm standbys wait at all times (a killed primary is replaced by a new standby),
    so a kill never waits for a process to start. Every process started here is killed or has
    exited when this returns.
    """
    rng = random.Random(seed)
    journal = run_dir / "events.jsonl"
    logs = run_dir / "process-logs"
    report = ChaosReport()
    started = time.monotonic()

    def left() -> float:
        return timeout_s - (time.monotonic() - started)

    # Kill targets: random steps, spread so each primary trains a little before it dies.
    span = total_steps / (kills + 1)
    targets = sorted(int(span * i + rng.uniform(0.1, 0.9) * span) for i in range(kills))
    # The harness holds the lease while `standbys + 1` standbys warm up, then lets go: one of
    # them becomes the first primary, so no kill ever waits for a process to start.
    settings = load_settings(config)
    hold = make_lease(
        settings.model_copy(update={"lease": settings.lease.model_copy(update={"ttl_s": 600.0})})
    )
    hold.holder = "chaos-harness"
    held_epoch = hold.try_acquire()
    if held_epoch is None:
        raise RuntimeError(f"the lease is already held by {hold.describe()}")
    pool = [start_train(config, "standby", logs) for _ in range(standbys + 1)]
    processes: list[subprocess.Popen] = list(pool)
    try:
        while not all(_ready(journal, p.pid) for p in pool):
            if left() <= 0:
                raise TimeoutError("the standbys did not become ready")
            time.sleep(0.05)
        hold.release(held_epoch)
        first = wait_for(journal, lambda e: e["event"] == "lease_acquired", left())
        if first is None:
            raise TimeoutError("no standby took the released lease")
        primary = next(p for p in pool if p.pid == first["pid"])
        pool.remove(primary)
        for target in targets:
            deadline = time.monotonic() + left()
            while not any(_ready(journal, p.pid) for p in pool):
                if time.monotonic() > deadline:
                    raise TimeoutError("no standby became ready")
                time.sleep(0.05)
            while True:
                reached = wait_for(
                    journal,
                    lambda e, p=primary.pid, t=target: (
                        e.get("pid") == p
                        and (
                            e["event"] in ("done", "failed", "fenced")
                            or (e["event"] == "step" and e["step"] >= t)
                        )
                    ),
                    left(),
                )
                if reached is None or reached["event"] != "fenced":
                    break
                # A primary too slow to renew its lease (a loaded machine) was fenced and a
                # standby took over without a kill: follow the new holder, count no kill.
                holder = _current_holder(journal, pool, primary)
                if holder is primary:
                    time.sleep(0.05)  # the new holder's event is not in the journal yet
                primary = holder
            if reached is None or reached["event"] != "step":
                break  # training finished (or failed) before this kill
            time.sleep(rng.uniform(0.0, 0.05))  # land anywhere, checkpoint writes included
            kill_unix = time.time()
            os.killpg(primary.pid, signal.SIGKILL)
            primary.wait()
            record = kill_record(journal, primary.pid, kill_unix)
            replacement = start_train(config, "standby", logs)
            processes.append(replacement)
            pool.append(replacement)
            promoted = wait_for(
                journal,
                lambda e, k=kill_unix: e["event"] == "lease_acquired" and e["unix"] > k,
                left(),
            )
            if promoted is None:
                raise TimeoutError("no standby promoted itself")
            # Training resumes with whoever first trains after the kill: on a loaded machine the
            # standby that took the lease can itself be fenced before its first step, and
            # another takes over; the promotion time runs until training resumed.
            first = wait_for(
                journal,
                lambda e, k=kill_unix: (
                    e["unix"] > k and e["event"] in ("first_resumed_step", "done", "failed")
                ),
                left(),
            )
            resumer = first["pid"] if first is not None else promoted["pid"]
            primary = next((p for p in pool if p.pid == resumer), None) or next(
                p for p in pool if p.pid == promoted["pid"]
            )
            pool.remove(primary)
            resumed = [e for e in _events_of(journal, primary.pid) if e["event"] == "resumed"]
            record.resumed_step = resumed[0]["step"] if resumed else 0
            if first is not None and first["event"] == "first_resumed_step":
                record.promotion_s = first["unix"] - kill_unix
            report.kills.append(record)
        # Whoever holds the lease at the end finishes the job (after a fencing, not the last
        # process this harness promoted).
        done = wait_for(journal, lambda e: e["event"] in ("done", "failed"), left())
        report.finished = done is not None and done["event"] == "done"
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    report.wall_s = time.monotonic() - started
    return report
