"""`python -m quantbench.workers`: a worker process serving requests until end of input."""

from quantbench.workers import main

main()
