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


def test_each_listed_key_has_a_quota_of_its_own():
    from orchestray.emulator._keys import KeyedQuotas

    quotas = KeyedQuotas(rpm=60, tpm=None, mode="sliding", key_rpm=(("a", 600), ("b", 120)))
    a, b, other = quotas.for_key("a"), quotas.for_key("b"), quotas.for_key("anyone")
    assert [a.admit("m", 1, 0.0) for _ in range(11)].count(None) == 10  # 10 a second
    assert [b.admit("m", 1, 0.0) for _ in range(3)].count(None) == 2  # 2 a second, apart from a's
    assert [other.admit("m", 1, 0.0) for _ in range(2)].count(None) == 1  # the default: 1 a second
    assert quotas.for_key("someone else") is other  # unlisted keys share the default quota


def test_the_key_is_read_from_either_header():
    from orchestray.emulator._keys import key_of

    assert key_of({"Authorization": "Bearer k1"}) == "k1"
    assert key_of({"x-api-key": "k2", "Authorization": "Bearer k1"}) == "k2"
    assert key_of({}) == ""


def test_key_limits_survive_the_command_line():
    import argparse

    from orchestray.emulator._options import EmulatorOptions, add_arguments, options_from_args, options_to_args

    options = EmulatorOptions(rpm=60, key_rpm=(("k=1", 600), ("k2", 120)), log_arrivals=True)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    again = options_from_args(parser.parse_args(options_to_args(options)))
    assert again.key_rpm == options.key_rpm and again.log_arrivals
    with pytest.raises(SystemExit):
        parser.parse_args(["--key-rpm", "no-limit"])
    with pytest.raises(ValueError, match="positive"):
        EmulatorOptions(key_rpm=(("k", 0),))


def test_every_option_survives_the_command_line():
    import argparse

    from orchestray.emulator._options import EmulatorOptions, add_arguments, options_from_args, options_to_args

    options = EmulatorOptions(
        port=8123, rpm=60, tpm=6000, limit_mode="sliding", latency_ms=3.5, latency_sigma=0.2, ms_per_output_token=0.5,
        accuracy=0.6, fault_rate=0.1, hang_rate=0.05, error_status=503, hang_s=9.0, seed=7,
        reject_sampling=("sim-large",), key_rpm=(("k", 60),), log_arrivals=True, batch_turnaround_s=0.5,
        batch_expire_rate=0.1, batch_error_rate=0.2, batch_fault_models=("sim-small", "sim-medium"),
        batch_max_requests=10, batch_max_bytes=4096, batch_queue_requests=20,
    )
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    again = options_from_args(parser.parse_args(options_to_args(options)))
    # Everything but the options kept off the command line on purpose (the key, the request log).
    assert again == options


async def test_an_emulator_limits_keys_apart_and_logs_each_arrival():
    import aiohttp

    from orchestray.emulator import Emulator, EmulatorOptions

    options = EmulatorOptions(rpm=60, limit_mode="fixed", key_rpm=(("fast", 600),), log_arrivals=True)
    body = {"model": "sim-small", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    async with Emulator(options) as emulator, aiohttp.ClientSession() as session:

        async def status(key: str) -> int:
            headers = {"Authorization": f"Bearer {key}"}
            async with session.post(f"{emulator.openai_base_url}/chat/completions", json=body, headers=headers) as response:
                return response.status

        fast = [await status("fast") for _ in range(3)]
        slow = [await status("slow") for _ in range(2)]
        log = emulator.arrivals()
    # Unless the calendar second turned in between, "fast" has 10 a second and "slow" 1.
    assert fast.count(200) == 3 and slow[0] == 200
    assert log["keys"] == ["fast", "slow"]
    rows = log["rows"]
    assert [(r[2], r[3]) for r in rows][:4] == [(0, 1), (0, 1), (0, 1), (1, 1)]
    assert all(log["started"] <= entered <= counted for entered, counted, _, _ in rows)
