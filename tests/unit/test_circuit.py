from orchestray.policies.circuit import CircuitBreaker


def test_opens_after_the_threshold_and_probes_after_the_cooldown():
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10.0)
    for t in range(2):
        breaker.record_failure(float(t))
    assert breaker.state == "closed" and breaker.retry_after(2.0) == 0
    breaker.record_failure(2.0)
    assert breaker.state == "open"
    assert breaker.retry_after(5.0) == 7.0
    assert breaker.retry_after(12.0) == 0  # one probe may go
    assert breaker.state == "half-open"
    assert breaker.retry_after(12.0) > 0  # the others wait for its verdict
    breaker.record_success()
    assert breaker.state == "closed" and breaker.retry_after(12.0) == 0


def test_a_failed_probe_reopens_for_another_cooldown():
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5.0)
    breaker.record_failure(0.0)
    assert breaker.retry_after(5.0) == 0
    breaker.record_failure(5.0)
    assert breaker.state == "open" and breaker.retry_after(6.0) == 4.0


def test_a_success_resets_the_count():
    breaker = CircuitBreaker(failure_threshold=2)
    breaker.record_failure(0.0)
    breaker.record_success()
    breaker.record_failure(1.0)
    assert breaker.state == "closed"
