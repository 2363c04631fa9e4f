package corpus.mocking

allow if data.corpus.roles[input.user] == "admin"

mocked if {
	allow with data.corpus.roles as {"alice": "admin"}
}
