package corpus.conflict

tier := "a" if input.a

tier := "b" if input.b
