package corpus.refused

allow if to_number(input.limit) > 5
