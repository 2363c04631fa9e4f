package corpus.comprehensions

providers := {d.provider | some d in input.deployments}
