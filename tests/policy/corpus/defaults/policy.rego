package corpus.defaults

default allow := false

allow if input.role == "admin"

default limit := 10

limit := input.limit if is_number(input.limit)

result := {"allow": allow, "limit": limit}
