package corpus.refused

default allow := false

allow {
	input.role == "admin"
}
