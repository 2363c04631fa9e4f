package corpus.refused

deny[msg] {
	msg := "no"
}

allow if count(deny) == 0
