package corpus.universal

allow if {
	every name, limit in input.limits {
		startswith(name, "daily_")
		limit >= 0
	}
}
