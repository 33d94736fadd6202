"""Training: the loop (`loop.Trainer`), the objective of one step (`objective`) and how a run's parts
are built from its config (`setup`). Checkpoints, EMA, optimizers, the health guard and the
artifacts a run writes are in the modules beside this package."""
