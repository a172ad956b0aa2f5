"""CSRF pairs and the time trap of the signup form."""

from __future__ import annotations

import time

from services.subscription.form_guard import CsrfGuard, TimeTrap


def test_csrf_pair_verifies_only_with_the_same_key_and_cookie() -> None:
    guard = CsrfGuard("k" * 40)
    pair = guard.pair_for(None)
    assert pair.is_new
    assert guard.check(cookie=pair.cookie, field=pair.field)
    flipped = pair.field[:-1] + ("1" if pair.field[-1] == "0" else "0")
    assert not guard.check(cookie=pair.cookie, field=flipped)
    assert not guard.check(cookie=guard.pair_for(None).cookie, field=pair.field)
    assert not guard.check(cookie=None, field=pair.field)
    assert not guard.check(cookie=pair.cookie, field="")
    assert not CsrfGuard("other" * 10).check(cookie=pair.cookie, field=pair.field)


def test_an_existing_cookie_is_kept_and_a_malformed_one_replaced() -> None:
    guard = CsrfGuard("k" * 40)
    first = guard.pair_for(None)
    again = guard.pair_for(first.cookie)
    assert not again.is_new
    assert again.field == first.field
    assert guard.pair_for("short").is_new
    assert guard.pair_for("ü" * 40).is_new


def test_time_trap_measures_the_age_of_a_signed_stamp() -> None:
    trap = TimeTrap("k" * 40)
    stamp = trap.stamp()
    age = trap.age_s(stamp, max_age_s=3600, now=time.time() + 5)
    assert age is not None
    assert 4 <= age <= 7


def test_time_trap_refuses_tampered_or_missing_stamps_and_flags_stale_ones() -> None:
    trap = TimeTrap("k" * 40)
    stamp = trap.stamp()
    assert trap.age_s(None, max_age_s=3600) is None
    assert trap.age_s("signup.AAAA.BBBB", max_age_s=3600) is None
    assert TimeTrap("x" * 40).age_s(stamp, max_age_s=3600) is None
    assert trap.age_s(stamp, max_age_s=-1) == float("inf")


def test_stamps_and_csrf_fields_are_the_same_as_before_the_cached_keys() -> None:
    """Forms rendered by a process of the previous release still pass (and the other way):
    the cached stamp key and the one-shot HMAC change no byte."""
    import hashlib
    import hmac

    from itsdangerous import TimestampSigner

    secret = "form-guard-secret-" + "s" * 32
    plain = TimestampSigner(secret, salt="newsletter.form-stamp")
    trap = TimeTrap(secret)
    age = trap.age_s(plain.sign("signup").decode(), max_age_s=60)
    assert age is not None
    assert 0 <= age < 60
    assert plain.unsign(trap.stamp(), max_age=60) == b"signup"
    assert TimeTrap("another-secret-" + "x" * 32).age_s(trap.stamp(), max_age_s=60) is None
    key = hashlib.sha256(b"newsletter.csrf:" + secret.encode()).digest()
    cookie = "c" * 40
    expected = hmac.new(key, cookie.encode(), hashlib.sha256).hexdigest()
    assert CsrfGuard(secret).pair_for(cookie).field == expected
