"""The engine: config -> plan (plan.py, configure.py) -> products (executor.py runs the stages
of stages/ through the Stage protocol of stage.py and is the only code that talks to the
store) -> a run directory (rundir.py). It names no technique and no target."""
