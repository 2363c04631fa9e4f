package corpus.numbers

result := {
	"division": 7 / 2,
	"whole_division": 6 / 3,
	"modulo": 10 % 3,
	"negative_modulo": -7 % 3,
	"int_equals_float": 1 == 1.0,
	"mixed_types_order": [null < false, false < 0, 0 < "", "" < [], [] < {}],
	"string_order": "Z" < "a",
	"sets": [{1, 2} | {3}, {1, 2} & {2, 3}, {1, 2} - {2}],
}
