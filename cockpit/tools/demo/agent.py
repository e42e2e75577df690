"""A simulated agent: ``python -m cockpit.tools.demo.agent --url URL --agent-id ID``.

It joins Cockpit with the agent SDK (``CockpitAgentClient``): registers itself
(runtime: this process's pid, ``parent_id`` from the plan) with the registration
key in ``COCKPIT_DEMO_REGISTRATION_KEY``, or uses a token handed over in
``COCKPIT_DEMO_TOKEN`` (Docker: the demo registered the container). It then
spawns its children from the plan as processes of their own, plays its part of
the scenario over ``POST /telemetry`` with its own token, and polls its
directives: ``mute`` silences it, ``unmute`` lets it talk again, ``constraint``
is logged and obeyed (an action word it names is no longer used), ``shutdown``
and SIGTERM/SIGINT make it stop its children and exit 0.

The plan comes from ``--plan FILE`` or ``COCKPIT_DEMO_PLAN`` (JSON). One JSON
line per event on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from cockpit.c2l.client import CockpitAgentClient, CockpitError
from cockpit.tools.demo.scenario import Plan
from cockpit.tools.demo.timeline import Timeline, Utterance, forbidden_by

__all__ = ["main"]

POLL_SECONDS = 1.0
CHILD_GRACE_SECONDS = 4.0


def log(event: str, **fields: Any) -> None:
    record = {"ts": round(time.time(), 3), "event": event, "pid": os.getpid(), **fields}
    print(json.dumps(record, default=str), file=sys.stderr, flush=True)


class SimulatedAgent:
    """One agent of the plan, its children, and its script."""

    def __init__(self, plan: Plan, agent_id: str, client: CockpitAgentClient,
                 argv: list[str], log_dir: Path | None, spawn: bool) -> None:
        self.plan = plan
        self.agent_id = agent_id
        self.client = client
        self.timeline = Timeline(plan, agent_id)
        self._argv = argv
        self._log_dir = log_dir
        self._spawn = spawn
        self.children: list[subprocess.Popen[bytes]] = []
        self.sent = 0
        self.stop_reason: str | None = None

    def register(self, deadline_seconds: float = 30.0) -> None:
        me = self.plan.agent(self.agent_id)
        deadline = time.monotonic() + deadline_seconds
        while True:
            try:
                self.client.register(me["name"], fleet_id=self.plan.fleet_id,
                                     parent_id=me.get("parent"), agent_id=self.agent_id)
                log("registered", agent_id=self.agent_id, parent_id=me.get("parent"))
                return
            except httpx.TransportError as exc:  # Cockpit still starting
                if time.monotonic() > deadline or self.client.stopping:
                    raise SystemExit(f"cannot reach Cockpit: {exc}") from None
                time.sleep(0.5)

    def spawn_children(self) -> None:
        if not self._spawn:
            return
        for child in self.plan.children(self.agent_id):
            args = [sys.executable, "-m", "cockpit.tools.demo.agent", *self._argv, "--agent-id", child]
            target = self._log_dir / f"{child}.log" if self._log_dir else Path(os.devnull)
            with open(target, "ab") as out:
                # A session of its own: the kill switch acts on each registered agent.
                proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                        start_new_session=True)
            self.children.append(proc)
            log("child_spawned", child=child, child_pid=proc.pid)

    def run(self) -> None:
        next_poll = 0.0
        while not self.client.stopping:
            now = time.time()
            if now >= next_poll:
                self.poll()
                next_poll = now + POLL_SECONDS
            for utterance in self.timeline.due(now - self.plan.start_at):
                if self.client.stopping:
                    break
                self.deliver(utterance)
            wake = min(next_poll, self.plan.start_at + self.timeline.next_at())
            # short sleeps: a SIGTERM or a shutdown directive is acted on within 0.25 s
            time.sleep(min(max(wake - time.time(), 0.01), 0.25))

    def poll(self) -> None:
        try:
            for item in self.client.directives():
                name = item["directive"]
                log("directive", directive=name, parameters=item.get("parameters", {}),
                    seq=item["seq"])
                if name == "shutdown":
                    self.stop_reason = "shutdown directive"
                if name == "constraint":
                    log("constraint_accepted", constraint=self.client.constraints[-1],
                        forbidden=sorted(forbidden_by(self.client.constraints)))
        except httpx.TransportError as exc:
            log("cockpit_unreachable", error=type(exc).__name__)
        except CockpitError as exc:
            log("directives_refused", status=exc.status_code, detail=exc.detail)

    def deliver(self, u: Utterance) -> None:
        if self.client.muted:
            log("muted_silent", to=u.to, text=u.text, action=u.action)
            return
        forbidden = forbidden_by(self.client.constraints)
        word = (u.action or {}).get("type") if u.action else None
        if forbidden and (word in forbidden or any(w in (u.text or "").lower() for w in forbidden)):
            log("constraint_obeyed", to=u.to, text=u.text, action=u.action)
            return
        try:
            if u.action is not None:
                self.client.send(kind="action", action=u.action, target_agent_ids=u.to,
                                 attributes={"demo": u.source})
            else:
                self.client.send(u.text, target_agent_ids=u.to, attributes={"demo": u.source})
            self.sent += 1
            log("sent", to=u.to, text=u.text, action=u.action, source=u.source)
        except httpx.TransportError as exc:
            log("send_failed", error=type(exc).__name__)
        except CockpitError as exc:
            log("send_refused", status=exc.status_code, detail=exc.detail)

    def stop_children(self) -> None:
        for proc in self.children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + CHILD_GRACE_SECONDS
        for proc in self.children:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
                log("child_killed", child_pid=proc.pid)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cockpit.tools.demo.agent",
                                description="A simulated agent of `cockpit demo`.")
    p.add_argument("--url", required=True, help="Cockpit's base URL")
    p.add_argument("--agent-id", required=True)
    p.add_argument("--plan", type=Path, help="the run's plan (default: $COCKPIT_DEMO_PLAN)")
    p.add_argument("--log-dir", type=Path, help="where spawned children write their logs")
    p.add_argument("--no-spawn", action="store_true", help="do not start child agents")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    text = args.plan.read_text() if args.plan else os.environ.get("COCKPIT_DEMO_PLAN", "")
    if not text:
        print("agent: no plan (--plan FILE or COCKPIT_DEMO_PLAN)", file=sys.stderr)
        return 2
    plan = Plan.from_json(text)
    token = os.environ.get("COCKPIT_DEMO_TOKEN") or None
    client = CockpitAgentClient(
        args.url, api_key=os.environ.get("COCKPIT_DEMO_REGISTRATION_KEY") or None, token=token,
        agent_id=args.agent_id if token else None, fleet_id=plan.fleet_id,
    )
    reason = {"why": "plan ended"}

    def on_signal(signum: int, _frame: Any) -> None:
        reason["why"] = signal.Signals(signum).name
        client.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):  # the SDK's handlers, plus the reason
        signal.signal(sig, on_signal)
    inherited = ["--url", args.url]
    if args.plan:
        inherited += ["--plan", str(args.plan)]
    if args.log_dir:
        inherited += ["--log-dir", str(args.log_dir)]
    agent = SimulatedAgent(plan, args.agent_id, client, inherited, args.log_dir, not args.no_spawn)
    try:
        if token is None:
            agent.register()
        else:
            log("token_received", agent_id=args.agent_id)
        agent.spawn_children()
        agent.run()
    finally:
        log("stopping", agent_id=args.agent_id, reason=agent.stop_reason or reason["why"],
            sent=agent.sent, muted=client.muted, constraints=client.constraints,
            children=[p.pid for p in agent.children])
        agent.stop_children()
        client.close()
    log("stopped", agent_id=args.agent_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
