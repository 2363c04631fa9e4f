package corpus.refused

# regorus would overflow its stack on this and kill the process.
depth(x) := depth(x) + 1

allow if depth(1) > 0
