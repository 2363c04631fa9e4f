# Tests of penin.router: data classes, model allowlists, eligible deployments
# and the downgrade at the soft budget limit.
package penin.router_test

import data.penin.router

public_dep := {"name": "cheap/mini", "provider": "cheap", "data_classes": ["public", "internal"]}

pii_dep := {"name": "vault/large", "provider": "vault", "data_classes": ["pii"]}

all_dep := {"name": "onprem/big", "provider": "onprem", "data_classes": ["public", "internal", "confidential", "pii"]}

request_input(key_class, request_class) := {
	"key": {"id": "k1", "scope": "route", "data_class": key_class, "models": null},
	"request": {"model": "fast", "data_class": request_class},
	"deployments": [public_dep, pii_dep, all_dep],
	"budget": {"state": "ok"},
}

decide(key_class, request_class) := d if {
	d := router.decision with input as request_input(key_class, request_class)
}

# The same input offered to other deployments.
with_deployments(base, deployments) := {
	"key": base.key,
	"request": base.request,
	"deployments": deployments,
	"budget": base.budget,
}

# -- data classes --------------------------------------------------------------

test_a_request_may_raise_the_class_of_its_key if {
	d := decide("internal", "pii")
	d.allow == true
	d.data_class == "pii"
	d.deployments == ["vault/large", "onprem/big"]
	d.reasons == []
}

test_a_request_may_not_lower_the_class_of_its_key if {
	d := decide("pii", "public")
	d.data_class == "pii"
	d.deployments == ["vault/large", "onprem/big"]
}

test_a_request_at_the_class_of_its_key_keeps_it if {
	d := decide("confidential", "confidential")
	d.data_class == "confidential"
	d.deployments == ["onprem/big"]
}

test_without_a_request_class_the_key_class_applies if {
	d := decide("internal", null)
	d.allow == true
	d.data_class == "internal"
	d.deployments == ["cheap/mini", "onprem/big"]
}

test_a_request_without_a_class_field_takes_the_key_class if {
	d := router.decision with input as {
		"key": {"id": "k1", "data_class": "public", "models": null},
		"request": {"model": "fast"},
		"deployments": [pii_dep, public_dep],
	}
	d.data_class == "public"
	d.deployments == ["cheap/mini"]
}

test_a_key_without_a_class_is_held_to_the_default_class if {
	without_class := decide(null, null)
	without_class.data_class == "internal"
	d := router.decision with input as {
		"key": {"id": "k1", "models": null},
		"request": {"model": "fast", "data_class": null},
		"deployments": [public_dep],
	}
	d.data_class == "internal"
	d.allow == true
}

test_the_default_class_comes_from_the_data if {
	d := decide(null, null) with data.penin.router.default_class as "confidential"
	d.data_class == "confidential"
	d.deployments == ["onprem/big"]
}

test_the_ranking_comes_from_the_data if {
	# Ranked the other way round, public is the most sensitive class.
	ranks := {"public": 3, "internal": 2, "confidential": 1, "pii": 0}
	d := decide("pii", "public") with data.penin.router.class_rank as ranks
	d.data_class == "public"
}

test_an_unknown_request_class_is_refused if {
	d := decide("internal", "secret")
	d.allow == false
	d.data_class == null
	d.deployments == []
	d.reasons == ["unknown data class secret"]
}

test_an_unknown_key_class_is_refused if {
	d := decide("top-secret", "public")
	d.allow == false
	d.data_class == null
	d.reasons == ["unknown data class top-secret"]
}

test_a_class_that_is_not_a_string_is_refused if {
	d := decide("internal", 3)
	d.allow == false
	d.data_class == null
}

test_classes_are_matched_exactly_not_by_rank if {
	# Cleared for pii only: a public request does not reach it.
	d := router.decision with input as with_deployments(request_input("public", null), [pii_dep])
	d.allow == false
	d.deployments == []
	d.reasons == ["no deployment may receive data class public"]
}

test_no_eligible_deployment_is_refused_with_the_class if {
	d := router.decision with input as with_deployments(request_input("pii", null), [public_dep])
	d.allow == false
	d.data_class == "pii"
	d.deployments == []
	d.reasons == ["no deployment may receive data class pii"]
}

test_a_deployment_without_classes_receives_nothing if {
	bare := {"name": "bare/mini", "provider": "bare"}
	d := router.decision with input as with_deployments(request_input("public", null), [bare])
	d.allow == false
	d.deployments == []
}

test_eligible_deployments_keep_the_router_order if {
	deployments := [all_dep, public_dep]
	d := router.decision with input as with_deployments(request_input("internal", null), deployments)
	d.deployments == ["onprem/big", "cheap/mini"]
}

# -- logical models ------------------------------------------------------------

keyed_input(models, model) := {
	"key": {"id": "k1", "scope": "route", "data_class": "public", "models": models},
	"request": {"model": model, "data_class": null},
	"deployments": [public_dep],
	"budget": {"state": "ok"},
}

test_a_key_with_null_models_may_use_any_model if {
	d := router.decision with input as keyed_input(null, "anything")
	d.allow == true
}

test_a_key_may_use_the_models_it_lists if {
	d := router.decision with input as keyed_input(["fast", "smart"], "smart")
	d.allow == true
	d.reasons == []
}

test_a_key_may_not_use_a_model_it_does_not_list if {
	d := router.decision with input as keyed_input(["fast"], "smart")
	d.allow == false
	d.deployments == ["cheap/mini"]
	d.reasons == ["the key may not use model smart"]
}

test_a_key_with_an_empty_model_list_may_use_none if {
	d := router.decision with input as keyed_input([], "fast")
	d.allow == false
}

test_a_key_without_a_models_field_is_refused if {
	d := router.decision with input as {
		"key": {"id": "k1", "data_class": "public"},
		"request": {"model": "fast", "data_class": null},
		"deployments": [public_dep],
	}
	d.allow == false
	d.reasons == ["the key may not use model fast"]
}

test_every_reason_is_given_at_once if {
	base := keyed_input(["fast"], "smart")
	d := router.decision with input as with_deployments(base, [pii_dep])
	d.allow == false
	d.reasons == ["no deployment may receive data class public", "the key may not use model smart"]
}

# -- budget --------------------------------------------------------------------

budget_input(budget) := {
	"key": {"id": "k1", "data_class": "public", "models": null},
	"request": {"model": "fast", "data_class": null},
	"deployments": [public_dep],
	"budget": budget,
}

test_at_the_soft_budget_limit_the_router_downgrades if {
	d := router.decision with input as budget_input({"state": "soft"})
	d.allow == true
	d.downgrade == true
}

test_within_budget_the_router_does_not_downgrade if {
	d := router.decision with input as budget_input({"state": "ok"})
	d.downgrade == false
}

test_without_a_budget_the_router_does_not_downgrade if {
	d := router.decision with input as {
		"key": {"id": "k1", "data_class": "public", "models": null},
		"request": {"model": "fast", "data_class": null},
		"deployments": [public_dep],
	}
	d.allow == true
	d.downgrade == false
}
