package corpus.chain

tier := "gold" if {
	input.spend > 1000
} else := "silver" if {
	input.spend > 100
} else := "bronze"

tiers := [gold, silver, bronze] if {
	gold := tier with input.spend as 5000
	silver := tier with input.spend as 500
	bronze := tier with input.spend as 5
}
