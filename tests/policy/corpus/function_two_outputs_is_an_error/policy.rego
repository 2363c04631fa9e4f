package corpus.functions

# Both bodies hold for 5 with different outputs: an evaluation error.
size(x) := "big" if x > 1

size(x) := "small" if x < 10

result := size(input.x)
