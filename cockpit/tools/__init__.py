"""Command-line tools built on the bootstrapped process (replay, demo, streams)."""
