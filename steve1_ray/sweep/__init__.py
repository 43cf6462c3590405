"""Hyperparameter sweeps of the behaviour-cloning loop: a search space over TrainConfig, one Ray Train run per trial.

space.py   SweepConfig and its search space: read, checked against TrainConfig, applied to it (no Ray)
run.py     the Ray Tune wiring: trials, ASHA, resume, results.csv and best_train_config.yaml; `steve1 sweep` (main)

    steve1 sweep --config configs/sweep/debug.yaml train.data=/data/shards num_samples=4 max_concurrent_trials=2

See docs/sweeps.md.
"""
