"""``cockpit demo``: a live fleet of simulated agents to command, on a laptop.

Wire it into the ``cockpit`` command with :func:`add_parser`; run it without the
wiring as ``python -m cockpit.tools.demo``. The agent program is
``python -m cockpit.tools.demo.agent``; the scenario format is in ``SCENARIOS.md``.

Kept import-light: the agent processes import this package first.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "main"]


def _positive(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return number


def _agents(value: str) -> int:
    number = int(value)
    if not 1 <= number <= 500:
        raise argparse.ArgumentTypeError("must be between 1 and 500")
    return number


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the demo's options to ``parser`` (and make it run the demo)."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where Cockpit keeps its SQLite file, the operator key and the logs "
                             "(default: a fresh temporary directory)")
    parser.add_argument("--agents", type=_agents, default=None,
                        help="fleet size (default: the scenario's, 12 for the built-in 'fleet')")
    parser.add_argument("--scenario", default="fleet",
                        help="a built-in scenario's name or a JSON/YAML file (see --list-scenarios)")
    parser.add_argument("--list-scenarios", action="store_true", help="list the built-in scenarios and exit")
    parser.add_argument("--runtime", choices=["process", "docker"], default="process",
                        help="agents as local processes (default) or Docker containers")
    parser.add_argument("--docker-host", default=None,
                        help="Docker engine for --runtime docker (default $DOCKER_HOST)")
    parser.add_argument("--image", default="cockpit:latest",
                        help="image with Python and cockpit for --runtime docker (default cockpit:latest)")
    parser.add_argument("--docker-network", default="host",
                        help="network of the agent containers (default host: they reach Cockpit on loopback)")
    parser.add_argument("--headless", action="store_true",
                        help="for scripts and CI: run --duration seconds, print a summary, exit 0 "
                             "only if the scenario's expected verdicts appeared")
    parser.add_argument("--duration", type=_positive, default=None,
                        help="stop after this many seconds (required with --headless)")
    parser.set_defaults(func=run_from_args)
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``demo`` on the ``cockpit`` command's subparsers."""
    return configure(subparsers.add_parser(
        "demo", help="run Cockpit with a live fleet of simulated agents to command",
        description="Start Cockpit on the embedded default with a fleet of simulated agents "
                    "playing a scenario (alliance, collusion, betrayal, lies).",
    ))


def list_scenarios() -> int:
    from cockpit.tools.demo.scenario import builtin_scenarios

    for name, scenario in builtin_scenarios().items():
        description = " ".join(str(scenario.get("description", "")).split())
        size = scenario.get("fleet_size") or len(scenario["agents"])
        print(f"{name:<10} {size:>3} agents  {description}")
    return 0


def run_from_args(args: argparse.Namespace) -> int:
    """The ``demo`` subcommand."""
    if args.list_scenarios:
        return list_scenarios()
    from cockpit.tools.demo.runner import DemoOptions, run_demo

    return run_demo(DemoOptions(
        host=args.host, port=args.port, data_dir=args.data_dir, agents=args.agents,
        scenario=args.scenario, runtime=args.runtime, docker_host=args.docker_host,
        image=args.image, docker_network=args.docker_network, headless=args.headless,
        duration=args.duration,
    ))


def main(argv: list[str] | None = None) -> int:
    """``python -m cockpit.tools.demo [options]``."""
    parser = configure(argparse.ArgumentParser(prog="cockpit demo", description=add_parser.__doc__))
    return int(run_from_args(parser.parse_args(argv)))
