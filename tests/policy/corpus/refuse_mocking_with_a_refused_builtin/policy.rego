package corpus.refused

big if count(input.items) > 2

allow if {
	big with count as http.send
}
