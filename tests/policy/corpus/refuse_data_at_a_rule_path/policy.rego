package corpus.refused

allow if input.role == "admin"
