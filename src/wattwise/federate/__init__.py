"""Federated training on Flower: clients keep their data, send coded updates, energy is counted.

Importing this package turns Flower's telemetry off (it would post usage events to a remote
host); every module here that imports flwr is inside this package, so that comes first.
"""

from __future__ import annotations

import os

os.environ["FLWR_TELEMETRY_ENABLED"] = "0"
