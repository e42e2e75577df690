"""HTTP + WebSocket edge and dashboard assets; calls the contexts' public APIs."""
