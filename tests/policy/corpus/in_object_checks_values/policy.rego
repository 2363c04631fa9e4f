package corpus.membership

# `in` looks at an object's values, not its keys; `k, v in` at both.
default pair := false

pair if "a", 1 in {"a": 1}

result := {
	"value": 1 in {"a": 1},
	"key": "a" in {"a": 1},
	"pair": pair,
	"set": "x" in {"x", "y"},
	"absent": "z" in input.names,
}
