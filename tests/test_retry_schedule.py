"""The outbox's retry schedule, as pure arithmetic: worked values, the cap, jitter bounds,
Retry-After honoured, and the window's end turning a failure into a dead letter."""

from __future__ import annotations

import datetime as dt

import pytest

from integrations.delivery.config import FhirDestination, MllpDestination, RetrySchedule

T0 = dt.datetime(2026, 12, 6, 9, 0, tzinfo=dt.UTC)


def test_worked_values_double_from_10_s_and_stop_at_the_15_minute_cap():
    schedule = RetrySchedule(jitter="none")  # defaults: 10 s base, x2, cap 15 min, 24 h window
    assert [schedule.delay_s(n) for n in range(1, 11)] == [10, 20, 40, 80, 160, 320, 640, 900, 900, 900]
    assert schedule.delay_s(10_000) == 900  # no overflow after a day of failures


def test_equal_jitter_waits_between_half_the_ceiling_and_the_ceiling():
    schedule = RetrySchedule()  # equal jitter is the default
    assert schedule.delay_s(3, rand=0.0) == 20 and schedule.delay_s(3, rand=1.0) == 40
    assert schedule.delay_s(3, rand=0.5) == 30
    assert schedule.delay_s(12, rand=0.0) == 450 and schedule.delay_s(12, rand=1.0) == 900
    assert all(20 <= schedule.delay_s(3) <= 40 for _ in range(200))


def test_full_jitter_waits_between_zero_and_the_ceiling():
    schedule = RetrySchedule(jitter="full")
    assert schedule.delay_s(4, rand=0.0) == 0 and schedule.delay_s(4, rand=0.25) == 20
    assert all(0 <= schedule.delay_s(20) <= 900 for _ in range(200))


def test_a_longer_retry_after_wins_and_a_shorter_one_does_not_shorten_the_backoff():
    schedule = RetrySchedule(jitter="none")
    assert schedule.delay_s(1, retry_after_s=120) == 120
    assert schedule.delay_s(8, retry_after_s=120) == 900
    due = schedule.next_attempt_at(failures=1, first_attempt_at=T0, now=T0, retry_after_s=3600)
    assert due == T0 + dt.timedelta(hours=1)


def test_the_next_attempt_is_due_after_the_backoff_and_never_after_the_window():
    schedule = RetrySchedule(jitter="none", window_s=3600)
    now = T0 + dt.timedelta(minutes=10)
    assert schedule.next_attempt_at(failures=3, first_attempt_at=T0, now=now) == now + dt.timedelta(seconds=40)
    late = T0 + dt.timedelta(minutes=55)  # 900 s would pass the window: the last try is at its end
    assert schedule.next_attempt_at(failures=9, first_attempt_at=T0, now=late) == T0 + dt.timedelta(hours=1)
    late_retry_after = schedule.next_attempt_at(failures=2, first_attempt_at=T0, now=late, retry_after_s=86400)
    assert late_retry_after == T0 + dt.timedelta(hours=1)


def test_a_failure_at_or_after_the_window_end_is_a_dead_letter_whatever_the_count():
    schedule = RetrySchedule()  # 24 h
    assert schedule.next_attempt_at(failures=1, first_attempt_at=T0, now=T0 + dt.timedelta(hours=24)) is None
    assert schedule.next_attempt_at(failures=500, first_attempt_at=T0, now=T0 + dt.timedelta(hours=23)) is not None


def test_each_destination_has_its_own_schedule_and_old_in_process_retry_keys_are_ignored():
    fhir = FhirDestination(base_url="https://ehr.example/fhir", retry={"base_s": 30, "window_s": 7200})
    assert fhir.retry.base_s == 30 and fhir.retry.window_s == 7200 and fhir.retry.cap_s == 900
    with pytest.warns(DeprecationWarning, match="outbox schedules retries"):
        ris = MllpDestination(host="ris", port=2575, attempts=3, backoff_s=1.0)
    assert ris.retry == RetrySchedule()
    with pytest.raises(ValueError):
        RetrySchedule(jitter="some")
