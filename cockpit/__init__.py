"""Cockpit: the command-and-control plane for fleets of autonomous AI agents."""

__version__ = "0.1.0"
