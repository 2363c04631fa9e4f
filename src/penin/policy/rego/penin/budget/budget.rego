# Whether a request fits the day's budgets: the node-wide daily limit and the
# per-key daily limit, each with a soft and a hard threshold. The node reads
# data.penin.budget.decision.
#
# data.json beside this file holds the thresholds (fractions of a limit) and
# the limits, in the order they are reported when more than one is reached:
# for each, the field of input.spent_usd it counts and the field of
# input.limits that bounds it. (A rule may not share a name with that data:
# both would live at the same path of data.penin.budget.)
package penin.budget

# Only a null limit does not apply: an absent one means the input is
# malformed, and the limit is held to apply so that the request is refused.
applies(limit) if not input.limits[limit.bound] == null

# What the day would have spent on that limit once this request is counted.
projected(limit) := input.spent_usd[limit.spent] + input.request_usd if {
	is_number(input.spent_usd[limit.spent])
	is_number(input.request_usd)
}

# Hard: the request would take the spend past hard x limit, and is refused.
# A limit that applies but whose amounts are not numbers counts as past its
# hard threshold, so that malformed input is refused rather than waved through.
over_hard(limit) if {
	applies(limit)
	not within(limit, data.penin.budget.thresholds.hard)
}

# Soft: the spend reaches soft x limit; the request is still served, by the
# cheapest deployment.
at_soft(limit) if {
	applies(limit)
	not below(limit, data.penin.budget.thresholds.soft)
}

within(limit, fraction) if {
	bound := input.limits[limit.bound]
	is_number(bound)
	projected(limit) <= fraction * bound
}

below(limit, fraction) if {
	bound := input.limits[limit.bound]
	is_number(bound)
	projected(limit) < fraction * bound
}

hard_limits := [limit.name | some limit in data.penin.budget.limits; over_hard(limit)]

soft_limits := [limit.name | some limit in data.penin.budget.limits; at_soft(limit)]

decision := {"allow": false, "state": "hard", "limit": hard_limits[0]} if {
	count(hard_limits) > 0
} else := {"allow": true, "state": "soft", "limit": soft_limits[0]} if {
	count(soft_limits) > 0
} else := {"allow": true, "state": "ok", "limit": null} if {
	# Without its table of limits the policy would check nothing and admit
	# everything; it leaves the decision undefined instead, which is a refusal.
	count(data.penin.budget.limits) > 0
}
