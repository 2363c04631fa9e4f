package corpus.imports

import data.corpus.catalog

result := catalog.models[input.model]
