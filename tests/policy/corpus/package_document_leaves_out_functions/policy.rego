package corpus.document

double(x) := x * 2

a := double(2)

b contains "x"
