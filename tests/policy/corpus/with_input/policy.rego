package corpus.mocking

allow if input.role == "admin"

default as_given := false

as_given if allow

result := {"as_admin": as_admin, "with_role": with_role, "as_given": as_given} if {
	as_admin := allow with input as {"role": "admin"}
	with_role := allow with input.role as "admin"
}
