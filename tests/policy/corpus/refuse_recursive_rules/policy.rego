package corpus.refused

allow if trusted

trusted if allow
