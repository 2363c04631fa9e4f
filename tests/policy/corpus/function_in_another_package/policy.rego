package corpus.caller

result := data.corpus.lib.discount(input.price)
