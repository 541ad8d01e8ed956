"""Sweeps: an experiment's grid run against the results store, resumably.

    expand.py     the experiment as `RunSpec`s, teachers first, each keyed by its canonical config
    driver.py     skip what the store holds, run the rest, record each result (`run_sweep`)
    schedule.py   the one scheduler: claim what can start, start it through a launcher, hand back each result
    executors.py  where a run executes (the launchers): in this process, in child processes, or as Ray tasks
    backends.py   the `Backends` seam: what a run of each kind calls (train, bench); tests inject fakes
    search.py     Optuna hyper-parameter search, each trial a small sweep

Three words, three things: a *backend* is one of the seam's callables, an *executor* decides where a run goes, and
the inference *runtime* (`kdlora.bench.forms`) is what a bench row's model runs in.
"""
