"""The corpus holds example scripts, not tests: never collect or import them."""

collect_ignore_glob = ["corpus/*"]
