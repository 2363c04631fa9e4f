package corpus.refused

allow if lib.is_admin(input.user)
