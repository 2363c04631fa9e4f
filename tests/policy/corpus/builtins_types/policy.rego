package corpus.builtins

values := [1, "s", true, null, [1], {"a": 1}, {1}]

result := {
	"is_number": [is_number(v) | some v in values],
	"is_string": [is_string(v) | some v in values],
	"is_boolean": [is_boolean(v) | some v in values],
	"is_null": [is_null(v) | some v in values],
	"is_array": [is_array(v) | some v in values],
	"is_object": [is_object(v) | some v in values],
	"is_set": [is_set(v) | some v in values],
	"type_name": [type_name(v) | some v in values],
}
