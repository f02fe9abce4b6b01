"""One silent job per command (run, quantize, analyze, bench, export, sweep): each returns
results and prints nothing; the CLI (cli/) presents them."""
