package corpus.partial

deny contains msg if {
	input.request.model == "forbidden"
	msg := "model not allowed"
}

deny contains msg if {
	some header in input.request.headers
	startswith(header, "x-debug")
	msg := concat(": ", ["debug header", header])
}

deny contains "never" if false
