"""The pure conditions helper keeps the standard shape and stable transition times."""

from crawljob.operator import conditions


def test_new_condition_has_the_standard_shape() -> None:
    result = conditions.set_condition([], "Running", True, "WorkerRunning", "running", "T1", generation=3)
    assert result == [
        {
            "type": "Running",
            "status": "True",
            "reason": "WorkerRunning",
            "message": "running",
            "lastTransitionTime": "T1",
            "observedGeneration": 3,
        }
    ]


def test_transition_time_moves_only_when_status_changes() -> None:
    first = conditions.set_condition([], "Running", True, "A", "a", "T1")
    same = conditions.set_condition(first, "Running", True, "B", "b", "T2")
    assert same[0]["lastTransitionTime"] == "T1"
    assert same[0]["reason"] == "B"
    flipped = conditions.set_condition(same, "Running", False, "C", "c", "T3")
    assert flipped[0]["lastTransitionTime"] == "T3"
    assert flipped[0]["status"] == "False"


def test_other_conditions_are_kept_and_input_is_not_mutated() -> None:
    original = [
        {"type": "Queued", "status": "True", "reason": "R", "message": "", "lastTransitionTime": "T0"}
    ]
    result = conditions.set_condition(original, "Failed", False, "NotFailed", "", "T1")
    assert [item["type"] for item in result] == ["Queued", "Failed"]
    assert len(original) == 1
    assert (conditions.get_condition(result, "Queued") or {}).get("status") == "True"
    assert (conditions.get_condition(result, "Failed") or {}).get("status") == "False"
    assert conditions.get_condition(result, "Absent") is None


def test_empty_or_missing_messages_are_left_out_never_null() -> None:
    found = conditions.set_condition(None, "Failed", False, "NotFailed", "", "T0")
    assert "message" not in found[0]
    found = conditions.set_condition(found, "Failed", True, "BadInput", "not a CSV", "T1")
    assert found[0]["message"] == "not a CSV"
    found = conditions.set_condition(found, "Failed", False, "NotFailed", "", "T2")
    assert "message" not in found[0]
    assert all(value is not None for condition in found for value in condition.values())
