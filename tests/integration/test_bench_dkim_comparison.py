"""``newsletter bench dispatch --compare-dkim`` interleaves unsigned and signed sends on one
sink and sums up the medians: checked once at a small N with real dispatchers, RabbitMQ and
PostgreSQL. Only the structure and the counts are checked, never a rate."""

from __future__ import annotations

from benchmarks import dispatch


async def test_the_dkim_comparison_interleaves_its_sends_and_counts_the_signing_process() -> None:
    figures = await dispatch.run_dkim_comparison(
        recipients=60, connections=2, dkim_algorithm="rsa", rounds=2
    )
    runs = figures["runs"]
    assert [run["signed"] for run in runs] == [False, True, False, True], "not interleaved"
    assert figures["order"] == "unsigned, signed, unsigned, signed"
    # One sink for all four sends: every mail of every send (and each probe) reached it.
    assert figures["sink_received"] == figures["sink_expected"] >= 4 * 60
    for run in runs:
        assert run["email_sent_log_lines"] >= 60, f"a send logged too few mails: {run}"
    # The RSA signatures are made by the signing process, and its CPU is the dispatcher's.
    for run in runs:
        if run["signed"]:
            assert run["signing_cpu_ms_per_msg"] > 0, f"no signing process CPU counted: {run}"
            assert run["send_cpu_ms_per_msg"] >= run["loop_cpu_ms_per_msg"]
        else:
            assert run["signing_cpu_ms_per_msg"] == 0, f"an unsigned send signed: {run}"
    unsigned = sorted(run["e2e_msgs_per_s"] for run in runs if not run["signed"])
    signed = sorted(run["e2e_msgs_per_s"] for run in runs if run["signed"])
    assert figures["unsigned_e2e_msgs_per_s"] == round(sum(unsigned) / 2, 1)
    assert figures["signed_e2e_msgs_per_s"] == round(sum(signed) / 2, 1)
    # The ratio of the medians before they are rounded for printing, itself rounded to 3 places.
    expected = (sum(signed) / 2) / (sum(unsigned) / 2)
    assert abs(figures["dkim_vs_unsigned"] - expected) <= 0.0005 + 1e-9
