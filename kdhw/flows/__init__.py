"""Commands that run many stages: kdhw run, select, sweep, pareto, and the task grid under them."""
