"""Sampling: noise schedules (`schedules`, and `boss` for few-step ones found per model), ODE solvers
(`solvers`), and the Sampler that integrates a model along a schedule with a solver (`sampler`)."""
