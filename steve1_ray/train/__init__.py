"""Training: STEVE-1 behaviour cloning on Ray Train, and the CVAE prior.

config.py      TrainConfig (+ presets in configs/train/)      schedule.py   lr_at(frames)
relabel.py     packed hindsight relabeling                     optim.py      AdamW groups, freezing, act. ckpt
data.py        T-frame sequences from shards, worker order     checkpoint.py model/ + training_state/ layout
loop.py        train_loop_per_worker (what each worker runs)   run.py        build_trainer / run_training / main
prior.py       prior training (main)                           synthetic.py  tiny learnable shard dataset
"""
