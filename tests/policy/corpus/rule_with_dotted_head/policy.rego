package corpus.heads

limits.daily.usd := 5

limits.daily.tokens := 1000
