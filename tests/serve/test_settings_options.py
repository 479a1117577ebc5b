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
