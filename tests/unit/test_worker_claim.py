"""The finalize claim's decisions (pure): who finalizes when the claim already exists."""

import json

from crawljob_worker.claim import Claim, Outcome, claim_body, claim_name, decide, holder_of


def test_the_claim_names_the_run_and_the_claiming_shard() -> None:
    body = json.loads(claim_body("uid-1-2", 3, 0.0))
    assert body == {"runId": "uid-1-2", "shardIndex": 3, "claimedAt": "1970-01-01T00:00:00Z"}
    assert claim_name("uid-1-2") == "_finalize-uid-1-2.json"
    assert holder_of(claim_body("r", 3, 0.0)) == 3


def test_a_retry_of_the_claiming_index_takes_over_and_any_other_shard_leaves_the_finalize() -> None:
    assert decide(3, 3) == Claim(Outcome.TAKEN_OVER, 3) and decide(3, 3).outcome.finalizes
    assert decide(3, 0) == Claim(Outcome.LOST, 3) and not decide(3, 0).outcome.finalizes
    assert Outcome.CLAIMED.finalizes and Outcome.UNSUPPORTED.finalizes


def test_an_unreadable_claim_names_no_holder_so_nobody_takes_it_over() -> None:
    for data in (None, b"", b"not json", b"[]", b'{"shardIndex": "3"}', b'{"shardIndex": true}'):
        assert holder_of(data) is None
        assert decide(holder_of(data), 3).outcome is Outcome.LOST
