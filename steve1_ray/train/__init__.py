"""Training: STEVE-1 behaviour cloning on Ray Train, the CVAE prior, and a world's video–text embedder.

config.py      TrainConfig (+ presets in configs/train/)      schedule.py   lr_at(frames)
relabel.py     packed hindsight relabeling                     optim.py      AdamW groups, freezing, act. ckpt
data.py        T-frame sequences from shards, worker order     checkpoint.py model/ + training_state/ layout
loop.py        train_loop_per_worker (what each worker runs)   run.py        build_trainer / run_training / main
step.py        one optimizer step (truncated BPTT, accum)      validate.py   val loss, best weights, patience
report.py      TensorBoard / metrics.jsonl / console lines
prior.py       prior training (main)                           synthetic.py  tiny learnable shard dataset
embedder.py    MineCLIP-architecture embedder training (main)  whiten.py     a whitened goal space for it (main)
"""
