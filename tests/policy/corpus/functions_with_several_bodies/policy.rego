package corpus.functions

# One function, three bodies: at most one holds for any argument.
sign(x) := -1 if x < 0

sign(x) := 0 if x == 0

sign(x) := 1 if x > 0

clamp(x, low, high) := min([max([x, low]), high])

result := [sign(-5), sign(0), sign(2.5), clamp(12, 0, 10), clamp(-3, 0, 10)]
