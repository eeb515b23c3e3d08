"""How a roll-out judges a candidate by the parts people reviewed: exact one-sided tests, so a
handful of reviewed parts never stops a roll-out, a clear loss always does, and a candidate that
disagrees with the running model where that model errs (after a drift) is not stopped for the
disagreement. The rules on the figures a station reports; the whole path runs in
tests/test_fleet_rollout.py and benchmarks/loop.py."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest, fisher_exact

from edgeprune.errors import EdgepruneError
from edgeprune.fleet.config import RolloutSettings
from edgeprune.fleet.rollout import Driver, paired_p_greater, unpaired_p_greater


def shadow(agreement=0.99, *, caught_live_only=0, caught_shadow_only=0, right_live_only=0, right_shadow_only=0,
           defects=20):
    return {"agreement": agreement, "images": 200, "reviewed_defects": defects, "live_defect_recall": 0.9,
            "shadow_defect_recall": 0.9 - (caught_live_only - caught_shadow_only) / max(defects, 1),
            "defects_caught_by_live_only": caught_live_only, "defects_caught_by_shadow_only": caught_shadow_only,
            "reviewed_right_live_only": right_live_only, "reviewed_right_shadow_only": right_shadow_only}


def test_the_exact_tests_are_scipys():
    assert paired_p_greater(9, 1) == pytest.approx(binomtest(9, 10, 0.5, alternative="greater").pvalue)
    assert paired_p_greater(0, 0) == 1.0
    assert unpaired_p_greater(45, 50, 30, 50) == pytest.approx(
        fisher_exact([[45, 5], [30, 20]], alternative="greater").pvalue)
    assert unpaired_p_greater(1, 1, 0, 0) == 1.0


def test_a_few_reviewed_defects_do_not_stop_the_shadow_a_clear_loss_does():
    st = RolloutSettings(min_agreement=0.9)
    # 2 defects caught only by the running model, none only by the candidate: p = 0.25, noise.
    assert Driver._shadow_breaches(shadow(caught_live_only=2), st) == []
    # 8 to 0: p = 0.004, a real loss of recall.
    failed = Driver._shadow_breaches(shadow(caught_live_only=8), st)
    assert len(failed) == 1 and "8 caught only by the running model" in failed[0] and "p = 0.0039" in failed[0]
    # Fewer misses by the candidate is never a breach, however many.
    assert Driver._shadow_breaches(shadow(caught_shadow_only=8), st) == []


def test_low_agreement_passes_only_when_the_reviewed_parts_show_the_candidate_right():
    st = RolloutSettings(min_agreement=0.9)
    failed = Driver._shadow_breaches(shadow(0.7, right_live_only=3, right_shadow_only=5), st)
    assert len(failed) == 1 and failed[0].startswith("agreement 0.700 < 0.9") and "5 vs 3" in failed[0]
    # After a drift: it disagrees where the running model errs, 20 parts to 2.
    assert Driver._shadow_breaches(shadow(0.7, right_live_only=2, right_shadow_only=20), st) == []


def canary(before_rate, after_rate, *, before_right=0, before_n=0, after_right=0, after_n=0):
    return {"before": {"images": 200, "defect_rate": before_rate, "review_rate": 0.05, "latency_ms_p50": 2.0,
                       "reviewed": before_n, "reviewed_right": before_right},
            "after": {"images": 100, "defect_rate": after_rate, "review_rate": 0.05, "latency_ms_p50": 2.0,
                      "reviewed": after_n, "reviewed_right": after_right}}


def test_a_moved_defect_rate_is_a_breach_unless_reviews_show_the_candidate_right_more_often():
    st = RolloutSettings(max_defect_rate_change=0.1)
    assert Driver._canary_breaches(canary(0.30, 0.35), st) == []
    failed = Driver._canary_breaches(canary(0.60, 0.30), st)
    assert len(failed) == 1 and failed[0].startswith("defect rate 0.300 vs 0.600 before")
    # The lamp changed: the model before rejected good parts; people's labels show the candidate right.
    assert Driver._canary_breaches(canary(0.60, 0.30, before_right=30, before_n=50, after_right=45, after_n=50),
                                   st) == []
    # Within the tolerances, but right significantly less often on the reviewed parts: a breach.
    failed = Driver._canary_breaches(canary(0.30, 0.32, before_right=45, before_n=50, after_right=30, after_n=50), st)
    assert len(failed) == 1 and failed[0].startswith("right on 30 of 50 reviewed parts vs 45 of 50 before")


def test_settings_are_checked():
    with pytest.raises(EdgepruneError, match="rollout.significance"):
        RolloutSettings(significance=0.0)
    with pytest.raises(EdgepruneError, match="rollout.min_reviewed_defects"):
        RolloutSettings(min_reviewed_defects=-1)


def test_a_candidate_ahead_but_not_yet_significantly_keeps_shadowing_up_to_max_shadow_images():
    ahead = shadow(0.64, right_live_only=5, right_shadow_only=10)  # p = 0.15
    assert Driver._shadow_breaches(ahead, RolloutSettings(min_agreement=0.9)), "a breach on its own"
    st = RolloutSettings(min_agreement=0.9, shadow_images=100, max_shadow_images=400)
    assert Driver._shadow_undecided({**ahead, "images": 200}, st), "more reviewed parts may decide it"
    assert not Driver._shadow_undecided({**ahead, "images": 400}, st), "at max_shadow_images it stops"
    behind = shadow(0.64, right_live_only=10, right_shadow_only=5)
    assert not Driver._shadow_undecided({**behind, "images": 200}, st), "behind: stopped at once"
    worse_recall = shadow(0.64, right_live_only=5, right_shadow_only=10, caught_live_only=9)
    assert not Driver._shadow_undecided({**worse_recall, "images": 200}, st), "a recall loss is never waited on"
    assert not Driver._shadow_undecided({**ahead, "images": 200}, RolloutSettings(min_agreement=0.9))
    with pytest.raises(EdgepruneError, match="rollout.max_shadow_images"):
        RolloutSettings(shadow_images=100, max_shadow_images=50)


def test_a_moved_rate_with_the_candidate_ahead_is_watched_on_up_to_max_canary_images():
    st = RolloutSettings(max_defect_rate_change=0.1, canary_images=120, max_canary_images=480)
    ahead = canary(0.53, 0.38, before_right=30, before_n=50, after_right=24, after_n=31)  # p = 0.08
    assert Driver._canary_breaches(ahead, st), "a breach on its own"
    assert Driver._canary_undecided(ahead, st)
    at_max = {**ahead, "after": {**ahead["after"], "images": 480}}
    assert not Driver._canary_undecided(at_max, st), "at max_canary_images it is judged"
    behind = canary(0.53, 0.38, before_right=40, before_n=50, after_right=20, after_n=31)
    assert not Driver._canary_undecided(behind, st)
    slow = {**ahead, "after": {**ahead["after"], "latency_ms_p50": 50.0}}
    assert not Driver._canary_undecided(slow, st), "a latency breach is never waited on"
    assert not Driver._canary_undecided(ahead, RolloutSettings(max_defect_rate_change=0.1))
