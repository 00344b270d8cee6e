"""The LR schedule of a run of N iterations as one `-o` item (train.py / compress.py)."""


def schedule_override(iterations, decay_fractions=(0.8, 0.93), warmup_steps=50):
    """The `-o LearningRate.schedulers=...` item of a schedule over `iterations`: linear
    warm-up over `warmup_steps` (at most the run), then x0.1 at each of `decay_fractions`
    of the iterations."""
    milestones = sorted({max(1, int(iterations * fraction)) for fraction in decay_fractions})
    return (f"LearningRate.schedulers=[!PiecewiseDecay {{gamma: 0.1, milestones: {milestones}}}, "
            f"!LinearWarmup {{start_factor: 0., steps: {min(warmup_steps, iterations)}}}]")
