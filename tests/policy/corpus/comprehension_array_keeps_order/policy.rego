package corpus.comprehensions

names := [d.name |
	some d in input.deployments
	"pii" in d.data_classes
]
