package corpus.comprehensions

doubled := {name: twice |
	some name, limit in input.limits
	limit > 1
	twice := limit * 2
}
