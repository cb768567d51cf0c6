import pytest

from orchestray.policies.circuit import CircuitBreaker


def test_clustered_timeouts_among_concurrent_calls_do_not_open_it():
    """A provider answering nine calls in ten: the hung tenth of a wave of concurrent calls all
    time out in the same instant, failures "in a row" by arrival, yet the rate is 10%."""
    breaker = CircuitBreaker(failure_rate=0.5, min_calls=20, window_s=30.0)
    now = 0.0
    for wave in range(20):
        admitted = now
        for _ in range(90):  # the wave's answers come back over the next second
            breaker.record_success(now + 0.5, admitted)
        for _ in range(10):  # then its hung calls, together, at the timeout
            assert not breaker.record_failure(now + 5.0, admitted)
        now += 1.0
    assert breaker.state == "closed" and breaker.retry_after(now) == 0
    failures, calls = breaker.counts(now + 5.0)
    assert calls >= 20 and failures / calls == pytest.approx(0.1)


def test_a_burst_of_failures_below_the_minimum_number_of_calls_does_not_open_it():
    breaker = CircuitBreaker(failure_rate=0.5, min_calls=20)
    for _ in range(19):
        breaker.record_failure(1.0, 0.0)
    assert breaker.state == "closed"


def test_a_provider_really_down_opens_it_and_a_probe_closes_it():
    breaker = CircuitBreaker(failure_rate=0.5, min_calls=20, window_s=30.0, cooldown_s=10.0)
    for i in range(100):
        breaker.record_success(i * 0.1, i * 0.1)
    # Calls admitted at 10.0 fail one after another as they time out.
    opened = [breaker.record_failure(10.0 + i * 0.1, 10.0) for i in range(200)]
    assert breaker.state == "open"
    at = 10.0 + opened.index(True) * 0.1
    assert opened.count(True) == 1  # later failures of calls admitted before it opened are ignored
    assert breaker.opened_after[0] >= 0.5 * breaker.opened_after[1]
    assert breaker.retry_after(at + 4.0) == pytest.approx(6.0)
    assert breaker.retry_after(at + 10.0) == 0  # one probe may go
    assert breaker.state == "half-open"
    assert breaker.retry_after(at + 10.5) == pytest.approx(9.5)  # the others wait for its verdict
    assert not breaker.record_success(at + 10.6, at - 1.0)  # admitted before it opened: no verdict
    assert breaker.record_success(at + 11.0, at + 10.0)
    assert breaker.state == "closed" and breaker.retry_after(at + 11.0) == 0
    assert breaker.counts(at + 11.0) == (0, 0)


def test_failures_leave_the_window_as_it_slides():
    breaker = CircuitBreaker(failure_rate=0.5, min_calls=10, window_s=10.0)
    for i in range(9):
        breaker.record_failure(float(i) / 10, 0.0)
    assert breaker.counts(5.0) == (9, 9)
    assert breaker.counts(12.0) == (0, 0)
    assert not breaker.record_failure(12.0, 12.0)  # one failure in an empty window: below the minimum
    assert breaker.state == "closed"


def test_a_failed_probe_reopens_for_another_cooldown():
    breaker = CircuitBreaker(failure_rate=1.0, min_calls=1, cooldown_s=5.0)
    assert breaker.record_failure(0.0, 0.0)
    assert breaker.retry_after(5.0) == 0
    assert breaker.record_failure(5.0, 5.0)
    assert breaker.state == "open" and breaker.retry_after(6.0) == pytest.approx(4.0)


def test_a_probe_that_never_reports_frees_the_way_for_another():
    breaker = CircuitBreaker(failure_rate=1.0, min_calls=1, cooldown_s=5.0)
    breaker.record_failure(0.0, 0.0)
    assert breaker.retry_after(5.0) == 0  # the probe's caller is then cancelled
    assert breaker.retry_after(9.0) > 0
    assert breaker.retry_after(10.0) == 0


def test_nonsense_settings_are_refused():
    with pytest.raises(ValueError):
        CircuitBreaker(failure_rate=0)
    with pytest.raises(ValueError):
        CircuitBreaker(min_calls=0)
