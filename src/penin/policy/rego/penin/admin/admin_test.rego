# Tests of penin.admin: each action for each scope, unknown actions and
# scopes taken from the data.
package penin.admin_test

import data.penin.admin

actions := [
	"switchover", "restore", "rotate_keys", "change_policy", "create_key",
	"revoke_key", "invalidate_cache", "verify_ledger", "evaluate_policy",
]

decide(scope, action) := d if {
	d := admin.decision with input as {"key": {"id": "k1", "scope": scope}, "action": action}
}

test_an_admin_key_may_perform_every_action if {
	every action in actions {
		decide("admin", action) == {"allow": true, "action": action, "reasons": []}
	}
}

test_no_other_scope_may_perform_an_action if {
	every scope in ["read", "append", "route"] {
		every action in actions {
			d := decide(scope, action)
			d.allow == false
			d.reasons == [sprintf("scope %s may not perform %s", [scope, action])]
		}
	}
}

test_every_action_is_named_in_the_data if {
	every action in actions {
		data.penin.admin.actions[action] == ["admin"]
	}
	count(data.penin.admin.actions) == count(actions)
}

test_an_unknown_action_is_refused_even_to_an_admin if {
	decide("admin", "drop_ledger") == {
		"allow": false,
		"action": "drop_ledger",
		"reasons": ["unknown action drop_ledger"],
	}
}

test_an_action_that_is_not_a_string_is_refused if {
	d := decide("admin", ["switchover"])
	d.allow == false
}

test_a_request_without_an_action_is_refused if {
	d := admin.decision with input as {"key": {"id": "k1", "scope": "admin"}}
	d == {"allow": false, "action": null, "reasons": ["unknown action null"]}
}

test_a_key_without_a_scope_is_refused if {
	d := admin.decision with input as {"key": {"id": "k1"}, "action": "restore"}
	d == {"allow": false, "action": "restore", "reasons": ["scope null may not perform restore"]}
	e := admin.decision with input as {"action": "restore"}
	e.allow == false
}

test_the_scopes_come_from_the_data if {
	table := {"verify_ledger": ["admin", "read"]}
	read := decide("read", "verify_ledger") with data.penin.admin.actions as table
	read.allow == true
	gone := decide("admin", "switchover") with data.penin.admin.actions as table
	gone.reasons == ["unknown action switchover"]
}

test_an_action_no_scope_may_perform_is_refused_to_all if {
	d := decide("admin", "restore") with data.penin.admin.actions as {"restore": []}
	d.allow == false
	d.reasons == ["scope admin may not perform restore"]
}
