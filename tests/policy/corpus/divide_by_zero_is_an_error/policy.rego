package corpus.errors

# OPA with strict built-in errors, as the engine evaluates: an error.
ratio := input.spent / input.limit
