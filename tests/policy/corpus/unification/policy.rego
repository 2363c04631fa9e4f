package corpus.unification

result := [x, y] if {
	[x, 2] = [1, y]
}
