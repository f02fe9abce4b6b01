"""Measuring a .tflite file on LiteRT: accuracy in an evaluation worker (evaluate.py), latency
in fresh workers (latency.py, runtimes.py), what the interpreter did (explain.py), what other
processes took (busy.py), what the file holds (filestats.py). Results in, no store, no plan."""
