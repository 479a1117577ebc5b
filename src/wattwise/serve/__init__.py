"""Serve models and variants active-active on Ray Serve, and load-test them.

`start_server(ServeSettings(model=...))` returns a running `Server`; `run_loadtest(url, ...)`
drives it. The `wattwise serve` / `wattwise loadtest` commands and `wattwise.serve` /
`wattwise.loadtest` wrap these. Ray is imported only when a server starts.
"""

from wattwise.serve.settings import ServeSettings

__all__ = ["ServeSettings"]
