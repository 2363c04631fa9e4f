package corpus.refused

allow if opa.runtime().env.ALLOW == "1"
