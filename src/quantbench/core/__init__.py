"""The shared types every layer may use, and nothing else of ours: errors, atomic writes,
did-you-mean, the environment, specs (identity as data), the config schema, the results schema
and the vocabulary of the Stage protocol. Importing anything else of quantbench from here is
an import-linter error."""
