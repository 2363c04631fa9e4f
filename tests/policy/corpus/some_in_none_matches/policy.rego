package corpus.existential

allow if {
	some role in input.roles
	role == "admin"
}
