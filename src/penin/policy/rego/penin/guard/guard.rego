# Σ-Guard: whether a challenger may replace the champion. Every gate is
# checked on its own and none can make up for another (non-compensatory):
# promote when all pass, canary when only performance gates fail, rollback
# otherwise. The evolution loop reads data.penin.guard.verdict.
#
# data.json beside this file holds the thresholds and the gates whose failure
# keeps the challenger in canary instead of rolling it back.
package penin.guard

# A metric passes its gate only when it is a number on the right side of the
# threshold: a metric that is missing, null or not a number fails it, and so
# does a threshold missing from the data.
below(name, bound) if {
	value := input.metrics[name]
	is_number(value)
	value < bound
}

at_most(name, bound) if {
	value := input.metrics[name]
	is_number(value)
	value <= bound
}

at_least(name, bound) if {
	value := input.metrics[name]
	is_number(value)
	value >= bound
}

bounds := data.penin.guard.thresholds

# Contractivity: the risk must strictly shrink (ρ < ρ_max).
failed contains "rho" if not below("rho", bounds.rho_max)

# Calibration: expected calibration error.
failed contains "ece" if not at_most("ece", bounds.ece_max)

# Bias ratio between groups.
failed contains "rho_bias" if not at_most("rho_bias", bounds.rho_bias_max)

# Success rate.
failed contains "sr" if not at_least("sr", bounds.sr_min)

# Global coherence.
failed contains "g" if not at_least("g", bounds.g_min)

# The gain must be worth a change (ΔL∞).
failed contains "delta_linf" if not at_least("delta_linf", bounds.delta_linf_min)

# Relative cost increase over the champion.
failed contains "cost_increase" if not at_most("cost_increase", bounds.cost_increase_max)

# Statistical evidence (κ).
failed contains "kappa" if not at_least("kappa", bounds.kappa_min)

# Consent and the ecological check must be exactly true: "yes", 1 or a
# missing field fail them.
failed contains "consent" if not input.consent == true

failed contains "eco" if not input.eco_ok == true

# Any failed gate that is not a canary gate rolls the challenger back: a gate
# added later, or a canary list missing from the data, errs towards rollback.
rollback_gates contains gate if {
	some gate in failed
	not gate in data.penin.guard.canary_gates
}

outcome := "promote" if {
	count(failed) == 0
} else := "rollback" if {
	count(rollback_gates) > 0
} else := "canary"

verdict := {
	"allow": outcome == "promote",
	"verdict": outcome,
	"failed": sort(failed),
}
