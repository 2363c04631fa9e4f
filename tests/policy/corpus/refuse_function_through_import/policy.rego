package corpus.refused

import data.corpus.lib

allow if lib.discount(100) == 90
