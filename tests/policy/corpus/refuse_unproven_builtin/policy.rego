package corpus.refused

allow if regex.match("^gpt-", input.model)
