"""The rule that says a redelivered MEDIA message is already in a stream's saved state."""

from streamsight.applied import Applied


def test_a_message_at_or_below_the_saved_position_is_covered():
    saved = Applied(seq=500, stored_ns=2_000)
    assert saved.covers(Applied(500, 2_000)) and saved.covers(Applied(420, 1_500))
    assert not saved.covers(Applied(501, 2_001))


def test_after_a_nats_restart_a_new_message_with_a_small_sequence_is_not_covered():
    # MEDIA, a memory stream, numbers from 1 again after a restart; its messages are stored later
    saved = Applied(seq=500, stored_ns=2_000)
    assert not saved.covers(Applied(3, 9_000))


def test_nothing_saved_covers_nothing():
    assert not Applied().covers(Applied(1, 1))
