package corpus.partial

# A partial set with no member is the empty set, not undefined.
deny contains msg if {
	input.blocked
	msg := "blocked"
}
