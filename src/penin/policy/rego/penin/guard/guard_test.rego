# Tests of penin.guard: every gate at, just inside and just outside its
# threshold, missing and malformed metrics, and the three verdicts.
package penin.guard_test

import data.penin.guard

# A challenger that passes every gate with room to spare.
passing := {
	"rho": 0.9,
	"ece": 0.005,
	"rho_bias": 1.01,
	"sr": 0.85,
	"g": 0.9,
	"delta_linf": 0.02,
	"cost_increase": 0.05,
	"kappa": 25,
}

judge(metrics) := v if {
	v := guard.verdict with input as {"metrics": metrics, "consent": true, "eco_ok": true}
}

# The passing metrics with one replaced.
replaced(key, name, value, _) := value if key == name

replaced(key, name, _, old) := old if key != name

metrics_with(name, value) := {key: v |
	some key, old in passing
	v := replaced(key, name, value, old)
}

metrics_without(name) := {key: v | some key, v in passing; key != name}

passes(name, value) if {
	v := judge(metrics_with(name, value))
	v.failed == []
}

# Non-compensatory: that gate fails, and no other gate fails with it.
fails(name, value) if {
	v := judge(metrics_with(name, value))
	v.failed == [name]
}

# -- verdicts ------------------------------------------------------------------

test_a_challenger_passing_every_gate_is_promoted if {
	judge(passing) == {"allow": true, "verdict": "promote", "failed": []}
}

test_failing_only_performance_gates_keeps_the_challenger_in_canary if {
	v := judge(metrics_with("sr", 0.5))
	v == {"allow": false, "verdict": "canary", "failed": ["sr"]}
	every name in ["sr", "g", "delta_linf"] {
		w := judge(metrics_with(name, 0))
		w.verdict == "canary"
	}
}

test_failing_every_performance_gate_is_still_canary if {
	metrics := {
		"rho": 0.9, "ece": 0.005, "rho_bias": 1.01, "sr": 0.1,
		"g": 0.1, "delta_linf": 0, "cost_increase": 0.05, "kappa": 25,
	}
	v := judge(metrics)
	v.verdict == "canary"
	v.failed == ["delta_linf", "g", "sr"]
}

test_any_other_failed_gate_rolls_the_challenger_back if {
	every name, value in {
		"rho": 1, "ece": 0.5, "rho_bias": 2, "cost_increase": 0.5, "kappa": 1,
	} {
		v := judge(metrics_with(name, value))
		v == {"allow": false, "verdict": "rollback", "failed": [name]}
	}
}

test_a_rollback_gate_outranks_canary_gates if {
	metrics := {
		"rho": 0.999, "ece": 0.005, "rho_bias": 1.01, "sr": 0.1,
		"g": 0.1, "delta_linf": 0.02, "cost_increase": 0.05, "kappa": 25,
	}
	v := judge(metrics)
	v.verdict == "rollback"
	v.failed == ["g", "rho", "sr"]
}

test_an_excellent_metric_does_not_make_up_for_a_failed_gate if {
	metrics := {
		"rho": 0.01, "ece": 0, "rho_bias": 1, "sr": 0.79,
		"g": 1, "delta_linf": 0.9, "cost_increase": -0.5, "kappa": 1000,
	}
	v := judge(metrics)
	v.verdict == "canary"
	v.failed == ["sr"]
}

# -- each gate at its threshold ------------------------------------------------

test_rho_must_stay_strictly_below_its_maximum if {
	passes("rho", 0.989)
	fails("rho", 0.99)
	fails("rho", 0.991)
}

test_ece_may_reach_its_maximum_but_not_pass_it if {
	passes("ece", 0.009)
	passes("ece", 0.01)
	fails("ece", 0.011)
}

test_rho_bias_may_reach_its_maximum_but_not_pass_it if {
	passes("rho_bias", 1.049)
	passes("rho_bias", 1.05)
	fails("rho_bias", 1.051)
}

test_sr_must_reach_its_minimum if {
	passes("sr", 0.81)
	passes("sr", 0.8)
	fails("sr", 0.799)
}

test_g_must_reach_its_minimum if {
	passes("g", 0.851)
	passes("g", 0.85)
	fails("g", 0.849)
}

test_delta_linf_must_reach_its_minimum if {
	passes("delta_linf", 0.011)
	passes("delta_linf", 0.01)
	fails("delta_linf", 0.009)
}

test_cost_increase_may_reach_its_maximum_but_not_pass_it if {
	passes("cost_increase", 0.099)
	passes("cost_increase", 0.1)
	fails("cost_increase", 0.101)
}

test_kappa_must_reach_its_minimum if {
	passes("kappa", 21)
	passes("kappa", 20)
	fails("kappa", 19.99)
}

# -- missing and malformed input -----------------------------------------------

test_a_missing_metric_fails_its_gate if {
	every name, _ in passing {
		v := judge(metrics_without(name))
		v.failed == [name]
	}
}

test_a_metric_that_is_not_a_number_fails_its_gate if {
	every value in [null, "0.9", true, [0.9], {"value": 0.9}] {
		fails("rho", value)
		fails("kappa", value)
	}
}

test_no_metrics_at_all_fail_every_metric_gate if {
	v := guard.verdict with input as {"consent": true, "eco_ok": true}
	v.verdict == "rollback"
	v.failed == ["cost_increase", "delta_linf", "ece", "g", "kappa", "rho", "rho_bias", "sr"]
}

test_consent_must_be_exactly_true if {
	every consent in [false, null, "true", 1] {
		v := guard.verdict with input as {"metrics": passing, "consent": consent, "eco_ok": true}
		v == {"allow": false, "verdict": "rollback", "failed": ["consent"]}
	}
	w := guard.verdict with input as {"metrics": passing, "eco_ok": true}
	w.failed == ["consent"]
}

test_the_eco_check_must_be_exactly_true if {
	every eco_ok in [false, null, "yes"] {
		v := guard.verdict with input as {"metrics": passing, "consent": true, "eco_ok": eco_ok}
		v == {"allow": false, "verdict": "rollback", "failed": ["eco"]}
	}
	w := guard.verdict with input as {"metrics": passing, "consent": true}
	w.failed == ["eco"]
}

test_an_empty_input_fails_every_gate if {
	v := guard.verdict with input as {}
	v.verdict == "rollback"
	count(v.failed) == 10
}

# -- thresholds and gate groups as data ----------------------------------------

test_the_thresholds_come_from_the_data if {
	v := judge(passing) with data.penin.guard.thresholds.kappa_min as 30
	v.failed == ["kappa"]
}

test_a_threshold_missing_from_the_data_fails_its_gate if {
	thresholds := {
		"rho_max": 0.99, "ece_max": 0.01, "rho_bias_max": 1.05, "sr_min": 0.8,
		"g_min": 0.85, "delta_linf_min": 0.01, "cost_increase_max": 0.1,
	}
	v := judge(passing) with data.penin.guard.thresholds as thresholds
	v.failed == ["kappa"]
}

test_the_canary_gates_come_from_the_data if {
	v := judge(metrics_with("kappa", 1)) with data.penin.guard.canary_gates as ["kappa"]
	v.verdict == "canary"
}

test_without_canary_gates_every_failure_rolls_back if {
	v := judge(metrics_with("sr", 0.5)) with data.penin.guard.canary_gates as []
	v.verdict == "rollback"
}
