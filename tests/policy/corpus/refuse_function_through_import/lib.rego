package corpus.lib

discount(price) := price * 0.9
