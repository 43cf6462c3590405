"""Programmatic evaluation: does the policy do what it is asked? Prompts (and other phrasings of them) x guidance
scales, plus the unconditioned baseline and a foundation policy, played on the same worlds on Ray, scored per
episode and written up as a report folder that opens with a sentence per prompt.

    steve1 evaluate --config configs/eval/debug.yaml episodes=4 out_dir=runs/eval_debug

Modules (importing this package loads none of them):
    run      the job: `EvalConfig`, planning and seeds, goal embedding, the `EvalWorker` rollouts,
             `run_evaluation`, `rerender_report`, `main` (`steve1 evaluate`, jobs/evaluate.py)
    targets  which crafter achievements a prompt asks for (`PROMPT_ACHIEVEMENTS`, `targets_for`)
    metrics  one episode's metrics from its per-step `info` (`MetricTracker`) and the CIs over episodes
    report   the report folder: report.md with CIs, plots, summary.json, episodes.json (`write_report`)
See docs/evaluation.md.
"""
