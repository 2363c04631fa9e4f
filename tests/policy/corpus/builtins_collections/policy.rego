package corpus.builtins

result := {
	"object_get": [
		object.get(input.key, "data_class", "internal"),
		object.get(input.key, "scope", "none"),
		object.get(input, ["key", "limits", "daily"], 0),
	],
	"object_keys": object.keys({"b": 1, "a": 2}),
	"object_union": object.union({"a": {"b": 1}, "c": 1}, {"a": {"d": 2}, "c": 3}),
	"array_concat": array.concat([1], [2, 3]),
	"array_slice": [array.slice([1, 2, 3, 4], 1, 3), array.slice([1, 2, 3], 2, 10)],
	"intersection": intersection({{1, 2, 3}, {2, 3, 4}}),
	"union": union({{1}, {2, 3}}),
}
