package corpus.builtins

result := {
	"abs": [abs(-3.5), abs(2)],
	"round": [round(2.4), round(-2.6), round(7)],
	"ceil": [ceil(1.2), ceil(-1.2)],
	"floor": [floor(1.8), floor(-1.2)],
	"numbers_range": [numbers.range(1, 4), numbers.range(3, 1)],
}
