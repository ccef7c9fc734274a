"""The budget checker's rules for figures the load generator limited (perf/report.py)."""

from perf.report import check_budgets

BUDGET = [{"metric": "sm_sessions.msgs_per_s_ratio_vs_plain", "min": 0.9, "name": "SM ratio"}]


def rec(**fields):
    r = {"type": "scenario", "scenario": "sm_sessions", "server": "mbxmpp", "status": "partial",
         "reason": "generator", "metrics": {}, "withheld": {}, "upper_bounds": {}}
    r.update(fields)
    return r


def test_ratio_of_two_generator_bound_figures_is_not_checked():
    missed, notes = check_budgets([rec(unbounded={"msgs_per_s_ratio_vs_plain": 0.7})], BUDGET)
    assert missed == [] and "not checked" in notes[0]


def test_upper_bound_below_min_is_missed_and_absent_ratio_is_missed():
    missed, _ = check_budgets([rec(upper_bounds={"msgs_per_s_ratio_vs_plain": 0.8})], BUDGET)
    assert missed and "at most 0.8" in missed[0]
    missed, _ = check_budgets([rec()], BUDGET)
    assert missed and "not measured" in missed[0]


def test_measured_ratio_checked():
    missed, _ = check_budgets([rec(status="ok", metrics={"msgs_per_s_ratio_vs_plain": 0.95})],
                              BUDGET)
    assert missed == []
