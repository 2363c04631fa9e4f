package corpus.refused

# A decision must follow from the policy set and the input alone: pass
# the time in the input instead.
allow if time.now_ns() < input.expires_ns
