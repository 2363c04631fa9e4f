package corpus.refused

limits.daily := 5

allow if limits.daily > input.spent
