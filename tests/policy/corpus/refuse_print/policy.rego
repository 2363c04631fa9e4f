package corpus.refused

allow if {
	print("checking", input.user)
	input.user == "alice"
}
