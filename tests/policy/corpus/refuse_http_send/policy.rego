package corpus.refused

# http.send to an unreachable host makes this deny nothing, so allow
# would hold: a gate that fails open. Refused at load.
deny contains "unreachable" if {
	response := http.send({"method": "GET", "url": "http://127.0.0.1:1/health"})
	response.status_code != 200
}

allow if count(deny) == 0
