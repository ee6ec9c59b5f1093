"""Who acts under kopf peering: the verdict from the KopfPeering object, priorities, settings."""

from __future__ import annotations

import datetime

import pytest

from crawljob import flags
from crawljob.operator import peering, standby
from crawljob.operator import settings as config

NOW = datetime.datetime(2026, 11, 29, 12, 0, 0, tzinfo=datetime.UTC)


def seen(seconds_ago: float, priority: int, lifetime: int = 30) -> dict[str, object]:
    lastseen = NOW - datetime.timedelta(seconds=seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": lastseen.isoformat()}


def test_without_the_peering_object_nobody_acts() -> None:
    decision = peering.verdict(None, "me", 0, NOW)
    assert not decision.active
    assert "does not exist" in decision.reason


def test_alone_in_the_object_the_replica_acts_and_sees_itself() -> None:
    decision = peering.verdict({"status": {"me": seen(4, 0)}}, "me", 0, NOW)
    assert decision.active and decision.visible and decision.recheck_at is None
    assert decision.own_lastseen == NOW - datetime.timedelta(seconds=4)


def test_a_replica_acts_only_while_its_own_keepalive_is_in_the_object() -> None:
    decision = peering.verdict({"metadata": {"name": "p"}}, "me", 0, NOW)
    assert not decision.active and not decision.visible
    assert "keep-alive" in decision.reason
    # kopf removes the entry first thing on shutdown: the loops stop before a standby starts.
    assert not peering.verdict({"status": {"standby": seen(1, -1)}}, "me", 0, NOW).active


def test_a_live_peer_with_a_higher_priority_makes_the_replica_stand_by_until_its_deadline() -> None:
    decision = peering.verdict({"status": {"me": seen(1, 0), "other": seen(10, 5)}}, "me", 0, NOW)
    assert not decision.active
    assert "higher priority: other (5)" in decision.reason
    assert decision.recheck_at == NOW + datetime.timedelta(seconds=20)


def test_equal_priorities_pause_both_as_kopf_does() -> None:
    decision = peering.verdict({"status": {"me": seen(1, 3), "twin": seen(1, 3)}}, "me", 3, NOW)
    assert not decision.active
    assert "the same priority: twin (3)" in decision.reason


def test_lower_priority_and_expired_peers_do_not_block() -> None:
    status = {"me": seen(1, 5), "low": seen(1, 1), "dead": seen(31, 9), "just-dead": seen(30, 9)}
    decision = peering.verdict({"status": status}, "me", 5, NOW)
    assert decision.active
    assert decision.lower == ("low",)  # live and possibly acting until it sees us


def test_a_failover_displaces_nobody() -> None:
    status = {"me": seen(1, 0), "crashed": seen(40, 9), "standby": seen(2, -1, lifetime=1)}
    decision = peering.verdict({"status": status}, "me", 0, NOW)
    assert decision.active and decision.lower == ()


def test_a_peer_without_lastseen_counts_as_seen_now_and_malformed_entries_are_ignored() -> None:
    status = {"quiet": {"priority": 9, "lifetime": 60}, "junk": "x", "bad": {"priority": "high"}}
    decision = peering.verdict({"status": status}, "me", 0, NOW)
    assert not decision.active
    assert decision.recheck_at == NOW + datetime.timedelta(seconds=60)


def test_the_earliest_blocking_deadline_is_the_next_recheck() -> None:
    status = {"a": seen(25, 9), "b": seen(5, 9), "c": seen(29, 1)}
    assert peering.verdict({"status": status}, "me", 2, NOW).recheck_at == NOW + datetime.timedelta(seconds=5)


@pytest.mark.parametrize(
    ("value", "identity", "expected"),
    [("7", "x", 7), ("-3", "x", -3), (" 0 ", "x", 0), ("ordinal", "crawl-operator-0", 0),
     ("ordinal", "crawl-operator-12", -12)],
)  # fmt: skip
def test_priority_is_an_integer_or_minus_the_pod_ordinal(value: str, identity: str, expected: int) -> None:
    assert peering.parse_priority(value, identity) == expected


@pytest.mark.parametrize(("value", "identity"), [("high", "x"), ("ordinal", "laptop/1234"), ("", "x")])
def test_a_bad_priority_is_refused_with_the_reason(value: str, identity: str) -> None:
    with pytest.raises(ValueError, match="--priority"):
        peering.parse_priority(value, identity)


def test_the_peering_object_is_namespaced_unless_the_operator_watches_all_namespaces() -> None:
    assert peering.peering_manifest("p", "crawls") == {
        "apiVersion": "kopf.dev/v1",
        "kind": "KopfPeering",
        "metadata": {"name": "p", "namespace": "crawls"},
    }
    assert peering.peering_manifest("p", None)["kind"] == "ClusterKopfPeering"


def test_the_creator_of_the_peering_object_puts_its_keepalive_in_it_as_kopf_writes_it() -> None:
    entry = peering.keepalive(-1, 30, NOW)
    assert entry == {"priority": -1, "lifetime": 30, "lastseen": "2026-11-29T12:00:00+00:00"}
    manifest = peering.peering_manifest("p", "crawls", {"pod-1": entry})
    assert manifest["status"] == {"pod-1": entry}
    decision = peering.verdict(manifest, "pod-1", -1, NOW + datetime.timedelta(seconds=29))
    assert decision.active and decision.own_lastseen == NOW


def test_the_gate_checks_a_sixth_of_the_lifetime_within_bounds() -> None:
    assert standby.check_interval(30) == 5.0
    assert standby.check_interval(12) == 2.0
    assert standby.check_interval(1) == 0.5


def parse(argv: list[str], environ: dict[str, str] | None = None) -> config.OperatorSettings:
    parser = config.operator_parser(environ or {})
    return config.operator_settings(flags.parse(parser, argv))


def test_operators_are_standalone_by_default() -> None:
    settings = parse([])
    assert settings.peering is None and settings.priority == 0 and settings.peering_lifetime == 30
    assert settings.peering_identity  # <hostname>/<pid>


def test_peering_flags_and_env() -> None:
    settings = parse(["--peering", "crawljob", "--priority", "ordinal", "--peering-identity", "op-2"])
    assert (settings.peering, settings.priority, settings.peering_identity) == ("crawljob", -2, "op-2")
    environ = {"CRAWLJOB_PEERING": "p", "CRAWLJOB_PRIORITY": "4", "CRAWLJOB_PEERING_LIFETIME": "10"}
    settings = parse([], environ)
    assert (settings.peering, settings.priority, settings.peering_lifetime) == ("p", 4, 10)


def test_a_zero_peering_lifetime_is_refused() -> None:
    with pytest.raises(ValueError, match="--peering-lifetime"):
        parse(["--peering-lifetime", "0"])
