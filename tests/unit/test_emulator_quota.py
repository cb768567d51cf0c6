import pytest

from orchestray.emulator._quota import Quotas


def admitted(quotas: Quotas, times: list[float], tokens: int = 1) -> list[float]:
    return [t for t in times if quotas.admit("m", tokens, t) is None]


def test_sliding_allows_the_limit_in_any_one_second():
    quotas = Quotas(rpm=600, tpm=None, mode="sliding")  # 10 in any second
    assert len(admitted(quotas, [0.0] * 9 + [0.5, 0.6])) == 10
    refused = quotas.admit("m", 1, 0.9)
    assert refused.kind == "requests" and refused.retry_after_s == pytest.approx(0.1)
    assert len(admitted(quotas, [1.0] * 10)) == 9  # the nine of 0.0 have left; 0.5 is still in
    assert quotas.admit("m", 1, 1.4) is not None
    state = quotas.states("m", 1.0)[0]
    assert (state.limit, state.remaining) == (600, 0)
    assert state.reset_s == pytest.approx(1.0)  # whole again once 1.0's call leaves


def test_fixed_resets_on_the_calendar_second():
    quotas = Quotas(rpm=600, tpm=None, mode="fixed")
    assert len(admitted(quotas, [0.9] * 12)) == 10
    assert quotas.admit("m", 1, 0.95).retry_after_s == pytest.approx(0.05)
    assert len(admitted(quotas, [1.0] * 12)) == 10  # a fixed window lets 20 through in 0.1 s


def test_bucket_refills_continuously():
    quotas = Quotas(rpm=600, tpm=None, mode="bucket")
    assert len(admitted(quotas, [0.0] * 12)) == 10
    assert quotas.admit("m", 1, 0.05) is not None
    assert quotas.admit("m", 1, 0.1) is None  # one more every 0.1 s


@pytest.mark.parametrize("mode", ["sliding", "fixed", "bucket"])
def test_tokens_refunded_and_an_oversized_request_into_an_empty_window(mode):
    quotas = Quotas(rpm=None, tpm=6000, mode=mode)  # 100 tokens a second
    assert quotas.admit("m", 80, 0.0) is None
    assert quotas.admit("m", 80, 0.0) is not None
    quotas.refund_tokens("m", 60, admitted_at=0.0, now=0.0)  # the answer used 20 of its 80
    assert quotas.admit("m", 80, 0.0) is None
    later = Quotas(rpm=None, tpm=6000, mode=mode)
    assert later.admit("m", 500, 5.0) is None  # bigger than a second's allowance: goes alone
    assert later.admit("m", 1, 5.5) is not None


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="sliding, fixed, bucket"):
        Quotas(rpm=60, tpm=None, mode="leaky")
