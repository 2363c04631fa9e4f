package corpus.negation

blocked if input.ip in data.corpus.blocklist

allow if not blocked
