package corpus.functions

# No body holds for 0, so the call is undefined and so is the rule.
inverse(x) := 1 / x if x != 0

result := inverse(input.x)
