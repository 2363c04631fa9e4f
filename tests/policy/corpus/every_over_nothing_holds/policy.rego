package corpus.universal

# every over an empty collection is true: nothing fails it.
allow if {
	every amount in input.amounts {
		amount > 0
	}
}
