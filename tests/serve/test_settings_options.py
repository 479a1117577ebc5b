"""`ServeSettings.from_options` (the one builder of the CLI and the API) and the autoscaling
settings, without Ray."""

from __future__ import annotations

import pytest

from wattwise.errors import ConfigError
from wattwise.serve.runtime import check_cluster_answers
from wattwise.serve.settings import ServeSettings


def test_options_given_as_none_keep_their_default_and_unknown_names_are_refused():
    settings = ServeSettings.from_options("digits-cnn", replicas=3, port=None, max_replicas=None)
    assert settings.replicas == 3 and settings.port == 8000 and not settings.autoscaling
    with pytest.raises(ConfigError, match="unknown serve option"):
        ServeSettings.from_options("digits-cnn", replica=3)


def test_autoscaling_config_clamps_the_initial_count_and_checks_bounds():
    settings = ServeSettings.from_options(
        "digits-cnn", replicas=8, min_replicas=2, max_replicas=4, downscale_delay_s=5
    ).checked()
    config = settings.autoscaling_config()
    assert config["initial_replicas"] == 4 and config["min_replicas"] == 2
    assert config["target_ongoing_requests"] == settings.max_batch_size
    assert config["downscale_delay_s"] == 5
    assert settings.ready_replicas() == 2 and not settings.joins_requests()
    with pytest.raises(ConfigError, match="min-replicas"):
        ServeSettings(model="digits-cnn", min_replicas=3, max_replicas=2).checked()


def test_the_batch_wait_moves_to_the_ingress_when_it_joins_requests():
    plain = ServeSettings(model="digits-cnn", batch_wait_ms=5.0, ingress_batching=False)
    assert plain.replica_batch_wait_s() == 0.005
    joined = ServeSettings(model="digits-cnn", batch_wait_ms=5.0)  # the default joins
    assert joined.joins_requests() and joined.replica_batch_wait_s() == 0.0
    scaling = ServeSettings(model="digits-cnn", min_replicas=1, max_replicas=2)
    assert not scaling.joins_requests() and scaling.replica_batch_wait_s() == 0.005


def test_a_causal_lm_is_never_served_with_joined_calls():
    """Joined calls get two per model replica; a causal LM's replica must hold many streams."""
    import dataclasses

    from wattwise.models.registry import load_model
    from wattwise.serve.server import deployed_settings, model_calls_per_replica
    from wattwise.serve.signature import describe_model

    settings = ServeSettings(model="digits-cnn")
    classifier = describe_model(load_model("digits-cnn"))
    assert deployed_settings(settings, classifier).joins_requests()
    assert model_calls_per_replica(deployed_settings(settings, classifier)) == 2
    lm = dataclasses.replace(classifier, generates=True)
    assert not deployed_settings(settings, lm).joins_requests()
    assert model_calls_per_replica(deployed_settings(settings, lm)) >= settings.max_batch_size


def test_an_address_where_no_cluster_answers_fails_fast_with_one_line():
    with pytest.raises(ConfigError, match="no Ray cluster answers"):
        check_cluster_answers("127.0.0.1:1")
    with pytest.raises(ConfigError, match="HOST:PORT"):
        check_cluster_answers("nonsense")


def test_grpc_port_is_checked_and_puts_the_proxy_on_the_host():
    from wattwise.serve.grpc_ingress import HOST_ENV, SETUP_HOOK
    from wattwise.serve.runtime import grpc_runtime_env

    assert ServeSettings("digits-cnn", grpc_port=9001).checked().grpc_port == 9001
    for bad in (0, 70000, 8000):
        with pytest.raises(ConfigError, match="--grpc-port"):
            ServeSettings("digits-cnn", port=8000, grpc_port=bad).checked()
    env = grpc_runtime_env("127.0.0.1")
    assert env["worker_process_setup_hook"] == SETUP_HOOK
    assert env["env_vars"] == {HOST_ENV: "127.0.0.1"}


def test_the_grpc_setup_hook_rewrites_rays_all_interfaces_address(monkeypatch):
    from ray.serve._private import default_impl

    from wattwise.serve.grpc_ingress import HOST_ENV, bind_grpc_proxy_to_host

    bound = []
    monkeypatch.setattr(default_impl, "add_grpc_address", lambda _s, a: bound.append(a))
    monkeypatch.setenv(HOST_ENV, "::1")
    bind_grpc_proxy_to_host()
    default_impl.add_grpc_address(None, "[::]:9000")
    assert bound == ["[::1]:9000"]


def test_grpc_error_details_stay_parseable_json_within_rays_limit():
    import json

    from wattwise.serve.grpc_ingress import MAX_DETAILS_CHARS, details_text

    errors = [
        {"loc": ["inputs", i], "msg": "Input should be ≤ 16", "type": "le"} for i in range(500)
    ]
    text = details_text(errors)
    assert len(text) <= MAX_DETAILS_CHARS
    detail = json.loads(text)["detail"]
    assert detail[0] == errors[0] and detail[-1]["msg"].endswith("more errors left out")
    assert json.loads(details_text("one line")) == {"detail": "one line"}
