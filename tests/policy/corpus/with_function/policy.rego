package corpus.mocking

fixed_count(_) := 3

big if count(input.items) > 2

mocked if {
	big with count as fixed_count
}
