# Which key scopes may perform each administrative action of a node. The node
# reads data.penin.admin.decision before it acts.
#
# data.json beside this file maps every action to the scopes allowed to
# perform it; an action it does not name is refused to every scope.
package penin.admin

# Null stands in for a missing field so that the reasons can still name it.
action := input.action if {
	input.action != null
} else := null

scope := input.key.scope if {
	input.key.scope != null
} else := null

known if is_array(data.penin.admin.actions[action])

default allowed := false

allowed if scope in data.penin.admin.actions[action]

reasons contains msg if {
	not known
	msg := sprintf("unknown action %v", [action])
}

reasons contains msg if {
	known
	not allowed
	msg := sprintf("scope %v may not perform %v", [scope, action])
}

decision := {"allow": allowed, "action": action, "reasons": sort(reasons)}
