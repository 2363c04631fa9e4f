package corpus.builtins

result := {
	"count": [count([1, 2, 3]), count("héllo"), count({"a": 1}), count({1, 2})],
	"sum": sum([1, 2.5, 3]),
	"product": product([2, 3, 4]),
	"max": max([3, 9, 1]),
	"min": min({"b", "a"}),
	"sort": sort([3, "a", null, true, [1], 1]),
}
