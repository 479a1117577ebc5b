"""What `wattwise serve` was asked to run: one frozen dataclass, checked once, shared by all parts.

The settings travel to the Ray Serve replicas as plain data (a dict), so they hold no secrets:
the API key itself stays in the environment variable `api_key_env` names, and only its SHA-256
digest is sent to the ingress replica.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wattwise.errors import ConfigError

APP_NAME = "wattwise"
# The model deployment is the replica class; Ray names its processes after it.
MODEL_DEPLOYMENT = "ModelReplica"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve_flag(default: Any, help_text: str, *, show_default: bool = True) -> Any:
    """A `ServeSettings` field that `wattwise serve` also takes as a flag, with its help text.

    The command builds the flag from the field (see `cli.common.settings_flags`), so a flag's
    type, default and help live here once. `show_default=False`: the flag starts unset, --help
    shows no default (the help text says it where it matters) and the field's default applies.
    """
    metadata = {"help": help_text, "show_default": show_default}
    return dataclasses.field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ServeSettings:
    """Options of `wattwise serve`; units are in the names.

    Attributes:
        model: any spec `load_model` accepts (variant directories are made absolute).
        replicas: model replicas (active-active behind Ray Serve's router).
        max_batch_size: most inputs in one `@serve.batch` call; also the most inputs per request.
        batch_wait_ms: how long a batch waits to fill (at the ingress when it joins requests,
            else at each replica).
        host, port: where Ray Serve's HTTP proxy listens.
        grpc_port: where its gRPC proxy listens too, on `host` (None: no gRPC;
            `serve/grpc_ingress.py`: `wattwise.v1.Wattwise/Predict` with JSON bodies).
        address: None starts a local Ray instance; "auto" or "HOST:PORT" joins a cluster.
        api_key_env: name of the environment variable holding the API key (None: no key).
        request_timeout_s: a request's deadline, retries included.
        max_body_bytes: larger request bodies get 413.
        max_text_chars: longest text accepted (text models).
        max_ongoing_requests: concurrent requests the ingress replica handles.
        max_queued_requests: requests waiting for the ingress beyond that; more get 503.
        health_check_period_s, health_check_timeout_s: Ray Serve's replica health checks.
        threads_per_replica: torch intra-op threads per replica (None: cores / replicas).
        replica_cpus: Ray CPU resource each replica reserves (0 lets a swap surge on 2 cores).
        object_store_bytes: Ray object store size for a local instance.
        ray_temp_dir: Ray's session directory root for a local instance (short: socket paths).
        min_replicas, max_replicas: autoscaling bounds; autoscaling is on when max_replicas is
            set (then `replicas` is the initial count, clamped to the bounds).
        target_ongoing_requests: model calls per replica the autoscaler aims for (None: one
            full batch, `max_batch_size`).
        upscale_delay_s, downscale_delay_s: how long the load must stay above / below target
            before Ray Serve adds / removes a replica.
        autoscaling_look_back_s: the window Ray Serve averages ongoing requests over.
        ingress_batching: the ingress joins concurrent requests into one model call (one
            handle call carries many requests; the default); False, or autoscaling on: one
            call per request.
        kv_cache_budget_bytes: KV-cache memory each replica reserves for `/v1/generate`
            requests at most (causal LMs); a request that does not fit gets 503.
        draft: a saved lookup draft's directory (`models.lookup_draft`, from `optimize
            --objective tokens_per_s`): each decode step drafts and verifies several tokens
            per running `/v1/generate` request (greedy output unchanged).
        trust_code: allow a variant built from a module:factory to import that code.
    """

    model: str
    replicas: int = serve_flag(2, "Model replicas, all active.")
    max_batch_size: int = serve_flag(32, "Most inputs per forward pass (and per request).")
    batch_wait_ms: float = serve_flag(5.0, "How long a batch waits to fill.")
    host: str = serve_flag("127.0.0.1", "Bind address; non-loopback needs a key.")
    port: int = serve_flag(8000, "HTTP port.")
    grpc_port: int | None = serve_flag(
        None, "Also serve gRPC on this port (wattwise.v1.Wattwise/Predict, JSON bodies)."
    )
    address: str | None = serve_flag(
        None, "Join a Ray cluster (auto or HOST:PORT) instead of starting one."
    )
    api_key_env: str | None = serve_flag(
        None, "Name of the environment variable holding the API key."
    )
    request_timeout_s: float = serve_flag(30.0, "Deadline per request, retries included.")
    max_body_bytes: int = serve_flag(1_000_000, "Larger bodies get 413.")
    max_text_chars: int = 10_000
    max_ongoing_requests: int = serve_flag(256, "Requests the ingress works on at once.")
    max_queued_requests: int = serve_flag(256, "Waiting requests beyond that; more get 503.")
    health_check_period_s: float = 1.0
    health_check_timeout_s: float = 2.0
    threads_per_replica: int | None = serve_flag(
        None, "torch threads per replica (default: cores/replicas)."
    )
    replica_cpus: float = serve_flag(
        0.0,
        "Ray CPUs each replica reserves (default 0; on a cluster, > 0 spreads replicas).",
        show_default=False,
    )
    object_store_bytes: int = 200 * 2**20
    ray_temp_dir: str | None = serve_flag(
        None, "Root of Ray's session files (default: a new /tmp dir)."
    )
    min_replicas: int = serve_flag(
        1, "Autoscaling: fewest model replicas (default 1).", show_default=False
    )
    max_replicas: int | None = serve_flag(
        None, "Autoscaling on: most model replicas (--replicas: initial)."
    )
    target_ongoing_requests: float | None = serve_flag(
        None, "Autoscaling: model calls per replica to aim for (default: --max-batch-size)."
    )
    upscale_delay_s: float = serve_flag(
        10.0, "Autoscaling: load above target this long adds one.", show_default=False
    )
    downscale_delay_s: float = serve_flag(
        60.0, "Autoscaling: load below target this long removes one.", show_default=False
    )
    autoscaling_look_back_s: float = 30.0
    ingress_batching: bool = serve_flag(
        True,
        "Join concurrent requests into one model call (on unless autoscaling).",
        show_default=False,
    )
    kv_cache_budget_bytes: int = serve_flag(
        64 * 2**20, "Causal LMs: KV-cache bytes per replica; beyond it /v1/generate gets 503."
    )
    draft: str | None = serve_flag(
        None, "Causal LMs: a saved lookup draft dir; decode steps draft and verify tokens."
    )
    trust_code: bool = False

    def model_options(self):
        """The ModelOptions replicas load `model` with."""
        from wattwise.models.registry import ModelOptions

        return ModelOptions(trust_code=self.trust_code)

    @classmethod
    def from_options(cls, model: str, **options: Any) -> ServeSettings:
        """Settings from CLI or API options: the one place both build them.

        An option given as None keeps its default; an unknown name is a ConfigError naming the
        known ones. Example: `ServeSettings.from_options("digits-cnn", replicas=3, port=None)`.
        """
        known = {f.name for f in dataclasses.fields(cls)} - {"model"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"unknown serve option(s) {', '.join(unknown)}: use {', '.join(sorted(known))}"
            )
        return cls(model=model, **{k: v for k, v in options.items() if v is not None})

    def checked(self) -> ServeSettings:
        """These settings with paths resolved, or ConfigError naming the bad option."""
        positive = {
            "--replicas": self.replicas,
            "--max-batch-size": self.max_batch_size,
            "--request-timeout-s": self.request_timeout_s,
            "--max-body-bytes": self.max_body_bytes,
            "--max-ongoing-requests": self.max_ongoing_requests,
            "--health-check-period-s": self.health_check_period_s,
            "--kv-cache-budget-bytes": self.kv_cache_budget_bytes,
        }
        for flag, value in positive.items():
            if value <= 0:
                raise ConfigError(f"{flag} must be > 0, got {value}")
        if self.batch_wait_ms < 0 or self.max_queued_requests < 0:
            raise ConfigError("--batch-wait-ms and --max-queued-requests must be ≥ 0")
        if self.max_replicas is not None and not 1 <= self.min_replicas <= self.max_replicas:
            raise ConfigError(
                f"need 1 ≤ --min-replicas ≤ --max-replicas, got {self.min_replicas} and "
                f"{self.max_replicas}"
            )
        if (self.target_ongoing_requests or 1) <= 0 or min(
            self.upscale_delay_s, self.downscale_delay_s
        ) < 0:
            raise ConfigError("--target-ongoing-requests must be > 0 and the delays ≥ 0")
        if not 0 < self.port < 65536:
            raise ConfigError(f"--port must be 1-65535, got {self.port}")
        if self.grpc_port is not None and not (
            0 < self.grpc_port < 65536 and self.grpc_port != self.port
        ):
            raise ConfigError(
                f"--grpc-port must be 1-65535 and differ from --port, got {self.grpc_port}"
            )
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ConfigError(
                f"--api-key-env {self.api_key_env}: that environment variable is empty; "
                "export the key in it first"
            )
        if not is_loopback(self.host) and not self.api_key_env:
            raise ConfigError(
                f"refusing to listen on {self.host} without an API key: pass --api-key-env NAME "
                "(a variable holding the key) or bind 127.0.0.1"
            )
        from wattwise.models.lookup_draft import is_lookup_draft  # (torch: imported late)

        if self.draft is not None and not is_lookup_draft(self.draft):
            raise ConfigError(
                f"--draft {self.draft}: not a saved lookup draft directory; make one with "
                "`wattwise optimize MODEL --objective tokens_per_s` (OUT/draft)"
            )
        model = self.model
        if Path(model).exists():  # replicas run in other directories: pass absolute paths
            model = str(Path(model).resolve())
        draft = str(Path(self.draft).resolve()) if self.draft else None
        return dataclasses.replace(self, model=model, draft=draft)

    def api_key_digest(self) -> str | None:
        """SHA-256 hex digest of the API key, or None when no key is configured."""
        if not self.api_key_env:
            return None
        return hashlib.sha256(os.environ[self.api_key_env].encode()).hexdigest()

    @property
    def autoscaling(self) -> bool:
        """True when Ray Serve scales the model replicas between the bounds."""
        return self.max_replicas is not None

    def initial_replicas(self) -> int:
        """Replicas at start: `replicas`, clamped to the autoscaling bounds when on."""
        if not self.autoscaling:
            return self.replicas
        return max(self.min_replicas, min(self.replicas, self.max_replicas))

    def ready_replicas(self) -> int:
        """Healthy replicas `/readyz` needs: all of them, or the minimum when autoscaling."""
        return self.min_replicas if self.autoscaling else self.replicas

    def joins_requests(self) -> bool:
        """True when the ingress joins concurrent requests into one model call.

        Not while autoscaling: Ray Serve scales on ongoing calls per replica, and joined calls
        hide the load (measured: 32 clients made only 1–3 joined calls in flight, so the
        replica count barely moved); one call per request keeps the target in requests.
        """
        return self.ingress_batching and not self.autoscaling

    def replica_batch_wait_s(self) -> float:
        """How long a replica's batch waits to fill: `batch_wait_ms`, or 0 when the ingress
        joins requests (it already waited; the replica then takes the joined calls queued)."""
        return 0.0 if self.joins_requests() else self.batch_wait_ms / 1000.0

    def autoscaling_config(self) -> dict[str, Any] | None:
        """Ray Serve's `autoscaling_config` for the model deployment (None: fixed count)."""
        if not self.autoscaling:
            return None
        return {
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "initial_replicas": self.initial_replicas(),
            "target_ongoing_requests": self.target_ongoing_requests or self.max_batch_size,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
            "look_back_period_s": self.autoscaling_look_back_s,
        }

    def threads(self) -> int:
        """Intra-op threads per replica: explicit, else the machine's cores shared out (by the
        most replicas there can be, so a scaled-up set never oversubscribes the cores)."""
        if self.threads_per_replica:
            return self.threads_per_replica
        return max(1, (os.cpu_count() or 1) // (self.max_replicas or self.replicas))

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the replicas' init arguments."""
        return dataclasses.asdict(self)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
