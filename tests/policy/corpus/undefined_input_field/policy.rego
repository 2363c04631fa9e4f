package corpus.undefined

allow if input.user.role == "admin"
