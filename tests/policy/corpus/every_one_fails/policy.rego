package corpus.universal

allow if {
	every amount in input.amounts {
		amount > 0
	}
}
