package corpus.partial

limits[name] := usd if {
	some key in input.keys
	name := key.id
	usd := key.daily_usd
}

limits["default"] := 1
