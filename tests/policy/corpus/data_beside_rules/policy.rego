package corpus.thresholds

pass if input.score >= data.corpus.thresholds.minimum
