package corpus.builtins

result := max(input.costs)
