package corpus.partial

# Two values for the same key: an evaluation error, never a silent pick.
limits[key.id] := key.daily_usd if {
	some key in input.keys
}
