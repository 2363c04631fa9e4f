# Which deployments may receive a request, and whether its key may use the
# logical model it asked for. Consulted by the router on every request; the
# node reads data.penin.router.decision.
#
# data.json beside this file ranks the data classes (class_rank) and names the
# class of a key created without one (default_class).
package penin.router

# A key created without a data class is held to the default class: data with
# no label is treated as internal, never as public.
key_class := input.key.data_class if {
	input.key.data_class != null
} else := data.penin.router.default_class

# A request that declares no class is at its key's class.
request_class := input.request.data_class if {
	input.request.data_class != null
} else := key_class

# The request's class is the higher of the two: a client may raise the class
# of what it sends (this request carries PII) but may never lower the class
# its key is held to. Null when either class is unknown.
effective_class := request_class if {
	ranks := data.penin.router.class_rank
	ranks[request_class] > ranks[key_class]
} else := key_class if {
	ranks := data.penin.router.class_rank
	is_number(ranks[request_class])
	is_number(ranks[key_class])
} else := null

# A key's list of logical models is an allowlist; null means every model, and
# a key without the field may use none.
default model_allowed := false

model_allowed if input.key.models == null

model_allowed if input.request.model in input.key.models

# A deployment receives a class only when it names that class: clearance is
# never implied by a higher one, so a "pii" deployment does not take "public"
# unless it says so. Input order is kept: it is the router's order.
deployments := [d.name |
	some d in input.deployments
	effective_class != null
	effective_class in d.data_classes
]

# At the soft budget limit the router sends the cheapest allowed deployment.
default downgrade := false

downgrade if input.budget.state == "soft"

# Allow is decided from the checks themselves, never from the reasons, so a
# reason that cannot be formatted cannot turn a refusal into an admission.
default allowed := false

allowed if {
	model_allowed
	count(deployments) > 0
}

decision := {
	"allow": allowed,
	"data_class": effective_class,
	"deployments": deployments,
	"downgrade": downgrade,
	"reasons": explanation,
}

# Reasons are worked out only for a refusal: an admitted request, the common
# case on every routed call, does not pay for them.
explanation := [] if allowed else := sort(reasons)

reasons contains msg if {
	not model_allowed
	msg := sprintf("the key may not use model %v", [requested_model])
}

reasons contains msg if {
	some class in {key_class, request_class}
	not is_number(data.penin.router.class_rank[class])
	msg := sprintf("unknown data class %v", [class])
}

reasons contains msg if {
	effective_class != null
	count(deployments) == 0
	msg := sprintf("no deployment may receive data class %v", [effective_class])
}

requested_model := input.request.model if {
	input.request.model != null
} else := null
