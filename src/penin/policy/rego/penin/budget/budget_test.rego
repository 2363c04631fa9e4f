# Tests of penin.budget: the soft and hard thresholds of each limit at their
# boundaries, null limits and malformed input. Amounts are chosen to be exact
# in binary floating point, so the boundaries are the boundaries.
package penin.budget_test

import data.penin.budget

# Daily limit 20 (soft at 19), per-key limit 10 (soft at 9.5).
limits := {"daily_usd": 20, "per_key_daily_usd": 10}

decide(day, key, request) := d if {
	d := budget.decision with input as {
		"spent_usd": {"day": day, "key": key},
		"limits": limits,
		"request_usd": request,
	}
}

ok := {"allow": true, "state": "ok", "limit": null}

soft(limit) := {"allow": true, "state": "soft", "limit": limit}

hard(limit) := {"allow": false, "state": "hard", "limit": limit}

# -- the daily limit -----------------------------------------------------------

test_well_within_the_budgets_is_ok if {
	decide(1, 1, 0.5) == ok
}

test_just_below_the_daily_soft_threshold_is_ok if {
	decide(18.5, 1, 0.25) == ok
}

test_reaching_the_daily_soft_threshold_is_soft if {
	decide(18.5, 1, 0.5) == soft("daily")
}

test_reaching_the_daily_limit_exactly_is_still_soft if {
	decide(19.5, 1, 0.5) == soft("daily")
}

test_passing_the_daily_limit_is_hard if {
	decide(19.5, 1, 0.75) == hard("daily")
}

test_the_request_itself_is_counted if {
	decide(20, 1, 0) == soft("daily")
	decide(20, 1, 0.25) == hard("daily")
}

# -- the per-key limit ---------------------------------------------------------

test_just_below_the_per_key_soft_threshold_is_ok if {
	decide(1, 9, 0.25) == ok
}

test_reaching_the_per_key_soft_threshold_is_soft if {
	decide(1, 9, 0.5) == soft("per_key")
}

test_reaching_the_per_key_limit_exactly_is_still_soft if {
	decide(1, 9.5, 0.5) == soft("per_key")
}

test_passing_the_per_key_limit_is_hard if {
	decide(1, 9.5, 0.75) == hard("per_key")
}

# -- both limits ---------------------------------------------------------------

test_a_hard_limit_outranks_a_soft_one if {
	decide(18.5, 9.75, 0.5) == hard("per_key")
}

test_when_both_are_soft_the_daily_limit_is_named if {
	decide(18.5, 9, 0.5) == soft("daily")
}

test_when_both_are_hard_the_daily_limit_is_named if {
	decide(19.75, 9.75, 0.5) == hard("daily")
}

# -- null and missing limits ---------------------------------------------------

test_null_limits_never_refuse if {
	d := budget.decision with input as {
		"spent_usd": {"day": 1000000, "key": 1000000},
		"limits": {"daily_usd": null, "per_key_daily_usd": null},
		"request_usd": 5,
	}
	d == ok
}

test_a_null_limit_leaves_the_other_in_force if {
	d := budget.decision with input as {
		"spent_usd": {"day": 1000000, "key": 9.5},
		"limits": {"daily_usd": null, "per_key_daily_usd": 10},
		"request_usd": 0.75,
	}
	d == hard("per_key")
}

test_a_missing_limit_is_refused_as_malformed if {
	d := budget.decision with input as {
		"spent_usd": {"day": 1, "key": 1},
		"limits": {"daily_usd": null},
		"request_usd": 0.5,
	}
	d == hard("per_key")
}

test_amounts_that_are_not_numbers_are_refused if {
	d := budget.decision with input as {
		"spent_usd": {"day": "1", "key": 1},
		"limits": limits,
		"request_usd": 0.5,
	}
	d == hard("daily")
	e := budget.decision with input as {
		"spent_usd": {"day": 1, "key": 1},
		"limits": limits,
		"request_usd": null,
	}
	e == hard("daily")
}

test_a_limit_that_is_not_a_number_is_refused if {
	d := budget.decision with input as {
		"spent_usd": {"day": 1, "key": 1},
		"limits": {"daily_usd": "20", "per_key_daily_usd": null},
		"request_usd": 0.5,
	}
	d == hard("daily")
}

test_an_empty_input_is_refused if {
	d := budget.decision with input as {}
	d.allow == false
}

# -- thresholds and limits as data ---------------------------------------------

test_the_thresholds_come_from_the_data if {
	d := decide(9.5, 1, 0.5) with data.penin.budget.thresholds as {"soft": 0.5, "hard": 1}
	d == soft("daily")
}

test_a_hard_threshold_above_one_lets_the_spend_pass_the_limit if {
	d := decide(20, 1, 1) with data.penin.budget.thresholds as {"soft": 0.95, "hard": 1.25}
	d == soft("daily")
}

test_without_thresholds_every_limit_is_refused if {
	d := decide(1, 1, 0.5) with data.penin.budget.thresholds as {}
	d == hard("daily")
}

test_without_its_table_of_limits_the_decision_is_undefined if {
	not budget.decision with data.penin.budget.limits as []
}
